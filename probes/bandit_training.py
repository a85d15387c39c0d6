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

Weighting (``weighting``): ``ips`` fits and calibrates every label inverse-propensity weighted,
``none`` unweighted, ``auto`` (the default) chooses. Why a choice: weighting removes the bias of a
per-label model only where the logging policy chose by something the features do not see
(tests/test_bandit_training.py); where it chose by the query's features (a probe's policy, the
simulator) the conditional model is unbiased unweighted, and the weights only cost variance - with
epsilon 0.2 exploration the explored rows weigh 10x the greedy ones, the effective sample size drops
to ~35% of the rows, and on SimpleQA the strong label's cross-fitted AUROC fell to 0.50, which Platt
calibration then flattened to a constant (eval/bench/learning_loop.py). Which one wins differs by
data set and even by label, so ``auto`` measures it on the logged rows, with the cross-fitted,
cross-calibrated predictions of both fits:

* two labels (a cheap/strong pair, what a routing policy reads as the gain ``p_strong - p_cheap``):
  the combination of per-label fits (four) whose gain ranks the logged queries best, by the
  doubly-robust value of that ranking (:func:`ranking_value`: the area under the accuracy curve as
  the share sent to the strong label grows, each query's two outcomes estimated doubly robustly from
  its logged ones). A label's own log loss measures its probabilities, not the ranking their
  difference makes: on the final ledger of a RouterBench learning-loop run it kept the IPS fit of
  the strong label, whose gain ranked the test queries worse than the unweighted fit's;
* any other number of labels: per label, the fit with the lower IPS-weighted log loss on the label's
  logged rows (an estimate of the loss on *all* logged queries, unbiased whichever fit produced the
  predictions).

Doubly-robust targets are not used: per-label logistic models cannot take the DR pseudo-outcomes
(outside 0..1), and on the shared data IPS with clipping already tracks the full-information probe
(tests/test_bandit_training.py).
"""

from __future__ import annotations

import itertools
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

WEIGHTINGS = ("auto", "ips", "none")
#: Predictions are clipped to this before the log loss (a calibrated 0 or 1 would be infinite).
_LOSS_EPS = 1e-4


def _fit(config: TrainConfig, X: np.ndarray, labels: LoggedLabels, rows: np.ndarray, weighting: Sequence[str],
         tier_targets: np.ndarray | None = None) -> Any:
    per_label = []
    for j in range(labels.m):
        sel, w = weights_for(labels, rows, j, weighting=weighting[j])
        per_label.append((rows[sel], labels.success[rows[sel]], w))
    head = make_head(config.head, **config.head_params)
    return head.fit_logged(X, per_label, tier_targets)


def _calibrate(method: str, p: np.ndarray, labels: LoggedLabels, rows: np.ndarray,
               weighting: Sequence[str]) -> list[dict]:
    out = []
    for j in range(labels.m):
        sel, w = weights_for(labels, rows, j, weighting=weighting[j])
        out.append(cal.fit_binary(method, p[rows[sel], j], labels.success[rows[sel]], w))
    return out


def _cross_fit(config: TrainConfig, X: np.ndarray, labels: LoggedLabels, folds: np.ndarray,
               weighting: Sequence[str], progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """(out-of-fold, cross-calibrated out-of-fold) success predictions, (n, m) each."""
    n = labels.n
    oof_s = np.zeros((n, labels.m), dtype=np.float32)
    for k in range(config.folds):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        oof_s[test] = _fit(config, X, labels, train, weighting).predict_proba(X[test])[0]
        progress.advance()
    cal_s = np.zeros_like(oof_s)
    for k in range(config.folds):
        test = folds == k
        params = _calibrate(config.calibration, oof_s, labels, np.flatnonzero(~test), weighting)
        cal_s[test] = np.column_stack([cal.apply_binary(c, oof_s[test, j]) for j, c in enumerate(params)])
    return oof_s, cal_s


def query_index(labels: LoggedLabels) -> np.ndarray:
    """(n,) the query each row observes, numbered in order of first appearance: a shadow row shares
    its primary's number; without ``queries`` every row is its own query."""
    keys = labels.queries if labels.queries is not None else labels.ids
    index: dict[str, int] = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def logged_fold_ids(labels: LoggedLabels, folds: int, seed: int) -> np.ndarray:
    """Fold per row, stratified by (label, success); the rows of one query (a primary and its
    shadow) share a fold, so no out-of-fold prediction comes from a head that saw the query."""
    strata = labels.label * 2 + labels.success
    queries = labels.queries
    if queries is None or len(set(queries)) == len(queries):
        return fold_ids(strata, folds, seed)
    group = query_index(labels)
    lead = np.zeros(int(group.max()) + 1, dtype=np.int64)  # a query's stratum: its first row's
    for i in range(len(group) - 1, -1, -1):
        lead[group[i]] = strata[i]
    return fold_ids(lead, folds, seed)[group]


