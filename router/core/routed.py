"""A decided request: the decision and what produced it (kept for the receipt and the ledger)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triage.policies.decide import Decision
from triage.probes.types import ProbeOutput


@dataclass(frozen=True)
class Routed:
    """A decision with what produced it."""

    decision: Decision
    probe_output: ProbeOutput
    messages: list[dict[str, Any]]
    decision_latency_s: float
    self_probe: bool = False
