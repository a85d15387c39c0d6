"""Random routing baselines.

``random`` (mode ``mix``) calls the most accurate candidate with probability ``r`` and the
cheapest otherwise, for ``r`` from 0 to 1: the straight line between the two that any router
has to beat (its APGR is 0.5 by construction). Mode ``uniform`` picks uniformly among all
candidates. With ``seeds=0`` (default) metrics are exact expectations over the coin flips
(the average over infinitely many seeds); ``seeds=N`` averages N seeded draws instead.
"""

from __future__ import annotations

import numpy as np

from triage.eval.metrics.cost import cost_axis
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep, register
from triage.eval.routers.single import best_candidate


@register
class RandomRouter(ReplayRouter):
    """``random:mode=mix|uniform,points=11,seeds=0,seed=0``."""

    name = "random"

    def __init__(self, mode: str = "mix", points: int = 11, seeds: int = 0, seed: int = 0) -> None:
        self.mode = mode
        self.points = points
        self.seeds = seeds
        self.seed = seed

    def _expected(self, data: ReplayData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """(K, 1, m) call probabilities and the knobs that produce them."""
        m = data.m
        if self.mode == "uniform":
            return np.full((1, 1, m), 1.0 / m), np.array([1.0 / m]), "uniform"
        if self.mode != "mix":
            raise ValueError(f"random router mode must be 'mix' or 'uniform', not {self.mode!r}")
        if int(self.points) < 2:
            raise ValueError("random router needs points >= 2")
        cheap = int(np.argmin(cost_axis(data).candidate_means(rows)))
        best = best_candidate(data, rows)
        rates = np.linspace(0.0, 1.0, int(self.points))
        probs = np.zeros((len(rates), 1, m))
        probs[:, 0, cheap] += 1.0 - rates
        probs[:, 0, best] += rates
        return probs, rates, "rate"

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        probs, knobs, knob_name = self._expected(data, rows)
        if int(self.seeds) > 0:
            # Average N seeded draws: per-query frequencies of each candidate over the seeds.
            rng = np.random.default_rng(int(self.seed))
            n, m = len(rows), data.m
            freq = np.zeros((probs.shape[0], n, m))
            for k in range(probs.shape[0]):
                draws = rng.choice(m, size=(int(self.seeds), n), p=probs[k, 0])
                for j in range(m):
                    freq[k, :, j] = (draws == j).mean(axis=0)
            probs = freq
        default = int(np.argmin(np.abs(knobs - 0.5))) if knob_name == "rate" else 0
        return RouterSweep(choices=None, probs=probs, knobs=knobs, default=default, knob_name=knob_name)
