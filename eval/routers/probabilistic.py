"""A helper base for routers that predict, per query, each candidate's chance of success.

Subclass :class:`ProbabilisticRouter`, implement :meth:`~ProbabilisticRouter.predict_success`,
and override :meth:`~ProbabilisticRouter.fit` to train (call ``super().fit(data, train)`` first:
it records the training costs the sweep needs). The helper turns predictions into a sweep:

* two candidates (RouteLLM-style): rank the queries by P(cheaper candidate fails) and send the
  top share ``s`` to the dearer candidate, for ``s`` from 0 to 1. Ranking the queries a sweep is
  asked about is the same as calibrating the threshold on that batch of *unlabelled* queries
  (as RouteLLM calibrates on public traffic); no outcome of those queries is read.
* more candidates (cost-aware expected utility): pick ``argmax_j P_ij - lambda * cost_j`` over a
  grid of ``lambda``, where ``cost_j`` is candidate j's mean training cost scaled to [0, 1] over
  the candidates (so ``lambda = 1`` trades the whole cost range for one unit of success
  probability). The grid is 0 then log-spaced from 1e-3 to the ``lambda`` at which even the
  smallest cost step outweighs any probability difference (everything goes to the cheapest).
  Its knob is the grid position in [0, 1] ("cost aversion"), the same in every fold while the
  ``lambda`` values follow each fold's training costs.

Example::

    @register
    class LengthLogit(ProbabilisticRouter):
        name = "length-logit"

        def fit(self, data, train):
            super().fit(data, train)
            ...  # learn from data.texts[train], data.score[train]
            return self

        def predict_success(self, data, rows):
            return probs  # (len(rows), data.m), each in [0, 1]
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from triage.eval.metrics.cost import cost_axis
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep

__all__ = ["ProbabilisticRouter"]


class ProbabilisticRouter(ReplayRouter):
    """Base for routers that output P(success) per query and candidate (cross-fitted)."""

    learned: ClassVar[bool] = True
    #: operating points of the two-candidate sweep (shares of calls to the dearer candidate).
    share_points: ClassVar[int] = 21
    #: operating points of the many-candidate sweep (0 = most likely to succeed, 1 = cheapest).
    utility_points: ClassVar[int] = 26

    def fit(self, data: ReplayData, train: np.ndarray) -> "ProbabilisticRouter":
        """Record training costs and accuracies. Subclasses call this first, then learn."""
        train = np.asarray(train, dtype=np.int64)
        if len(train) == 0:
            raise ValueError(f"{self.name} needs training rows")
        self.train_cost_ = cost_axis(data).candidate_means(train)
        self.train_accuracy_ = np.nanmean(data.score[train], axis=0)
        # Two candidates: "weak" is the cheaper one (the less accurate one when costs are equal).
        order = np.lexsort((self.train_accuracy_, self.train_cost_))
        self.weak_, self.strong_ = int(order[0]), int(order[-1])
        return self

    @abstractmethod
    def predict_success(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        """(len(rows), m) array: P(candidate j answers query rows[i] correctly)."""

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        if not hasattr(self, "train_cost_"):
            raise RuntimeError(f"{type(self).__name__}.fit must call super().fit(data, train)")
        rows = np.asarray(rows, dtype=np.int64)
        p = np.asarray(self.predict_success(data, rows), dtype=float)
        if p.shape != (len(rows), data.m):
            raise ValueError(f"predict_success returned shape {p.shape}, expected {(len(rows), data.m)}")
        if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
            raise ValueError("predict_success must return probabilities in [0, 1]")
        if data.m == 2:
            return self._sweep_two(p)
        return self._sweep_utility(p)

    def _sweep_two(self, p: np.ndarray) -> RouterSweep:
        n = p.shape[0]
        p_weak_fails = 1.0 - p[:, self.weak_]
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-p_weak_fails, kind="stable")] = np.arange(n)  # 0 = most likely to fail
        shares = np.linspace(0.0, 1.0, int(self.share_points))
        n_strong = np.rint(shares * n).astype(np.int64)
        to_strong = rank[None, :] < n_strong[:, None]
        choices = np.where(to_strong, self.strong_, self.weak_)
        default = int(np.argmin(np.abs(shares - 0.5)))
        return RouterSweep(choices=choices, knobs=shares, default=default, knob_name="share")

    def lambdas(self) -> np.ndarray:
        """The lambda grid for the training costs seen in :meth:`fit`."""
        scaled = self._scaled_cost()
        steps = np.diff(np.unique(scaled))
        top = max(1.0, 1.0 / steps.min()) * 1.01 if steps.size else 1.0
        k = int(self.utility_points)
        return np.concatenate([[0.0], np.geomspace(1e-3, top, k - 1)])

    def _scaled_cost(self) -> np.ndarray:
        cost = self.train_cost_
        span = cost.max() - cost.min()
        return (cost - cost.min()) / span if span > 0 else np.zeros_like(cost)

    def _sweep_utility(self, p: np.ndarray) -> RouterSweep:
        scaled = self._scaled_cost()
        lambdas = self.lambdas()
        # Tiny cost-proportional tie-break: among equally likely candidates take the cheaper.
        utility = p[None, :, :] - (lambdas[:, None, None] + 1e-9) * scaled[None, None, :]
        choices = utility.argmax(axis=-1)
        knobs = np.linspace(0.0, 1.0, len(lambdas))
        return RouterSweep(choices=choices, knobs=knobs, default=len(knobs) // 2, knob_name="cost_aversion")
