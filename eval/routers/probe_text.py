"""Learned routers on the probe's features: ``probe-text`` (and the shared base of ``probe-lm``,
``probe-text+lm``).

Each fold trains the probe head (:mod:`triage.probes.heads`: logistic regression or the small MLP) on the
training rows' features and success labels, and predicts P(success) per candidate for the held-out
rows. Features come from the on-disk feature cache (:mod:`triage.probes.features.cache`), so only the
first evaluation of a data set pays for the encoder / local LM.

Two candidates: queries are ranked by the *expected gain* of the dearer candidate,
``P(strong succeeds) - P(weak succeeds)``, rather than by ``P(weak fails)`` alone: a query both
models fail gains nothing from escalation. (``rank=weak_fails`` gives the helper's default order.)
On RouteLLM GSM8K this ranking is worth ~+0.03-0.04 APGR.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from triage.replay.matrix import ReplayData
from triage.eval.routers.base import RouterSweep, register
from triage.eval.routers.probabilistic import ProbabilisticRouter


class ProbeFeatureRouter(ProbabilisticRouter):
    """P(success) per candidate from a probe head on cached features. Subclasses set ``features``."""

    features: ClassVar[str] = "text"

    def __init__(
        self,
        head: str = "logreg",
        C: float | str = 0.02,
        threshold: float = 0.5,
        rank: str = "gain",
        features: str | None = None,
        hidden: int = 64,
        epochs: int = 200,
    ) -> None:
        self.head = head
        self.C = C
        self.threshold = threshold
        self.rank = rank
        self.feature_spec = features
        self.hidden = hidden
        self.epochs = epochs

    def _head(self) -> tuple[str, dict[str, Any]]:
        """``C=auto`` (logreg) and ``head=auto`` (logreg or mlp) choose by inner cross-validation on
        each fold's training rows (:mod:`triage.probes.heads.select`)."""
        if self.head == "auto":
            return "auto", {"heads": "logreg,mlp", "seed": 0}
        if self.head == "logreg":
            if str(self.C) == "auto":
                return "auto", {"heads": "logreg"}
            return "logreg", {"C": float(self.C)}
        if self.head == "mlp":
            return "mlp", {"hidden": self.hidden, "epochs": self.epochs}
        raise ValueError(f"unknown head {self.head!r}; use logreg, mlp or auto")

    def _matrix(self, data: ReplayData) -> np.ndarray:
        from triage.probes.training import feature_matrix, parse_features

        return feature_matrix(parse_features(self.feature_spec or self.features), data.texts)

    def fit(self, data: ReplayData, train: np.ndarray) -> "ProbeFeatureRouter":
        from triage.probes.heads import make_head

        if self.rank not in ("gain", "weak_fails"):
            raise ValueError(f"rank must be 'gain' or 'weak_fails', got {self.rank!r}")
        super().fit(data, train)
        train = np.asarray(train, dtype=np.int64)
        train = train[~np.isnan(data.score[train]).any(axis=1)]
        self.X_ = self._matrix(data)
        success = (data.score[train] >= self.threshold).astype(np.int8)
        # tier by the probe's label rule on the data's cost order (head.fit needs one; unused here)
        cheapest = int(np.argmin(self.train_cost_))
        tier = np.where(success[:, cheapest] == 1, 0, np.where(success.any(axis=1), 1, 2)).astype(np.int8)
        name, params = self._head()
        self.head_ = make_head(name, **params).fit(self.X_[train], success, tier)
        return self

    def predict_success(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        p, _ = self.head_.predict_proba(self.X_[np.asarray(rows, dtype=np.int64)])
        return np.clip(p.astype(float), 0.0, 1.0)

    def _sweep_two(self, p: np.ndarray) -> RouterSweep:
        if self.rank == "weak_fails":
            return super()._sweep_two(p)
        n = p.shape[0]
        gain = p[:, self.strong_] - p[:, self.weak_]
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-gain, kind="stable")] = np.arange(n)  # 0 = most to gain from the dearer one
        shares = np.linspace(0.0, 1.0, int(self.share_points))
        n_strong = np.rint(shares * n).astype(np.int64)
        choices = np.where(rank[None, :] < n_strong[:, None], self.strong_, self.weak_)
        default = int(np.argmin(np.abs(shares - 0.5)))
        return RouterSweep(choices=choices, knobs=shares, default=default, knob_name="share")


@register
class ProbeTextRouter(ProbeFeatureRouter):
    """MiniLM + lexical + GSM8K-solution-profile features (``text``), any provider."""

    name = "probe-text"
    features = "text"
