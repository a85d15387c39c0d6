"""Route on any per-query numeric score: higher score, more expensive candidate.

``threshold:score=FIELD`` where FIELD is a numeric field of the replay record (an extra field
such as ``difficulty``; dotted paths reach into nested objects) or a built-in:
``prompt_chars``, ``prompt_words``, ``digits`` (count of digit characters in the prompt).

The router is cross-fitted: quantiles of the score and the cost-accuracy frontier come from
the training rows only. With two candidates the cheaper one answers below the threshold and
the dearer one above it, and the knob is the share of training queries sent to the dearer one.
With more, the candidates on the training frontier (each dearer one more accurate than the
last) get successive bands of the score's training quantiles, and the knob shifts the bands
from "everything to the cheapest" (0) to "everything to the dearest" (1).
A query with no score is sent to the dearest frontier candidate (the safe side).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from triage.eval.metrics.cost import cost_axis
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep, register

_DIGIT = re.compile(r"\d")

BUILTIN_SCORES: dict[str, Callable[[str], float]] = {
    "prompt_chars": lambda text: float(len(text)),
    "prompt_words": lambda text: float(len(text.split())),
    "digits": lambda text: float(len(_DIGIT.findall(text))),
}


def _lookup(obj: object, path: str) -> object:
    for part in path.split("."):
        if obj is None:
            return None
        if isinstance(obj, dict):
            obj = obj.get(part)
        else:
            extra = getattr(obj, "model_extra", None) or {}
            obj = extra[part] if part in extra else getattr(obj, part, None)
    return obj


def query_scores(data: ReplayData, rows: np.ndarray, field: str) -> np.ndarray:
    """The per-query score ``field`` for ``rows``; NaN where a record lacks it."""
    if field in BUILTIN_SCORES:
        fn = BUILTIN_SCORES[field]
        return np.array([fn(data.texts[i]) for i in rows], dtype=float)
    if not data.records:
        raise ValueError(f"score field {field!r} needs the replay records; built-ins: "
                         f"{', '.join(BUILTIN_SCORES)}")
    out = np.full(len(rows), np.nan)
    for k, i in enumerate(rows):
        value = _lookup(data.records[i], field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"score field {field!r} of record {data.ids[i]!r} is not a number: {value!r}")
        out[k] = float(value)
    return out


def cost_accuracy_frontier(data: ReplayData, rows: np.ndarray) -> list[int]:
    """Candidates by increasing mean cost on ``rows``, keeping each one more accurate than the last kept."""
    cost = cost_axis(data).candidate_means(rows)
    acc = np.nanmean(data.score[rows], axis=0)
    order = np.lexsort((-acc, cost))  # by cost, then higher accuracy first
    frontier: list[int] = []
    for j in order:
        if not frontier or acc[j] > acc[frontier[-1]]:
            frontier.append(int(j))
    return frontier


@register
class ThresholdRouter(ReplayRouter):
    """``threshold:score=FIELD,points=21`` (see module docstring)."""

    name = "threshold"
    learned = True

    def __init__(self, score: str = "prompt_chars", points: int = 21) -> None:
        self.score = score
        self.points = points

    def fit(self, data: ReplayData, train: np.ndarray) -> "ThresholdRouter":
        train = np.asarray(train, dtype=np.int64)
        if len(train) == 0:
            raise ValueError("threshold router needs training rows")
        if int(self.points) < 2:
            raise ValueError("threshold router needs points >= 2")
        values = query_scores(data, train, self.score)
        known = values[~np.isnan(values)]
        if known.size == 0:
            raise ValueError(f"score field {self.score!r}: no training record has a number there "
                             f"(built-ins: {', '.join(BUILTIN_SCORES)})")
        self.train_scores_ = np.sort(known)
        if data.m == 2:
            cost = cost_axis(data).candidate_means(train)
            acc = np.nanmean(data.score[train], axis=0)
            self.frontier_ = [int(j) for j in np.lexsort((acc, cost))]  # cheaper first
        else:
            self.frontier_ = cost_accuracy_frontier(data, train)
        return self

    def _quantile(self, values: np.ndarray) -> np.ndarray:
        """Mid-rank empirical CDF of ``values`` under the training scores, in [0, 1]."""
        ref = self.train_scores_
        lo = np.searchsorted(ref, values, side="left")
        hi = np.searchsorted(ref, values, side="right")
        return (lo + hi) / (2.0 * len(ref))

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        if not hasattr(self, "frontier_"):
            raise RuntimeError("threshold router used before fit")
        rows = np.asarray(rows, dtype=np.int64)
        values = query_scores(data, rows, self.score)
        missing = np.isnan(values)
        frontier = np.array(self.frontier_)
        f = len(frontier)
        knobs = np.linspace(0.0, 1.0, int(self.points))
        default = int(np.argmin(np.abs(knobs - 0.5)))
        if f == 1:  # one candidate dominates on the training rows: every point calls it
            return RouterSweep(choices=np.full((len(knobs), len(rows)), frontier[0]), knobs=knobs,
                               default=default, knob_name="share")
        if f == 2:
            # Knob s = share of training queries sent to the dearer candidate: the threshold is the
            # training quantile 1 - s, and s = 0 / s = 1 mean all cheap / all dear exactly.
            thresholds = np.quantile(self.train_scores_, 1.0 - knobs)
            band = (values[None, :] > thresholds[:, None]).astype(np.int64)
            band[knobs <= 0.0] = 0
            band[knobs >= 1.0] = 1
        else:
            # F equal bands of the training quantile, shifted by a from -F (all cheapest) to F-1 (all dearest).
            u = self._quantile(np.where(missing, 0.0, values))
            shift = -f + knobs * (2 * f - 1)
            band = np.clip(np.floor(f * u[None, :] + shift[:, None]), 0, f - 1).astype(np.int64)
        band[:, missing] = f - 1
        return RouterSweep(choices=frontier[band], knobs=knobs, default=default,
                           knob_name="share" if f == 2 else "level")
