"""How the learning-loop bench (eval/bench/learning_loop.py) scores a round: a policy's true value from
every outcome, the off-policy report against it, routers' AIQ on the test split with paired bootstrap
replicates, the gain share over random and its goal test, and the full-information comparators (the
matched probe and the label-volume curve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from triage.eval.learn import DEFAULT_FEATURES
from triage.replay.schema import ReplayRecord

#: The full-information comparators' features: the ones `triage learn` trains the bandit's probe on
#: when the policy starts from the default probe, so the two are matched.
FEATURES = DEFAULT_FEATURES


def policy_value(policy_path: Path, records: list[ReplayRecord]) -> dict[str, float]:
    """True accuracy and cost per query of the policy, exploration included, from every outcome."""
    from triage.policies.decide import action_distribution
    from triage.policies.loader import load_policy
    from triage.router.core.messages import probe_text
    from triage.router.core.probing import ProbeRunner

    policy = load_policy(policy_path)
    runner = ProbeRunner(policy, str(policy_path))
    outs = []
    for lo in range(0, len(records), 64):
        outs.extend(runner.predict_many([probe_text(r.messages()) for r in records[lo:lo + 64]]))
    acc, cost = [], []
    for rec, out in zip(records, outs, strict=True):
        dist = action_distribution(policy, out)
        oc = {a: rec.outcomes[policy.strategies[a].candidate] for a in dist}
        acc.append(sum(p * oc[a].score for a, p in dist.items()))
        cost.append(sum(p * (oc[a].cost_usd or 0.0) for a, p in dist.items()))
    return {"accuracy": float(np.mean(acc)), "cost": float(np.mean(cost))}


def covers(ci: Any, truth: float) -> bool:
    return bool(ci and ci[0] is not None and ci[1] is not None and ci[0] <= truth <= ci[1])


def ope_figures(res: Any, truth_test: dict[str, float], truth_logged: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"ess": res.ope_new.get("ess"), "n": res.ope_new.get("n")}
    for metric in ("accuracy", "cost"):
        per = {}
        for est, v in res.ope_new["estimators"].items():
            e = v[metric]
            per[est] = {"value": e["value"], "ci": e["ci"]}
        dr_ci = per.get("dr", {}).get("ci")
        out[metric] = {**per, "true_test": truth_test[metric], "true_logged_holdout": truth_logged[metric],
                       "dr_covers_test": covers(dr_ci, truth_test[metric]),
                       "dr_covers_logged_holdout": covers(dr_ci, truth_logged[metric])}
    return out


N_BOOT = 1000


def router_figures(data: Any, specs: list[str],
                   n_boot: int = N_BOOT) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Every router's and baseline's curve metrics on the test rows (split protocol: fit on train),
    and each one's AIQ bootstrap replicates (paired: the same resampled test rows for all)."""
    from triage.eval.evaluation import evaluate

    # 95% bootstrap intervals over the test rows: how far apart AIQs must be to mean anything - the
    # full-information router's gain over random is ~0.02-0.06 AIQ.
    res = evaluate(data, specs, n_boot=n_boot, protocol="split")
    keep = ("aiq", "aiq_ci", "apgr", "cost_ratio_at_best_accuracy", "accuracy", "cost")
    figs, reps = {}, {}
    for key, r in res.routers.items():
        m = r.metrics
        figs[key] = {k: m.get(k) for k in keep if k in m}
        figs[key].setdefault("aiq", m.get("aiq"))
        reps[key] = r.replicates.get("aiq", np.zeros(0))
    return figs, reps


def gain_share(aiq: float | None, random_aiq: float | None, full_aiq: float | None) -> float | None:
    if aiq is None or random_aiq is None or full_aiq is None or full_aiq <= random_aiq:
        return None
    return (aiq - random_aiq) / (full_aiq - random_aiq)


