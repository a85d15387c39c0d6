"""A trained probe folder as a replay router: ``--router probe:path=PROBE_DIR``.

The probe is used as it is, never refitted: its calibrated P(success) per label (the labels are
candidate names, as ``triage probe train`` and ``triage learn`` write them) is read for the scored
rows and turned into a cost-quality curve by the same sweep as ``probe-text``
(:class:`~triage.eval.routers.probe_text.ProbeFeatureRouter`: two candidates ranked by the expected
gain of the dearer one, more by expected utility over a lambda grid). So a probe trained elsewhere -
e.g. by ``triage learn`` on logged bandit data - is scored on exactly the footing of the cross-fitted
``probe-text`` router trained on full-information labels.

It counts as a learned router so that under a train/test split its ``fit`` sees the train rows only:
``fit`` records the candidates' mean training costs (which candidate is the cheaper, the lambda
scale) and nothing else. Features come through the on-disk feature cache, as for ``probe-text``.
Use it on rows the probe was not trained on (``triage replay evaluate --policy`` flags in-sample
probes; this router does not check).

``scores=head`` ranks by the head's P(success) before the probe's calibration instead (the footing of
``probe-text``, which has no calibration step): per-label calibration is monotone for each label but
not for the gain ``p_dear - p_cheap`` the sweep ranks by, so the two can order queries differently
(eval/bench/learning_loop.py measures both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.eval.routers.base import register
from triage.eval.routers.probe_text import ProbeFeatureRouter
from triage.replay.matrix import ReplayData


#: What the sweep ranks by: the probe's calibrated P(success) (what a policy reads), or its head's.
SCORES = ("calibrated", "head")


@register
class SavedProbeRouter(ProbeFeatureRouter):
    """P(success) per candidate from a saved probe (``path``: its folder or card.json)."""

    name = "probe"

    def __init__(self, path: str = "", rank: str = "gain", scores: str = "calibrated") -> None:
        super().__init__(rank=rank)
        if not path:
            raise ValueError("probe router needs path=PROBE_DIR (a folder written by `triage probe train`)")
        if scores not in SCORES:
            raise ValueError(f"probe router: scores must be {' or '.join(SCORES)}, got {scores!r}")
        self.path = path
        self.scores = scores

    def fit(self, data: ReplayData, train: np.ndarray) -> "SavedProbeRouter":
        from triage.probes.runtime import load_probe
        from triage.probes.features.cache import cached_transform

        if self.rank not in ("gain", "weak_fails"):
            raise ValueError(f"rank must be 'gain' or 'weak_fails', got {self.rank!r}")
        super(ProbeFeatureRouter, self).fit(data, train)  # costs only: the probe is not refitted
        self.probe_: Any = load_probe(self.path)
        missing = [c for c in data.candidates if c not in self.probe_.labels]
        if missing:
            raise ValueError(f"probe {self.probe_.version} has no success label for {', '.join(missing)} "
                             f"(its labels: {', '.join(self.probe_.labels)})")
        self.columns_ = [self.probe_.labels.index(c) for c in data.candidates]
        # The probe's own feature objects, through the on-disk cache (what training computed).
        blocks = []
        for spec, feature in zip(self.probe_.card.features, self.probe_._features, strict=True):
            if feature is None:
                raise ValueError(f"probe {self.probe_.version} needs feature {spec.name!r} from a local model; "
                                 "the probe router computes text features only")
            blocks.append(cached_transform(feature, data.texts))
        self.X_ = np.concatenate(blocks, axis=1).astype(np.float32)
        return self

    def predict_success(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        from triage.probes.calibration import apply_all

        X = self.X_[np.asarray(rows, dtype=np.int64)]
        success, tier = self.probe_.head_proba(X)
        if self.scores == "calibrated":
            success, _ = apply_all(self.probe_.card.calibration, success, tier)
        return np.clip(np.asarray(success, dtype=float)[:, self.columns_], 0.0, 1.0)
