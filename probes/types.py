"""What a probe says about a query. Shared by the probe runtime, policies, SDK, sidecar and replay.

Plain dataclasses: these live inside the process. Boundaries (HTTP, ledger) convert them to
pydantic models of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIERS: tuple[str, ...] = ("easy", "normal", "hard")


@dataclass(frozen=True)
class ProbeOutput:
    """Calibrated probabilities for one query.

    ``tier_probs`` maps each of :data:`TIERS` to a probability (they sum to 1).
    ``success`` maps each label the probe was trained on (a candidate model or strategy name)
    to the calibrated probability that it answers this query correctly.
    """

    tier_probs: dict[str, float]
    success: dict[str, float] = field(default_factory=dict)
    probe_version: str = ""
    extras: dict[str, float] = field(default_factory=dict)  # e.g. entropy, prompt length

    @property
    def tier(self) -> str:
        return max(TIERS, key=lambda t: self.tier_probs.get(t, 0.0))