def gain_share_test(aiq_b: np.ndarray, random_b: np.ndarray, full_b: np.ndarray, goal: float = 0.9) -> dict[str, Any]:
    """Paired bootstrap of the gain share (the same resampled test rows for the three routers).

    ``ci``: 95% percentile interval of the share, over the replicates where the full-information
    router beats random at all (the share is undefined elsewhere; their fraction is reported).
    ``goal_margin_ci``: interval of AIQ - (random + goal x (full - random)), linear, so defined on
    every replicate: above 0 the goal is met, below 0 missed, straddling 0 the test rows cannot tell.
    """
    from triage.eval.metrics.bootstrap import percentile_interval

    if not (aiq_b.size and aiq_b.size == random_b.size == full_b.size):
        return {}
    den = full_b - random_b
    ok = den > 0
    share = np.where(ok, (aiq_b - random_b) / np.where(ok, den, 1.0), np.nan)
    margin = aiq_b - (random_b + goal * den)
    interval = percentile_interval(margin)
    if interval is None:
        return {}
    lo, hi = interval
    verdict = "met" if lo > 0 else "missed" if hi < 0 else "undecided"
    return {"ci": percentile_interval(share), "undefined_share": round(float(1.0 - ok.mean()), 4),
            "goal_margin_ci": [lo, hi], "goal_verdict_on_test_rows": verdict, "n_boot": int(aiq_b.size)}


#: Shares of the train queries (every outcome known) the label-volume curve trains on, and its draws.
CURVE_FRACTIONS = (0.15, 0.35, 0.5, 0.7)
CURVE_SEEDS = 3


def full_information_spec(C: str) -> str:
    """The full-information router: ``probe-text`` on the same features and head as the bandit's probe."""
    return f"probe-text:features={FEATURES},C={C}"


def matched_config(C: str, seed: int, n_boot: int) -> tuple[list[Any], Any]:
    """(features, TrainConfig) of the pipeline `triage learn` runs on logged rows - features, head, C,
    3 folds - for the probes compared with the bandit's, so that they differ only in their labels."""
    from triage.eval.learn import logreg_head
    from triage.probes.training import TrainConfig, parse_features

    feats = parse_features(FEATURES)
    head, params = logreg_head(C, seed)
    return feats, TrainConfig(features=[f.name for f in feats], head=head, head_params=params, folds=3, seed=seed,
                              n_boot=n_boot)


def full_information_probe(train: list[ReplayRecord], candidates: list[str], out: Path, C: str, seed: int) -> Path:
    """A probe trained on the train split with every candidate's outcome by the pipeline `triage learn`
    runs on logged rows (features, head, C, 3 folds, Platt calibration): the bandit probe's matched
    comparator, scored with and without its calibration like the bandit probe."""
    from triage.probes.export import export_probe
    from triage.probes.training import train_probe
    from triage.replay import ReplayData

    feats, config = matched_config(C, seed, n_boot=100)
    data = ReplayData.from_records([r.model_copy(update={"split": "train"}) for r in train],
                                   candidates=candidates, name="full-information")
    export_probe(train_probe(data, config, features=feats), out, command="eval/bench/learning_loop.py", plot=False)
    return out


def label_volume_curve(train: list[ReplayRecord], test: list[ReplayRecord], candidates: list[str], name: str,
                       random_aiq: float, full_aiq: float, C: str = "0.02") -> dict[str, Any]:
    """The full-information router trained on a random share of the train queries (every outcome of
    each), scored on the same test rows: how its gain share grows with labelled queries. The bandit's
    logged data has one outcome per query, so it holds about half of the full-information labels
    with two strategies (fewer for the arm the greedy policy seldom picks); this curve says where
    that label volume alone puts a router, whatever the bandit machinery does."""
    from triage.replay import ReplayData

    spec = full_information_spec(C)
    test_rows = [r.model_copy(update={"split": "test"}) for r in test]
    curve = {}
    for frac in CURVE_FRACTIONS:
        shares = []
        for seed in range(CURVE_SEEDS):
            pick = np.random.default_rng(seed).choice(len(train), round(frac * len(train)), replace=False)
            rows = [train[i].model_copy(update={"split": "train"}) for i in sorted(pick)] + test_rows
            data = ReplayData.from_records(rows, candidates=candidates, name=f"{name}-{frac}-{seed}")
            figs, _ = router_figures(data, [spec], n_boot=0)
            shares.append(gain_share(figs[spec]["aiq"], random_aiq, full_aiq))
        known = [x for x in shares if x is not None]
        curve[f"{frac:g}"] = {"train_queries": round(frac * len(train)), "gain_share_per_draw": shares,
                              "gain_share_mean": float(np.mean(known)) if known else None}
    return curve
