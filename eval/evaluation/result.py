"""Results of a replay evaluation and their JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

RouterKind = Literal["candidate", "baseline", "router"]

__all__ = ["EvaluationResult", "RouterResult", "jsonable"]


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, inf/NaN to ``None`` (JSON has neither),
    floats rounded to 12 decimals."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, 12) + 0.0  # drop float noise (1.8e-15 for an exact 0); +0.0 turns -0.0 into 0.0
    return value


@dataclass
class RouterResult:
    """One router's headline metrics (at its default operating point) and its full curve."""

    name: str
    spec: str
    kind: RouterKind
    learned: bool
    metrics: dict[str, Any]
    curve: list[dict[str, Any]]
    #: Bootstrap replicates of headline metrics (``aiq``: (n_boot,)), paired across the routers of one
    #: evaluation (the same resampled queries): for intervals of differences and ratios between
    #: routers. Not part of the JSON.
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return jsonable({"spec": self.spec, "kind": self.kind, "learned": self.learned,
                         **self.metrics, "curve": self.curve})


@dataclass
class EvaluationResult:
    """Everything ``triage replay evaluate`` reports for one dataset."""

    dataset: str
    n: int
    n_total: int
    n_dropped_incomplete: int
    cost_unit: str
    candidates: list[str]
    protocol: dict[str, Any]
    tep_baseline: str
    pair: dict[str, str] | None
    bootstrap: dict[str, Any]
    routers: dict[str, RouterResult]
    budgets: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return jsonable({
            "dataset": self.dataset,
            "n": self.n,
            "n_total": self.n_total,
            "n_dropped_incomplete": self.n_dropped_incomplete,
            "cost_unit": self.cost_unit,
            "candidates": self.candidates,
            "protocol": self.protocol,
            "tep_baseline": self.tep_baseline,
            "pair": self.pair,
            "bootstrap": self.bootstrap,
            "budgets": self.budgets,
            "notes": self.notes,
            "routers": {name: r.to_json() for name, r in self.routers.items()},
        })