def ips_log_loss(labels: LoggedLabels, p: np.ndarray, j: int) -> float:
    """Label j's log loss over all logged queries, estimated on its rows with the clipped IPS weights."""
    sel = labels.label == j
    y = labels.success[sel].astype(float)
    q = np.clip(np.asarray(p[sel, j], dtype=float), _LOSS_EPS, 1.0 - _LOSS_EPS)
    w = labels.weight[sel]
    return float(-(w * (y * np.log(q) + (1.0 - y) * np.log1p(-q))).sum() / w.sum())


def dr_outcomes(labels: LoggedLabels, reward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query index per row, (queries, m) doubly-robust outcome of every label on every query).

    ``G[q, j] = r(q, j) + sum over q's rows observing j of w * (success - r(q, j))``: the reward
    model's estimate corrected by the clipped inverse-propensity weighted residual of what was logged
    (a query's first call and its shadow call are two rows). ``reward`` is per row, (n, m); a query's
    rows share features and fold, so any of them gives its estimate."""
    group = query_index(labels)
    r = np.zeros((int(group.max()) + 1 if group.size else 0, labels.m))
    r[group] = np.asarray(reward, dtype=float)
    g = r.copy()
    np.add.at(g, (group, labels.label), labels.weight * (labels.success - r[group, labels.label]))
    return group, g


def ranking_value(gain: np.ndarray, outcomes: np.ndarray) -> float:
    """Doubly-robust area under the accuracy curve of a two-label ranking: queries sorted by ``gain``
    (descending) go to label 1 one by one; the mean over every share of the accuracy, less the
    all-on-label-0 accuracy (which every ranking shares). ``outcomes``: :func:`dr_outcomes`'s G."""
    n = len(gain)
    if n == 0:
        return 0.0
    order = np.argsort(-np.asarray(gain, dtype=float), kind="stable")
    position = np.empty(n)
    position[order] = np.arange(n)
    # query at position k is on label 1 in the shares (k+1)/n .. 1: a (n - k - 0.5)/n share of the curve
    return float(((outcomes[:, 1] - outcomes[:, 0]) * (n - position - 0.5) / n).sum() / n)


def _choose_by_ranking(labels: LoggedLabels, cal: Mapping[str, np.ndarray]) -> tuple[list[str], dict[str, Any]]:
    """The per-label weightings (one of ``cal``'s fits per label) whose calibrated gain ranks the
    logged queries best by :func:`ranking_value`; the reward model is the mean of the fits'
    cross-calibrated predictions, one for every combination so that they differ only in the ranking."""
    reward = np.mean(list(cal.values()), axis=0)
    group, outcomes = dr_outcomes(labels, reward)
    first = np.unique(group, return_index=True)[1]  # a row per query, in query order
    values = {}
    for combo in itertools.product(cal, repeat=2):
        p = np.column_stack([cal[wt][first, j] for j, wt in enumerate(combo)])
        values[combo] = ranking_value(p[:, 1] - p[:, 0], outcomes)
    # Ties (shadowing every query: a label's weights are all 1, its two fits coincide) keep IPS.
    best = max(values, key=lambda c: (round(values[c], 12), sum(wt == "ips" for wt in c)))
    return list(best), {
        "rule": "doubly-robust value of the calibrated gain's ranking (probes.bandit_training.ranking_value)",
        "queries": int(len(first)),
        "values": {"/".join(c): round(v, 6) for c, v in values.items()},
        "chosen": "/".join(best)}


def describe_weighting(logged: Mapping[str, Any]) -> str:
    """One line for people: which fit each label got and why, from a trained probe's ``logged`` block
    (its card's ``training_data.logged``, ``triage learn``'s ``training``): with a ranking choice, the
    doubly-robust value of each combination."""
    per_label = logged.get("weighting") or {}
    chosen = ", ".join(f"{name} {v['chosen']}" for name, v in per_label.items())
    selection = logged.get("weighting_selection")
    if selection:
        chosen_pair = selection["chosen"]
        values = ", ".join(f"{pair} {value:.4f}" + (" (chosen)" if pair == chosen_pair else "")
                           for pair, value in selection["values"].items())
        return (f"weighting per label: {chosen}; chosen as the pair whose gain ranks the {selection['queries']:,} logged "
                f"queries best, doubly-robust ranking value of each pair (weighting of {' then '.join(per_label)}): {values}")
    if per_label and all(len(v["ips_weighted_log_loss"]) > 1 for v in per_label.values()):
        losses = "; ".join(f"{name} " + ", ".join(f"{wt} {loss:.4f}" for wt, loss in v["ips_weighted_log_loss"].items())
                           for name, v in per_label.items())
        return f"weighting per label: {chosen}; chosen per label by the lower IPS-weighted cross-fitted log loss: {losses}"
    return f"weighting per label: {chosen}"


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
    weighting: str = "auto",
    data_name: str = "logged",
) -> TrainedProbe:
    """Fit a probe on logged rows (see the module docstring). ``weighting="none"`` is the naive fit
    (biased whenever the logging policy chose by something the features do not see), ``"ips"``
    always weights, ``"auto"`` chooses (module docstring)."""
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
    folds = logged_fold_ids(labels, config.folds, config.seed)
    tried = ("ips", "none") if weighting == "auto" else (weighting,)
    fits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for wt in tried:
        progress.start(f"cross-fitting {config.head} on logged rows ({config.folds} folds, {wt} weights)",
                       config.folds)
        fits[wt] = _cross_fit(config, X, labels, folds, [wt] * m, progress)
    losses = [{wt: ips_log_loss(labels, fits[wt][1], j) for wt in tried} for j in range(m)]
    selection: dict[str, Any] = {}
    if m == 2 and len(tried) > 1:
        chosen, selection = _choose_by_ranking(labels, {wt: cal for wt, (_, cal) in fits.items()})
    else:  # Ties (uniform logging: the two fits coincide) keep the IPS fit, the unbiased one.
        chosen = [min(tried, key=lambda wt, j=j: (losses[j][wt], wt != "ips")) for j in range(m)]
    oof_s = np.column_stack([fits[chosen[j]][0][:, j] for j in range(m)]).astype(np.float32)
    cal_s = np.column_stack([fits[chosen[j]][1][:, j] for j in range(m)]).astype(np.float32)
    everything = np.arange(n)
    method = config.calibration
    calibration = {"method": method, "success": _calibrate(method, oof_s, labels, everything, chosen),
                   "tier": {"method": "none"}}
    tier_targets = tier_from_success(cal_s, labels.rule.easy_candidates)
    progress.start("final fit on all logged rows", 1)
    head = _fit(config, X, labels, everything, chosen, tier_targets)
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
    logged = {**weighting_summary(labels, weighting), "rows": n, "labels": labels.summary(),
              "weighting": {c: {"chosen": chosen[j], "ips_weighted_log_loss": {k: round(v, 5) for k, v in losses[j].items()}}
                            for j, c in enumerate(labels.candidates)}}
    if selection:
        logged["weighting_selection"] = selection
    return TrainedProbe(config=config, features=feats, labels=probe_labels, head=head, calibration=calibration,
                        metrics=metrics, oof_success=cal_s, oof_tier=tier_targets, X=X, data_name=data_name,
                        logged=logged, training_rows=training_rows_block(labels.texts))
