"""Train a probe on replay data: features (cached) -> labels -> cross-fitted head -> calibration.

1. Features of every query text, through the on-disk cache (:mod:`triage.probes.features.cache`).
2. Labels by the rule of :mod:`triage.probes.labels` (per-candidate success, easy/normal/hard tier).
3. ``folds``-fold cross-fitting (stratified by tier): out-of-fold head predictions for every row.
4. Calibration fitted on those out-of-fold predictions; the head is then refitted on all rows.
5. Metrics on *cross-fitted calibrated* predictions: fold k is calibrated by a calibrator fitted on
   the other folds' out-of-fold predictions, so the reported figures never see their own labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from triage.replay.matrix import ReplayData
from triage.specs import parse_spec
from triage.probes import calibration as cal
from triage.probes.card import training_rows_block
from triage.probes.evaluation import probe_metrics
from triage.probes.features.base import Feature, make_feature
from triage.probes.features.cache import FeatureCache
from triage.probes.heads.base import Head, make_head
from triage.probes.labels import LabelRule, ProbeLabels, make_labels


class Progress(Protocol):
    """What training reports to (a rich progress bar in the CLI)."""

    def start(self, description: str, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def parse_features(spec: str | Sequence[str]) -> list[Feature]:
    """``"text,lm"`` or ``["text", "lexical"]`` -> feature instances; ``name:key=value`` sets params."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    features = []
    for item in filter(None, items):
        name, params = parse_spec(item, separator=";", what="feature option")
        features.append(make_feature(name, **params))
    if not features:
        raise ValueError("no features given")
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"feature listed twice: {', '.join(names)}")
    return features


