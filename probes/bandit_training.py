"""Train a probe on logged bandit data (one observed outcome per query, with its propensity).

Same shape as :func:`triage.probes.training.train_probe` - cached features, cross-fitted head,
calibration fitted on out-of-fold predictions, honest cross-calibrated metrics - with three changes:

1. each label's success model is fitted on the queries that label was observed on, weighted by the
   clipped inverse propensity (:mod:`triage.probes.bandit`); calibration is weighted the same way;
2. the tier is not observed: the tier head is fitted to soft targets computed from the cross-fitted
   calibrated success estimates by the tier rule of :mod:`triage.probes.labels`
   (:func:`triage.probes.bandit.tier_from_success`);
3. metrics are per label on its logged rows: AUROC (unweighted: it ranks the queries the label saw)
   and IPS-weighted Brier / base rate (what the label would score on all logged queries).

Doubly-robust targets are not used: per-label logistic models cannot take the DR pseudo-outcomes
(outside 0..1), and on the shared data IPS with clipping already tracks the full-information probe
(tests/test_bandit_training.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from triage.probes import calibration as cal
from triage.probes.bandit import (
    LoggedDataError,
    LoggedLabels,
    tier_from_success,
    weighting_summary,
    weights_for,
)
from triage.probes.card import training_rows_block
from triage.probes.evaluation import _with_ci, auroc, ece
from triage.probes.features.base import Feature
from triage.probes.heads.base import make_head
from triage.probes.labels import ProbeLabels
from triage.probes.training import (
    Progress,
    TrainConfig,
    TrainedProbe,
    _Silent,
    feature_matrix,
    fold_ids,
    parse_features,
)

WEIGHTINGS = ("ips", "none")


def _fit(config: TrainConfig, X: np.ndarray, labels: LoggedLabels, rows: np.ndarray, weighting: str,
         tier_targets: np.ndarray | None = None) -> Any:
    per_label = []
    for j in range(labels.m):
        sel, w = weights_for(labels, rows, j, weighting=weighting)
        per_label.append((rows[sel], labels.success[rows[sel]], w))
    head = make_head(config.head, **config.head_params)
    return head.fit_logged(X, per_label, tier_targets)


def _calibrate(method: str, p: np.ndarray, labels: LoggedLabels, rows: np.ndarray, weighting: str) -> list[dict]:
    out = []
    for j in range(labels.m):
        sel, w = weights_for(labels, rows, j, weighting=weighting)
        out.append(cal.fit_binary(method, p[rows[sel], j], labels.success[rows[sel]], w))
    return out


def _label_metrics(labels: LoggedLabels, p: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    success = {}
    for j, name in enumerate(labels.candidates):
        sel = labels.label == j
        y, q, w = labels.success[sel].astype(float), p[sel, j].astype(float), labels.weight[sel]
        success[name] = {
            "rows": int(sel.sum()),
            "base_rate": float((w * y).sum() / w.sum()),
            "auroc": _with_ci(auroc, (y, q), n_boot, seed),
            "brier": _with_ci(lambda a, b, c: float((c * (b - a) ** 2).sum() / c.sum()), (y, q, w), n_boot, seed),
            "ece": _with_ci(ece, (y, q), n_boot, seed),
        }
    return {"n": labels.n, "success": success, "tier": {}}


def train_logged_probe(
    labels: LoggedLabels,
    config: TrainConfig | None = None,
    *,
    features: Sequence[Feature] | None = None,
    cache_dir: Path | str | None = None,
    precomputed: Mapping[str, np.ndarray] | None = None,
    progress: Progress | None = None,
    weighting: str = "ips",
    data_name: str = "logged",
) -> TrainedProbe:
    """Fit a probe on logged rows (see the module docstring). ``weighting="none"`` is the naive fit
    (kept for comparison; it is biased whenever the logging policy depended on the query)."""
    config = config or TrainConfig()
    progress = progress or _Silent()
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if config.head not in ("logreg", "auto"):  # auto searches logreg's C on logged data (heads/select.py)
        raise LoggedDataError(f"--head {config.head} cannot train on logged data yet (its fit has no per-row "
                              "weights); use --head logreg")
    feats = list(features) if features is not None else parse_features(config.features)
    X = feature_matrix(feats, labels.texts, cache_dir=cache_dir, precomputed=precomputed, progress=progress)
    n, m = labels.n, labels.m
    folds = fold_ids(labels.label * 2 + labels.success, config.folds, config.seed)
    oof_s = np.zeros((n, m), dtype=np.float32)
    progress.start(f"cross-fitting {config.head} on logged rows ({config.folds} folds)", config.folds)
    for k in range(config.folds):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        oof_s[test] = _fit(config, X, labels, train, weighting).predict_proba(X[test])[0]
        progress.advance()
    everything = np.arange(n)
    method = config.calibration
    calibration = {"method": method, "success": _calibrate(method, oof_s, labels, everything, weighting),
                   "tier": {"method": "none"}}
    cal_s = np.zeros_like(oof_s)
    for k in range(config.folds):
        test = folds == k
        params = _calibrate(method, oof_s, labels, np.flatnonzero(~test), weighting)
        cal_s[test] = np.column_stack([cal.apply_binary(c, oof_s[test, j]) for j, c in enumerate(params)])
    tier_targets = tier_from_success(cal_s, labels.rule.easy_candidates)
    progress.start("final fit on all logged rows", 1)
    head = _fit(config, X, labels, everything, weighting, tier_targets)
    progress.advance()
    observed = labels.observed()
    success = np.zeros((n, m), dtype=np.int8)
    success[everything, labels.label] = labels.success
    probe_labels = ProbeLabels(candidates=list(labels.candidates), success=success,
                               tier=tier_targets.argmax(axis=1).astype(np.int8), rows=everything,
                               mean_cost=list(labels.mean_cost), rule=labels.rule, observed=observed)
    metrics = {
        "kind": f"{config.folds}-fold cross-fitted, calibration cross-fitted, per label on its logged rows "
                "(AUROC unweighted; base rate and Brier inverse-propensity weighted)",
        "calibrated": _label_metrics(labels, cal_s, config.n_boot, config.seed),
    }
    logged = {**weighting_summary(labels, weighting), "rows": n, "labels": labels.summary()}
    return TrainedProbe(config=config, features=feats, labels=probe_labels, head=head, calibration=calibration,
                        metrics=metrics, oof_success=cal_s, oof_tier=tier_targets, X=X, data_name=data_name,
                        logged=logged, training_rows=training_rows_block(labels.texts))
