"""The oracle: for each query, the cheapest candidate among those with the best score.

It reads the outcomes it is scored on, so it is an upper bound on what any router could reach
with these candidates, not a router one could deploy.
"""

from __future__ import annotations

import numpy as np

from triage.eval.metrics.cost import cost_axis
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep, register, rows_of


def oracle_choices(score: np.ndarray, cost: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """(n, m) scores and per-cell costs -> (n,) column of the cheapest best-scoring candidate.

    Equal cost ties go to the candidate that is cheaper on average, then to the first column.
    """
    n, m = score.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(m), cost.mean(axis=0)))  # columns by mean cost
    s, c = score[:, order], cost[:, order]
    best = s.max(axis=1, keepdims=True)
    masked = np.where(s >= best - tol, c, np.inf)
    return order[masked.argmin(axis=1)]


@register
class OracleRouter(ReplayRouter):
    """``oracle``: cheapest candidate with the best score for each query (an upper bound)."""

    name = "oracle"

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        axis = cost_axis(data)
        choice = oracle_choices(rows_of(data.score, rows), rows_of(axis.values, rows))
        return RouterSweep(choices=choice[None, :], knobs=np.zeros(1), knob_name="none")