def feature_matrix(
    features: Sequence[Feature],
    texts: Sequence[str],
    *,
    cache_dir: Path | str | None = None,
    precomputed: Mapping[str, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """The concatenated feature matrix ``(len(texts), sum(dims))`` float32, through the cache.

    Offline (training, evaluation): builds what the features read first when it is missing.
    """
    from triage.probes.features.build import build_feature_artifacts

    build_feature_artifacts([f for f in features if not (precomputed and f.name in precomputed)])
    progress = progress or _Silent()
    blocks = []
    for f in features:
        if precomputed and f.name in precomputed:
            block = np.asarray(precomputed[f.name], dtype=np.float32)
            if block.shape != (len(texts), f.dim):
                raise ValueError(f"precomputed {f.name!r} has shape {block.shape}, expected ({len(texts)}, {f.dim})")
        else:
            progress.start(f"features: {f.name}", len(texts))
            block = FeatureCache(f, cache_dir).transform(texts, progress=progress.advance)
        blocks.append(block)
    return np.concatenate(blocks, axis=1).astype(np.float32)


@dataclass
class TrainConfig:
    features: list[str] = field(default_factory=lambda: ["text"])
    head: str = "logreg"
    head_params: dict[str, Any] = field(default_factory=dict)
    folds: int = 5
    calibration: str = "platt"
    rule: LabelRule = field(default_factory=LabelRule)
    seed: int = 0
    n_boot: int = 500


@dataclass
class TrainedProbe:
    config: TrainConfig
    features: list[Feature]
    labels: ProbeLabels
    head: Head
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    oof_success: np.ndarray  # cross-fitted calibrated P(success), (n, m)
    oof_tier: np.ndarray  # (n, 3)
    X: np.ndarray
    data_name: str = "replay"
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    training_rows: dict[str, Any] = field(default_factory=dict)  # card.training_rows_block of the texts
    #: Trained on logged bandit data: estimator, weight clip, rows and ESS per label (into the card).
    logged: dict[str, Any] | None = None


def fold_ids(tier: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per row, stratified by tier (falls back to plain shuffling for tiny classes)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(tier)
    if folds < 2:
        raise ValueError("folds must be at least 2")
    if folds > n:
        raise ValueError(f"{folds} folds but only {n} rows")
    out = np.empty(n, dtype=np.int64)
    counts = np.bincount(tier.astype(int))
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed)
                if counts[counts > 0].min() >= folds else KFold(folds, shuffle=True, random_state=seed))
    for k, (_, test) in enumerate(splitter.split(np.zeros(n), tier)):
        out[test] = k
    return out


def cross_fit(config: TrainConfig, X: np.ndarray, S: np.ndarray, T: np.ndarray, folds: np.ndarray,
              progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold uncalibrated predictions for every row."""
    progress = progress or _Silent()
    oof_s = np.zeros(S.shape, dtype=np.float32)
    oof_t = np.zeros((len(T), 3), dtype=np.float32)
    k_total = int(folds.max()) + 1
    progress.start(f"cross-fitting {config.head} ({k_total} folds)", k_total)
    for k in range(k_total):
        test = folds == k
        head = make_head(config.head, **config.head_params).fit(X[~test], S[~test], T[~test])
        oof_s[test], oof_t[test] = head.predict_proba(X[test])
        progress.advance()
    return oof_s, oof_t


def cross_calibrate(method: str, oof_s: np.ndarray, oof_t: np.ndarray, S: np.ndarray, T: np.ndarray,
                    folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate fold k with a calibrator fitted on the other folds (honest calibrated figures)."""
    out_s = np.zeros_like(oof_s)
    out_t = np.zeros_like(oof_t)
    for k in np.unique(folds):
        test = folds == k
        c = cal.fit_all(method, oof_s[~test], S[~test], oof_t[~test], T[~test])
        out_s[test], out_t[test] = cal.apply_all(c, oof_s[test], oof_t[test])
    return out_s, out_t


def train_probe(
    data: ReplayData,
    config: TrainConfig | None = None,
    *,
    features: Sequence[Feature] | None = None,
    cache_dir: Path | str | None = None,
    precomputed: Mapping[str, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> TrainedProbe:
    """Fit a probe on every complete row of ``data`` (see the module docstring)."""
    config = config or TrainConfig()
    progress = progress or _Silent()
    feats = list(features) if features is not None else parse_features(config.features)
    labels = make_labels(data, config.rule)
    texts = [data.texts[i] for i in labels.rows]
    pre = {k: np.asarray(v)[labels.rows] for k, v in (precomputed or {}).items()}
    X = feature_matrix(feats, texts, cache_dir=cache_dir, precomputed=pre, progress=progress)
    S, T = labels.success, labels.tier
    folds = fold_ids(T, config.folds, config.seed)
    oof_s, oof_t = cross_fit(config, X, S, T, folds, progress)
    calibration = cal.fit_all(config.calibration, oof_s, S, oof_t, T)
    cal_s, cal_t = cross_calibrate(config.calibration, oof_s, oof_t, S, T, folds)
    progress.start("final fit on all rows", 1)
    head = make_head(config.head, **config.head_params).fit(X, S, T)
    progress.advance()
    metrics = {
        "kind": f"{config.folds}-fold cross-fitted, calibration cross-fitted",
        "calibrated": probe_metrics(labels.candidates, S, cal_s, T, cal_t, n_boot=config.n_boot, seed=config.seed),
        "uncalibrated_auroc": {
            name: probe_metrics([name], S[:, [j]], oof_s[:, [j]], T, oof_t, n_boot=0)["success"][name]["auroc"]["value"]
            for j, name in enumerate(labels.candidates)
        },
    }
    return TrainedProbe(
        config=config,
        features=feats,
        labels=labels,
        head=head,
        calibration=calibration,
        metrics=metrics,
        oof_success=cal_s,
        oof_tier=cal_t,
        X=X,
        data_name=data.name,
        training_rows=training_rows_block(texts),
    )


def file_fingerprint(path: Path | str) -> dict[str, Any]:
    """sha256 and size of a training data file (recorded in the probe card)."""
    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return {"path": str(p), "sha256": h.hexdigest(), "bytes": p.stat().st_size}
