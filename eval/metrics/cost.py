"""The cost axis of a replay evaluation: dollars where every call has a price, else tokens.

Routers and the evaluator both call :func:`cost_axis` on the same :class:`ReplayData`, so
"cheapest candidate" means the same thing to the router that picks it and to the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from triage.replay.matrix import ReplayData

CostUnit = Literal["usd", "tokens", "calls"]

__all__ = ["CostAxis", "CostUnit", "cost_axis"]


@dataclass(frozen=True)
class CostAxis:
    """Per-cell cost on one axis.

    ``unit`` is ``"usd"`` when every cell has a dollar cost, ``"tokens"`` (prompt + completion)
    when every cell has a completion token count, and ``"calls"`` (1 per call) when neither is
    known: then all candidates cost the same and cost-based metrics are trivial.
    """

    unit: CostUnit
    values: np.ndarray  # (n, m) float, no NaN

    def candidate_means(self, rows: np.ndarray | None = None) -> np.ndarray:
        from triage.eval.routers.base import rows_of

        v = self.values if rows is None else rows_of(self.values, rows)
        return v.mean(axis=0) if v.shape[0] else np.zeros(v.shape[1])


def cost_axis(data: ReplayData, unit: CostUnit | None = None) -> CostAxis:
    """Pick (or force) the cost unit for ``data`` and return the (n, m) cost of every cell.

    The answer is cached on ``data`` for as long as its cost and token arrays are the same objects
    (every router asks, and :class:`ReplayData` methods return new objects rather than mutate).
    """
    cached = data.__dict__.get("_cost_axis_cache")
    if cached is not None and cached[0] is data.cost and cached[1] is data.completion_tokens and unit in (None, cached[2].unit):
        return cached[2]
    axis = _cost_axis(data, unit)
    if unit is None:
        data.__dict__["_cost_axis_cache"] = (data.cost, data.completion_tokens, axis)
    return axis


def _cost_axis(data: ReplayData, unit: CostUnit | None) -> CostAxis:
    usd_known = data.n > 0 and not np.isnan(data.cost).any()
    tok_known = data.n > 0 and not np.isnan(data.completion_tokens).any()
    if unit is None:
        unit = "usd" if usd_known else "tokens" if tok_known else "calls"
    if unit == "usd":
        if not usd_known:
            raise ValueError("cost unit 'usd' needs a cost_usd on every outcome")
        values = np.asarray(data.cost, dtype=float)
    elif unit == "tokens":
        if not tok_known:
            raise ValueError("cost unit 'tokens' needs completion_tokens on every outcome")
        values = data.total_tokens.astype(float)
    elif unit == "calls":
        values = np.ones((data.n, data.m))
    else:
        raise ValueError(f"unknown cost unit {unit!r}; use usd, tokens or calls")
    return CostAxis(unit=unit, values=values)
