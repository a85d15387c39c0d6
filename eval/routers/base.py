"""The replay router contract: one abstract method and a registry (as in RouteLLM).

A replay router turns a :class:`ReplayData` into a *sweep*: for each of K operating points
(a threshold, a willingness-to-pay), the candidate it would have called on each test query.
The evaluator turns a sweep into a cost-quality curve and picks the router's default point.

Learned routers are cross-fitted by the evaluator: ``fit`` only ever sees training rows and
``sweep`` is only asked about the rows of the held-out fold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from triage.registry import Registry
from triage.replay.matrix import ReplayData
from triage.specs import parse_spec


@dataclass
class RouterSweep:
    """Candidate choices at K operating points for the queries a router was asked about.

    ``choices[k, i]`` is the column of ``data.candidates`` chosen for query ``i`` at point ``k``;
    ``knobs[k]`` is the setting that produced it (a threshold, lambda, mixing rate...), and
    ``default`` indexes the point reported as the router's headline numbers.

    A randomised router may give ``probs`` instead: ``probs[k, i, j]`` is the probability of
    calling candidate ``j`` for query ``i`` at point ``k`` (the query axis may have length 1 to
    mean "the same for every query"). Metrics are then expectations over the router's coin
    flips, i.e. the average over infinitely many seeds; ``choices`` is filled with the most
    likely candidate for display.

    Cross-fitted routers must return the same knobs for every fold (e.g. a quantile level, not
    the threshold value it maps to) so points of different folds can be pooled.

    A cascade sets ``paid_first``: the column every query calls first (its cheap step). A query
    whose choice is another column paid for both calls, so its cost and tokens are the sum of
    the two; its score is the final choice's.

    ``caps[k, i]``, when given, is the completion-token cap query ``i``'s call is sent with at point
    ``k`` (inf: none); the evaluator replays it on the logged answer with the truncation rule of
    :mod:`triage.eval.metrics.budget` (hard choices only, not with a cascade).
    """

    choices: np.ndarray | None  # (K, n) int
    knobs: np.ndarray  # (K,) float
    default: int = 0
    probs: np.ndarray | None = None  # (K, n or 1, m) float, rows sum to 1
    knob_name: str = "knob"
    paid_first: int | None = None  # a cascade's first (always paid) candidate column
    caps: np.ndarray | None = None  # (K, n) completion-token caps, inf = no cap

    def __post_init__(self) -> None:
        self.knobs = np.asarray(self.knobs, dtype=float).reshape(-1)
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=float)
            if probs.ndim == 2:
                probs = probs[None]
            if probs.ndim != 3:
                raise ValueError("probs must have shape (K, n, m)")
            if not np.allclose(probs.sum(axis=-1), 1.0, atol=1e-6):
                raise ValueError("probs must sum to 1 over candidates")
            self.probs = probs
            if self.choices is None:
                self.choices = probs.argmax(axis=-1)
        if self.choices is None:
            raise ValueError("a sweep needs choices or probs")
        self.choices = np.atleast_2d(np.asarray(self.choices, dtype=np.int64))
        if self.choices.shape[0] != self.knobs.shape[0]:
            raise ValueError("choices and knobs disagree on the number of operating points")
        if not 0 <= self.default < self.knobs.shape[0]:
            raise ValueError(f"default point {self.default} out of range 0..{self.knobs.shape[0] - 1}")
        if self.caps is not None:
            self.caps = np.asarray(self.caps, dtype=float)
            if self.caps.shape != self.choices.shape or self.probs is not None or self.paid_first is not None:
                raise ValueError("caps need the shape of choices (K, n), hard choices and no cascade")

    @property
    def n_points(self) -> int:
        return int(self.knobs.shape[0])


class ReplayRouter(ABC):
    """Base class. Subclasses set ``name`` and implement :meth:`sweep`.

    Parameters go in ``__init__`` and are only stored there (scikit-learn style); any work
    happens in :meth:`fit`.
    """

    name: ClassVar[str]
    #: learned routers are cross-fitted (``fit`` on training rows, ``sweep`` on held-out rows);
    #: fixed ones are asked about the evaluation rows directly.
    learned: ClassVar[bool] = False

    def fit(self, data: ReplayData, train: np.ndarray) -> "ReplayRouter":
        """Learn from rows ``train`` of ``data``. Fixed routers do nothing."""
        return self

    @abstractmethod
    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        """Choices for rows ``rows`` of ``data`` at each operating point."""

    def extra_metrics(self, data: ReplayData, rows: np.ndarray, sweep: RouterSweep, boot: object) -> dict | None:
        """Figures of the router's own kind added to its result, measured on the evaluated ``rows``
        from the pooled (cross-fitted) ``sweep`` with the evaluation's bootstrap ``boot`` (a ``notes``
        list in it goes to the result's notes, e.g. the table caption); None: none."""
        return None


def rows_of(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]``, without copying when ``rows`` is every row in order (the common case)."""
    rows = np.asarray(rows)
    n = array.shape[0]
    if len(rows) == n and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1 and (np.diff(rows) == 1).all())):
        return array
    return array[rows]


#: Every replay router of this package, by ``name`` (the discovery rule of :mod:`triage.registry`:
#: adding a router is one module here).
ROUTERS: Registry[type[ReplayRouter]] = Registry("router", package="triage.eval.routers", error=KeyError)


def register(cls: type[ReplayRouter]) -> type[ReplayRouter]:
    """Class decorator: make a router available by its ``name``."""
    return ROUTERS.register(cls)


def available_routers() -> dict[str, type[ReplayRouter]]:
    return dict(ROUTERS.items())


def make_router(spec: str) -> ReplayRouter:
    """Build a router from ``name`` or ``name:key=value,key=value``."""
    cls = ROUTERS.get(spec.partition(":")[0])
    _, kwargs = parse_spec(spec, separator=",", what="router option")
    return cls(**kwargs)
