"""``cascade-uncertainty``: an LM cascade on the small model's own answer (output uncertainty).

The small candidate answers every query; the large one is called as well when the small answer
looks wrong, and then its answer is kept. "Looks wrong" is a logistic regression of the small
model's failure on its token-level uncertainty (Gupta et al., "Language model cascades:
token-level uncertainty and beyond"), fitted on the training rows only (cross-fitted like every
learned router). Features (``signals``):

* ``first_k``: :func:`~triage.probes.features.output_uncertainty.uncertainty_stats` of the first
  ``k`` generated tokens (what a cascade could decide on before the answer is finished);
* ``answer``: the same statistics over the whole answer, over the tail from the last "answer is"
  marker (the stated number's own uncertainty), whether there is such a marker, whether the
  stated answer agrees with the working's last ``= N`` result, truncation and log length;
* ``both`` (default): all of them.

The knob is the escalation share: held-out queries ranked by P(small fails), the top share ``s``
escalated, ``s`` from 0 to 1 (ranking a batch of unlabelled answers = calibrating the threshold on
them, as :mod:`~triage.eval.routers.probabilistic` does). The sweep sets ``paid_first`` to the small
candidate, so an escalated query costs small + large (:class:`~triage.eval.routers.base.RouterSweep`).

Replay files need the small model's per-token arrays (``python -m triage.eval.cascade_data``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from triage.eval.cascade_data import TOKEN_FIELDS, outcome_tokens
from triage.eval.routers.base import ReplayRouter, RouterSweep, register

from triage.replay.matrix import ReplayData

SIGNALS = ("first_k", "answer", "both")


def _has_tokens(outcome: Any) -> bool:
    extra = getattr(outcome, "model_extra", None) or {}
    return all(f in extra for f in TOKEN_FIELDS)


def answer_features(outcome: Any, k: int, signals: str) -> np.ndarray:
    """The feature vector of one small-model outcome (see the module docstring)."""
    from triage.probes.features.output_uncertainty import uncertainty_stats

    tokens = outcome_tokens(outcome)
    parts: list[np.ndarray] = []
    if signals in ("first_k", "both"):
        parts.append(uncertainty_stats(tokens, k))
    if signals in ("answer", "both"):
        extra = outcome.model_extra or {}
        whole = uncertainty_stats(tokens, max(1, len(tokens)))[:-1]  # frac_of_k is 1 by construction
        start = extra.get("answer_start")
        tail = tokens[start:] if start is not None else []
        tail_stats = uncertainty_stats(tail, max(1, len(tail)))[[0, 1, 3]] if tail else np.zeros(3)
        agrees = extra.get("last_result_agrees")
        flags = [1.0 if start is not None else 0.0, 0.0 if agrees is None else (1.0 if agrees else -1.0),
                 1.0 if outcome.truncated else 0.0, math.log1p(len(tokens))]
        parts += [whole, tail_stats, np.array(flags, dtype=np.float32)]
    return np.concatenate(parts).astype(np.float64)


@register
class CascadeUncertaintyRouter(ReplayRouter):
    """``cascade-uncertainty:k=16,signals=both,C=0.1`` (see the module docstring)."""

    name = "cascade-uncertainty"
    learned: ClassVar[bool] = True
    share_points: ClassVar[int] = 21

    def __init__(self, k: int = 16, signals: str = "both", C: float = 0.1, threshold: float = 0.5,
                 small: str | None = None, large: str | None = None) -> None:
        self.k = k
        self.signals = signals
        self.C = C
        self.threshold = threshold
        self.small = small
        self.large = large

    def _pair(self, data: ReplayData) -> tuple[int, int]:
        """(small, large) columns: the candidate with token arrays cascades to the other one."""
        if self.small is not None:
            small = data.candidate_index(self.small)
        else:
            with_tokens = [j for j, c in enumerate(data.candidates)
                           if data.records and any(_has_tokens(r.outcomes.get(c)) for r in data.records)]
            if len(with_tokens) != 1:
                raise ValueError("cascade-uncertainty needs exactly one candidate with token arrays "
                                 f"({', '.join(TOKEN_FIELDS)}; found {len(with_tokens)}): pass small=NAME, "
                                 "or generate the file with python -m triage.eval.cascade_data")
            small = with_tokens[0]
        if self.large is not None:
            large = data.candidate_index(self.large)
        elif data.m == 2:
            large = 1 - small
        else:
            raise ValueError("cascade-uncertainty: more than two candidates, pass large=NAME")
        if large == small:
            raise ValueError("cascade-uncertainty: small and large are the same candidate")
        return small, large

    def features(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        if not data.records:
            raise ValueError("cascade-uncertainty needs the replay records (token arrays)")
        name = data.candidates[self.small_]
        out = []
        for i in rows:
            outcome = data.records[i].outcomes.get(name)
            if outcome is None or not _has_tokens(outcome):
                raise ValueError(f"record {data.ids[i]!r}: candidate {name!r} has no token arrays")
            out.append(answer_features(outcome, int(self.k), self.signals))
        return np.vstack(out) if out else np.zeros((0, 0))

    def fit(self, data: ReplayData, train: np.ndarray) -> CascadeUncertaintyRouter:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.signals not in SIGNALS:
            raise ValueError(f"signals must be one of {', '.join(SIGNALS)}, got {self.signals!r}")
        train = np.asarray(train, dtype=np.int64)
        if len(train) == 0:
            raise ValueError("cascade-uncertainty needs training rows")
        self.small_, self.large_ = self._pair(data)
        train = train[~np.isnan(data.score[train, self.small_])]
        fails = (data.score[train, self.small_] < self.threshold).astype(np.int8)
        self.model_: Any = None
        self.base_rate_ = float(fails.mean()) if len(fails) else 0.5
        if 0 < fails.sum() < len(fails):  # one class only: every answer equally suspect
            self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=float(self.C), max_iter=2000))
            self.model_.fit(self.features(data, train), fails)
        return self

    def p_fail(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        """P(the small answer is wrong) for ``rows`` (the base rate when training had one class)."""
        if self.model_ is None:
            return np.full(len(rows), self.base_rate_)
        return self.model_.predict_proba(self.features(data, rows))[:, 1]

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        if not hasattr(self, "small_"):
            raise RuntimeError("cascade-uncertainty used before fit")
        rows = np.asarray(rows, dtype=np.int64)
        p = self.p_fail(data, rows)
        n = len(rows)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-p, kind="stable")] = np.arange(n)  # 0 = most likely wrong
        shares = np.linspace(0.0, 1.0, int(self.share_points))
        escalate = rank[None, :] < np.rint(shares * n).astype(np.int64)[:, None]
        choices = np.where(escalate, self.large_, self.small_)
        default = int(np.argmin(np.abs(shares - 0.5)))
        return RouterSweep(choices=choices, knobs=shares, default=default, knob_name="escalation_share",
                           paid_first=self.small_)
