"""Always call one candidate: the per-candidate baselines and the best single candidate."""

from __future__ import annotations

import numpy as np

from triage.eval.metrics.cost import cost_axis
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep, register, rows_of


def best_of(accuracy: np.ndarray, cost: np.ndarray) -> int:
    """Column of the most accurate candidate; ties go to the cheaper one, then the first."""
    # lexsort: last key is primary -> highest accuracy first, then lowest cost, then column order.
    return int(np.lexsort((np.arange(len(accuracy)), cost, -np.asarray(accuracy)))[0])


def best_candidate(data: ReplayData, rows: np.ndarray) -> int:
    """Column of the most accurate candidate on ``rows``; ties go to the cheaper one."""
    acc = np.nanmean(rows_of(data.score, rows), axis=0) if len(rows) else np.zeros(data.m)
    return best_of(acc, cost_axis(data).candidate_means(rows))


@register
class SingleRouter(ReplayRouter):
    """``single:candidate=NAME`` calls NAME for every query; ``candidate=best`` calls the most
    accurate candidate on the evaluated queries (an in-sample reference, like every baseline)."""

    name = "single"

    def __init__(self, candidate: str = "best") -> None:
        self.candidate = candidate

    def resolve(self, data: ReplayData, rows: np.ndarray) -> int:
        if self.candidate == "best":
            return best_candidate(data, rows)
        return data.candidate_index(str(self.candidate))

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        j = self.resolve(data, rows)
        return RouterSweep(choices=np.full((1, len(rows)), j), knobs=np.array([float(j)]),
                           knob_name="candidate")
