"""Per-query outcomes of a router: what each operating point would have scored and cost.

Matrices are stored candidate-major, ``(m, n)`` (one transposing pass over the data): a router
that always calls one candidate reads a row without copying, a randomised router is one
``(K, m) @ (m, n)`` product, and any other router is one ``np.take`` per field with an index
computed once per sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from triage.eval.metrics.cost import CostAxis
from triage.replay.summary import zero_nan
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import RouterSweep, rows_of

__all__ = ["OutcomeTable", "RoutedOutcomes"]

#: per-query values at every operating point (bootstrap of curve metrics) / only at the default point
CURVE_FIELDS = ("score", "cost")
POINT_FIELDS = ("tokens", "prompt_tokens", "completion_tokens", "reasoning_tokens", "truncated")
#: fields whose per-point means the curve reports
MEAN_FIELDS = ("score", "cost", "tokens")
#: fields a cascade pays twice when it escalates (:attr:`RouterSweep.paid_first`)
ADDITIVE_FIELDS = frozenset({"cost", "tokens", "prompt_tokens", "completion_tokens", "reasoning_tokens"})


@dataclass
class OutcomeTable:
    """The ``(m, n)`` matrices routed outcomes are read from, for the evaluated rows in order.

    ``cost`` is on the dataset's cost axis; unknown token counts are 0 (as in
    :func:`triage.eval.metrics.summarize_outcomes`).
    """

    m: int
    n: int
    mats: dict[str, np.ndarray]  # field -> (m, n) C-contiguous float, no NaN
    cost_unit: str = "usd"  # what ``mats["cost"]`` counts (a token cap rescales it accordingly)

    @classmethod
    def build(cls, data: ReplayData, axis: CostAxis, rows: np.ndarray) -> "OutcomeTable":
        def prep(a: np.ndarray) -> np.ndarray:
            return zero_nan(np.ascontiguousarray(rows_of(a, rows).T, dtype=float))

        mats = {
            "score": prep(data.score),
            "cost": prep(axis.values),
            "prompt_tokens": prep(data.prompt_tokens),
            "completion_tokens": prep(data.completion_tokens),
            "reasoning_tokens": prep(data.reasoning_tokens),
            "truncated": prep(data.truncated),
        }
        mats["tokens"] = mats["prompt_tokens"] + mats["completion_tokens"]  # completion includes reasoning
        return cls(m=data.m, n=len(rows), mats=mats, cost_unit=axis.unit)

    def column(self, field: str, j: int) -> np.ndarray:
        return self.mats[field][j]


@dataclass
class RoutedOutcomes:
    """A router's per-query outcomes: every operating point for the curve fields, the default
    point for the rest, and the share of calls each candidate gets."""

    sweep: RouterSweep
    curve: dict[str, np.ndarray]  # field -> (K, n)
    point: dict[str, np.ndarray]  # field -> (n,)
    call_share: np.ndarray  # (K, m)
    means: dict[str, np.ndarray] = field(default_factory=dict)  # field -> (K,) mean per point
    _flat: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, table: OutcomeTable, sweep: RouterSweep) -> "RoutedOutcomes":
        out = cls(sweep=sweep, curve={}, point={}, call_share=np.zeros((sweep.n_points, table.m)))
        d = sweep.default
        if sweep.caps is not None:
            return out._capped(table)
        for f in CURVE_FIELDS:
            out.curve[f] = out._gather(table, f, slice(None))
            out.point[f] = out.curve[f][d]
        for f in POINT_FIELDS:
            out.point[f] = out._gather(table, f, slice(d, d + 1))[0]
        out.call_share = out._call_share(table)
        for f in MEAN_FIELDS:
            out.means[f] = out.curve[f].mean(axis=1) if f in out.curve else out._point_means(table, f)
        return out

    def _capped(self, table: OutcomeTable) -> "RoutedOutcomes":
        """Every field at every point with the sweep's token caps replayed (truncation rule)."""
        from triage.eval.metrics.budget import apply_caps

        everything = (*CURVE_FIELDS, *POINT_FIELDS)
        raw = {f: self._gather(table, f, slice(None)) for f in everything if f != "tokens"}
        capped = apply_caps(raw, self.sweep.caps, cost_unit=table.cost_unit)
        d = self.sweep.default
        self.curve = {f: capped[f] for f in CURVE_FIELDS}
        self.point = {f: capped[f][d] for f in everything}
        self.call_share = self._call_share(table)
        self.means = {f: capped[f].mean(axis=1) for f in MEAN_FIELDS}
        return self

    def _point_means(self, table: OutcomeTable, f: str) -> np.ndarray:
        """(K,) mean of ``f`` at every point without materialising (K, n) when avoidable."""
        if table.n == 0:
            return np.full(self.sweep.n_points, np.nan)
        if self.sweep.paid_first is not None:
            return self._gather(table, f, slice(None)).mean(axis=1)
        col_means = table.mats[f].mean(axis=1)  # (m,)
        if self.sweep.probs is not None and self.sweep.probs.shape[1] == 1:
            return self.sweep.probs[:, 0, :] @ col_means
        const = self._constant_choice(slice(None))
        if const is not None:
            return col_means[const]
        return self._gather(table, f, slice(None)).mean(axis=1)

    def _constant_choice(self, points: slice) -> np.ndarray | None:
        """Per point, the single candidate called for every query, if that is the case."""
        ch = self.sweep.choices[points]
        if ch.shape[1] == 0:
            return None
        first = ch[:, :1]
        return first[:, 0] if (ch == first).all() else None

    def _gather(self, table: OutcomeTable, f: str, points: slice) -> np.ndarray:
        out = self._gather_choice(table, f, points)
        first = self.sweep.paid_first
        if first is None or f not in ADDITIVE_FIELDS:
            return out
        # a cascade: the first call is paid by every query that ended on another candidate
        if self.sweep.probs is not None:
            moved = 1.0 - self.sweep.probs[points][:, :, first]
        else:
            moved = (self.sweep.choices[points] != first).astype(float)
        return out + moved * table.mats[f][first][None, :]

    def _gather_choice(self, table: OutcomeTable, f: str, points: slice) -> np.ndarray:
        mat = table.mats[f]
        sweep = self.sweep
        if sweep.probs is not None:
            probs = sweep.probs[points]
            if probs.shape[1] == 1:  # same mixture for every query
                return probs[:, 0, :] @ mat
            return np.einsum("kim,mi->ki", probs, mat)
        const = self._constant_choice(points)
        if const is not None:
            return mat[const]
        if self._flat is None:
            self._flat = sweep.choices * table.n + np.arange(table.n)[None, :]
        return np.take(mat.ravel(), self._flat[points])

    def _call_share(self, table: OutcomeTable) -> np.ndarray:
        sweep = self.sweep
        if sweep.probs is not None:
            return sweep.probs.mean(axis=1)
        k = sweep.n_points
        flat = (sweep.choices + (np.arange(k) * table.m)[:, None]).ravel()
        return np.bincount(flat, minlength=k * table.m).reshape(k, table.m) / max(table.n, 1)

    def indicator(self, j: int) -> np.ndarray:
        """(K, n) probability that the router calls candidate ``j`` for each query."""
        sweep = self.sweep
        n = self.point["score"].shape[0]
        if sweep.probs is not None:
            return np.broadcast_to(sweep.probs[:, :, j], (sweep.n_points, n))
        return (sweep.choices == j).astype(float)
