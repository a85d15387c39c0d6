"""A decided request: the decision and what produced it (kept for the receipt and the ledger)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    features: tuple[float, ...] | None = None  # the probe's feature row, when the policy stores features
    # The router bundle (policy + probe) that decided: executing and recording use it even when the
    # router reloads in between (triage.router.core.reload). None: the executing router's current one.
    bundle: Any = field(default=None, compare=False, repr=False)
