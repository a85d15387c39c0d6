"""``tier-budget``: difficulty-aware completion-token caps for one model (DLER / DiffAdapt style),
replayed on its logged answers.

One model answers every query (``model=NAME``; default the most accurate candidate, ties to the one
writing fewer tokens); what the router decides is the ``max_tokens`` each call is sent with, from
a tier the probe predicts out of fold from the query text.

**Tier target: the tokens the model needs.** On training rows a query's *need* is the logged
completion tokens (reasoning included) of the model's answer when it is correct, and 0 when it is
wrong: no cap makes a wrong answer right, so the best cap for it is the smallest one. Needs are
bucketed at the terciles of the correct training answers' lengths (0 = short or failed, 1 = medium,
2 = long) and the probe head (:mod:`triage.probes.heads`, logistic regression by default) is fitted
on the probe-text features (the on-disk feature cache) with those buckets as its tier label. A
query's difficulty score is its expected bucket, ``P(medium) + 2 P(long)``; with a perfect score the
tiers would be the tokens each query needs (``oracle=true`` measures that ceiling).

**Tiers and caps, on training rows only.** The training rows' scores come from an inner cross-fit
(``inner_folds``), so caps are chosen on predictions as good as the held-out rows get. Tiers are
``tiers`` equal-frequency bands of those scores (the thresholds are kept for held-out queries). For
each knob value ``r`` the caps ``c_1..c_G`` minimise the training rows' completion tokens subject to
keeping at least ``r`` of the model's uncapped training successes, solved exactly by dynamic
programming over the tiers; a tier's caps range over its correct training answers' lengths, with
the shortest correct training answer as the floor. The knob ``r`` ("accuracy_kept") is the same grid
in every fold, so it traces a curve; the default point is ``r = 0.95``. ``tiers=1`` is one cap chosen
on the training rows the same way (the learned uniform cap).

**Truncation rule** (:mod:`triage.eval.metrics.budget`): a logged answer longer than its cap is
truncated and wrong (score 0) and uses the cap's tokens. ``triage replay evaluate`` applies it to
the per-query caps (``RouterSweep.caps``) and adds a ``budget`` block to this router's result: the
uniform-cap curve of the same model on the same rows and the tokens saved at equal accuracy
against the best uniform cap, with bootstrap intervals.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from triage.eval.metrics.budget import TRUNCATION_RULE, tokens_saved, uniform_curve
from triage.eval.routers.base import ReplayRouter, RouterSweep, register, rows_of
from triage.replay.matrix import ReplayData

__all__ = ["TierBudgetRouter", "budget_model", "cheapest_tier_caps"]

#: share of the model's uncapped training successes each operating point keeps
TARGETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0)
DEFAULT_TARGET = 0.95


def budget_model(data: ReplayData, model: str = "best") -> int:
    """Column of ``model``; ``best``: the most accurate candidate over all rows, ties to the one with
    fewer mean completion tokens (the same in every fold and for the uniform baseline)."""
    if model != "best":
        return data.candidate_index(str(model))
    acc = np.nan_to_num(np.nanmean(data.score, axis=0), nan=-1.0)
    tok = np.nan_to_num(np.nanmean(data.completion_tokens, axis=0), nan=np.inf)
    return int(np.lexsort((np.arange(data.m), tok, -acc))[0])


def cheapest_tier_caps(tier: np.ndarray, success: np.ndarray, tokens: np.ndarray, n_tiers: int,
                       targets: np.ndarray, floor: float) -> np.ndarray:
    """(K, G) caps minimising the summed capped tokens while keeping ``ceil(r * successes)`` of them.

    Exact: a min-plus dynamic programme over tiers whose state is the number of successes kept.
    A tier without training rows gets the largest cap chosen for any tier (the safe side).
    """
    success = np.asarray(success, dtype=bool)
    total = int(success.sum())
    best = np.full(total + 1, np.inf)
    best[0] = 0.0
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for g in range(n_tiers):
        m = tier == g
        ct, ok = tokens[m], success[m]
        caps = np.unique(np.concatenate([[floor], ct[ok]])) if m.any() else np.array([floor])
        kept = ((ct[None, :] <= caps[:, None]) & ok[None, :]).sum(axis=1)
        spent = np.minimum(ct[None, :], caps[:, None]).sum(axis=1)
        new, arg = np.full(total + 1, np.inf), np.zeros(total + 1, dtype=np.int64)
        for o in range(len(caps)):
            cand = np.full(total + 1, np.inf)
            cand[kept[o]:] = best[: total + 1 - kept[o]] + spent[o]
            better = cand < new
            new[better], arg[better] = cand[better], o
        steps.append((caps, kept, arg))
        best = new
    out = np.zeros((len(targets), n_tiers))
    for k, r in enumerate(targets):
        need = min(total, int(np.ceil(r * total - 1e-9)))
        v = need + int(np.argmin(best[need:]))
        for g in range(n_tiers - 1, -1, -1):
            caps, kept, arg = steps[g]
            o = arg[v]
            out[k, g] = caps[o]
            v -= int(kept[o])
    empty = [g for g in range(n_tiers) if not (tier == g).any()]
    if empty:
        out[:, empty] = out.max(axis=1, keepdims=True)
    return out


@register
class TierBudgetRouter(ReplayRouter):
    """``tier-budget:model=NAME,tiers=3,head=logreg,C=0.02,features=text,inner_folds=3`` (see module docstring)."""

    name = "tier-budget"
    learned: ClassVar[bool] = True

    def __init__(self, model: str = "best", tiers: int = 3, head: str = "logreg", C: float = 0.02,
                 features: str = "text", inner_folds: int = 3, threshold: float = 0.5,
                 oracle: bool = False, seed: int = 0, hidden: int = 64, epochs: int = 200) -> None:
        self.model = model
        self.tiers = tiers
        self.head = head
        self.C = C
        self.features = features
        self.inner_folds = inner_folds
        self.threshold = threshold
        self.oracle = oracle
        self.seed = seed
        self.hidden = hidden
        self.epochs = epochs

    # -- the probe -------------------------------------------------------------------------------
    def _fit_head(self, X: np.ndarray, buckets: np.ndarray) -> Any:
        from triage.probes.heads import make_head

        params: dict[str, Any] = ({"C": float(self.C)} if self.head == "logreg"
                                  else {"hidden": self.hidden, "epochs": self.epochs})
        # Only the head's tier output is used: its success label is a constant (logreg fits nothing for it).
        return make_head(self.head, **params).fit(X, np.zeros((len(X), 1), dtype=np.int8), buckets)

    @staticmethod
    def _score(head: Any, X: np.ndarray) -> np.ndarray:
        _, tier = head.predict_proba(X)
        return np.asarray(tier, dtype=float) @ np.arange(tier.shape[1], dtype=float)

    def _matrix(self, data: ReplayData) -> np.ndarray:
        from triage.probes.training import feature_matrix, parse_features

        return feature_matrix(parse_features(self.features), data.texts)

    # -- fit / sweep -----------------------------------------------------------------------------
    def fit(self, data: ReplayData, train: np.ndarray) -> TierBudgetRouter:
        if int(self.tiers) < 1 or int(self.inner_folds) < 2:
            raise ValueError("tier-budget needs tiers >= 1 and inner_folds >= 2")
        train = np.asarray(train, dtype=np.int64)
        self.col_ = budget_model(data, str(self.model))
        score, ct = data.score[train, self.col_], data.completion_tokens[train, self.col_]
        if np.isnan(ct).any():
            raise ValueError(f"tier-budget: {data.candidates[self.col_]!r} lacks completion token counts")
        keep = ~np.isnan(score)
        train, score, ct = train[keep], score[keep], ct[keep]
        success = score >= self.threshold
        if not success.any():
            raise ValueError(f"tier-budget: {data.candidates[self.col_]!r} has no correct training answer")
        need = np.where(success, ct, 0.0)
        edges = np.quantile(ct[success], [1 / 3, 2 / 3])
        buckets = np.searchsorted(edges, need, side="left").astype(np.int8)  # 0 short/failed, 1, 2 long
        if self.oracle or int(self.tiers) == 1:  # one tier needs no probe
            scores = need
        else:
            self.X_ = self._matrix(data)
            scores = np.zeros(len(train))
            rng = np.random.default_rng(int(self.seed))
            for part in np.array_split(rng.permutation(len(train)), int(self.inner_folds)):
                rest = np.setdiff1d(np.arange(len(train)), part)
                scores[part] = self._score(self._fit_head(self.X_[train[rest]], buckets[rest]), self.X_[train[part]])
            self.head_ = self._fit_head(self.X_[train], buckets)
        g = int(self.tiers)
        self.thresholds_ = np.quantile(scores, np.arange(1, g) / g) if g > 1 else np.zeros(0)
        tier = np.searchsorted(self.thresholds_, scores, side="right")
        self.targets_ = np.array(TARGETS)
        self.caps_ = cheapest_tier_caps(tier, success, ct, g, self.targets_, float(ct[success].min()))
        return self

    def tier_of(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        """The predicted tier (0 = smallest need) of ``rows``."""
        if int(self.tiers) == 1:
            return np.zeros(len(rows), dtype=np.int64)
        if self.oracle:  # the ceiling: the held-out rows' true need (reads their outcomes)
            s = data.score[rows, self.col_] >= self.threshold
            scores = np.where(s, data.completion_tokens[rows, self.col_], 0.0)
        else:
            scores = self._score(self.head_, self.X_[rows])
        return np.searchsorted(self.thresholds_, scores, side="right")

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        if not hasattr(self, "caps_"):
            raise RuntimeError("tier-budget router used before fit")
        rows = np.asarray(rows, dtype=np.int64)
        caps = self.caps_[:, self.tier_of(data, rows)]  # (K, n)
        default = int(np.argmin(np.abs(self.targets_ - DEFAULT_TARGET)))
        return RouterSweep(choices=np.full(caps.shape, self.col_), knobs=self.targets_, default=default,
                           knob_name="accuracy_kept", caps=caps)

    # -- the budget figures ----------------------------------------------------------------------
    def extra_metrics(self, data: ReplayData, rows: np.ndarray, sweep: RouterSweep, boot: object) -> dict | None:
        """``budget``: the uniform-cap curve and tokens saved at equal accuracy (see metrics.budget)."""
        from triage.eval.metrics.bootstrap import Bootstrap

        if sweep.caps is None or len(rows) == 0:
            return None
        j = budget_model(data, str(self.model))
        s = np.nan_to_num(rows_of(data.score, rows)[:, j])
        ct = np.nan_to_num(rows_of(data.completion_tokens, rows)[:, j])
        over = ct[None, :] > sweep.caps
        score_k, tok_k = np.where(over, 0.0, s[None, :]), np.minimum(ct[None, :], sweep.caps)
        points = []
        for k in range(sweep.n_points):
            pt = tokens_saved(score_k[k], tok_k[k], s, ct)
            points.append({"knob": float(sweep.knobs[k]), "truncated": float(over[k].mean()), **pt})
        d = sweep.default
        head = tokens_saved(score_k[d], tok_k[d], s, ct, boot if isinstance(boot, Bootstrap) else None)
        caps, counts = np.unique(sweep.caps[d], return_counts=True)
        note = f"{self.name}: token caps replayed on {data.candidates[j]}'s logged answers; {TRUNCATION_RULE}"
        return {"notes": [note], "budget": {
            "model": data.candidates[j], "rule": TRUNCATION_RULE, "n": len(rows),
            "tiers": int(self.tiers), "oracle_tiers": bool(self.oracle),
            "uncapped": {"accuracy": float(s.mean()), "mean_completion_tokens": float(ct.mean())},
            "default": {"knob": float(sweep.knobs[d]), "truncated": float(over[d].mean()), **head},
            "caps_at_default": {str(int(c)) if np.isfinite(c) else "none": float(n / len(rows))
                                for c, n in zip(caps, counts)},
            "curve": points, "uniform_curve": uniform_curve(s, ct),
        }}
