"""Pooled logistic head: one multi-task fit shares what the labels have in common.

P(label j succeeds | x) = sigmoid(x . (w_shared + w_j) + b + b_j), fitted as ONE L2-penalised logistic
regression over every observed (query, label) pair, on a common standardisation of x. Why: with one
observed outcome per query (logged bandit data, :mod:`triage.probes.bandit_training`) each label's own
model sees only the queries its strategy answered, and a policy sends a cheap strategy mostly easy
queries - its model never sees hard ones. Much of what makes a query hard is hard for every model, so
the shared weights learn it from all rows; ``w_j`` keeps each label's own deviation under the same
penalty. ``shared_scale`` > 1 makes the shared block cheaper to use than the deviations (a column
block scaled by s has its penalty divided by s squared); the per-label intercepts are almost
unpenalised (scaled by 10).

The fitted model is one ordinary logistic model per label (``w_shared + w_j``, ``b + b_j``), so the
export is :class:`~triage.probes.heads.logreg.LogRegHead`'s: per-label StandardScaler + logistic
pipelines merged into one ONNX graph. The tier model is logreg's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.probes.heads.base import register_head
from triage.probes.heads.logreg import LogRegHead, _Constant

#: Scale of the per-label intercept columns: their penalty is 1/100 of a unit column's.
_INTERCEPT_SCALE = 10.0


@register_head
class PooledLogRegHead(LogRegHead):
    name = "pooled-logreg"

    def __init__(self, C: float = 0.02, shared_scale: float = 3.0, max_iter: int = 3000,
                 tier_C: float | None = None) -> None:
        super().__init__(C=C, max_iter=max_iter, tier_C=tier_C)
        self.shared_scale = shared_scale

    def _pooled(self, X: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> list[Any]:
        """Per-label pipelines from one fit over the stacked (row, label) observations."""
        import scipy.sparse as sp
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        m = len(rows)
        seen = np.unique(np.concatenate([np.asarray(idx, dtype=np.int64) for idx, _, _ in rows]))
        scaler = StandardScaler().fit(X[seen])
        idx = np.concatenate([np.asarray(i, dtype=np.int64) for i, _, _ in rows])
        label = np.concatenate([np.full(len(i), j, dtype=np.int64) for j, (i, _, _) in enumerate(rows)])
        y = np.concatenate([np.asarray(t).astype(int) for _, t, _ in rows])
        w = np.concatenate([np.ones(len(i)) if wt is None else np.asarray(wt, dtype=np.float64) for i, _, wt in rows])
        if np.unique(y).size < 2:  # every observation the same outcome
            return [_Constant(np.array([1.0 - y[0], float(y[0])])) for _ in range(m)]
        Z = scaler.transform(X[idx]).astype(np.float64)
        n, d = Z.shape
        shared = sp.csr_matrix(Z * self.shared_scale)
        cols = (label[:, None] * d + np.arange(d)[None, :]).ravel()
        own = sp.csr_matrix((Z.ravel(), (np.repeat(np.arange(n), d), cols)), shape=(n, d * m))
        intercepts = sp.csr_matrix((np.full(n, _INTERCEPT_SCALE), (np.arange(n), label)), shape=(n, m))
        design = sp.hstack([shared, own, intercepts]).tocsr()
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(design, y, sample_weight=w)
        coef = lr.coef_[0]
        weights = coef[:d][None, :] * self.shared_scale + coef[d:d + d * m].reshape(m, d)
        biases = lr.intercept_[0] + coef[d + d * m:] * _INTERCEPT_SCALE
        out = []
        for j in range(m):
            per_label = LogisticRegression(C=self.C)
            per_label.classes_ = np.array([0, 1])
            per_label.coef_ = weights[j][None, :].astype(np.float64)
            per_label.intercept_ = np.array([biases[j]], dtype=np.float64)
            per_label.n_features_in_ = d
            per_label.n_iter_ = lr.n_iter_
            out.append(make_pipeline(scaler, per_label))
        return out

    def fit(self, X: np.ndarray, success: np.ndarray, tier: np.ndarray) -> "PooledLogRegHead":
        X = np.asarray(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        every = np.arange(X.shape[0])
        self.success_models_ = self._pooled(X, [(every, success[:, j], None) for j in range(success.shape[1])])
        self._fit_tier(X, tier)
        return self

    def fit_logged(self, X: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   tier_targets: np.ndarray | None) -> "PooledLogRegHead":
        """As :meth:`LogRegHead.fit_logged` (label j's rows, outcomes, weights), pooled across labels."""
        X = np.asarray(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        self.success_models_ = self._pooled(X, rows)
        self._fit_soft_tier(X, tier_targets)
        return self
