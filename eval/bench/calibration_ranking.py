"""Benchmark: what a probe's per-label calibration does to the routing it ranks (issues #14, #15).

A probe's head gives P(success) per candidate; ``triage probe train`` / ``triage learn`` then fit a
calibrator per label on out-of-fold predictions (Platt by default). Each calibrator is monotone for
its own label, but a two-model router ranks queries by the gain ``p_dear - p_cheap``, and two
different per-label maps can reorder that difference. This measures, with every outcome known,
the AIQ of the same head ranked by its raw P(success) and by each calibration on held-out rows.

Per pair: the learning-loop bench's train/test split (``learning_loop_data.load``: RouterBench its own
split, SimpleQA a seed-0 70/30 draw); features ``text:aux=false``, logistic head C=0.02 fitted on the
train rows; calibrators fitted on 5-fold out-of-fold predictions of the train rows (as training
does); AIQ of the two-model sweep on the test rows, with the paired bootstrap delta against the raw
head (1,000 resamples of the test rows). Methods: the product's ``platt``, ``temperature``,
``isotonic`` (:mod:`triage.probes.calibration`) and ``platt-shared`` (measured here only: one
slope for every label, an intercept per label). Pairs: the learning-loop pair of each data set
(cheapest model vs the most accurate, on train) and others spanning cheap/strong gaps, fixed before
any figure was read.

    python eval/bench/calibration_ranking.py --json     # ~3 min on 2 cores with warm feature caches
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triage.eval.bench.learning_loop_data import load, pick_pair
from triage.eval.bench.learning_loop_scoring import FEATURES
from triage.eval.bench.probe_alternatives import write_result
from triage.eval.routers.probe_text import ProbeFeatureRouter
# The product's Platt transform (same clipping), so that platt-shared differs from platt only in its slope.
from triage.probes.calibration import logit, sigmoid

RESULTS = Path(__file__).parent / "results" / "calibration_ranking.json"
C = 0.02
FOLDS = 5
METHODS = ("platt", "temperature", "isotonic", "platt-shared")
#: (data set, cheap, dear); None: the learning-loop pair.
PAIRS = (
    ("routerbench", None, None),
    ("routerbench", "gpt-3.5-turbo-1106", "gpt-4-1106-preview"),
    ("routerbench", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"),
    ("routerbench", "mistralai/mistral-7b-chat", "zero-one-ai/Yi-34B-Chat"),
    ("routerbench", "claude-instant-v1", "claude-v1"),
    ("simpleqa", None, None),
    ("simpleqa", "gemini-3-flash-preview", "gemini-3.1-pro-preview"),
    ("simpleqa", "gpt-5-mini", "gpt-5.2-high"),
    ("simpleqa", "MiniMax-M2.5", "claude-opus-4.6-thinking"),
)


class FixedScores(ProbeFeatureRouter):
    """The two-model sweep over precomputed P(success) (rows x data candidates)."""

    def __init__(self, name: str, success: np.ndarray) -> None:
        super().__init__()
        self.name = name
        self.success = success

    def fit(self, data: Any, train: np.ndarray) -> "FixedScores":
        super(ProbeFeatureRouter, self).fit(data, train)  # the candidates' training costs only
        return self

    def predict_success(self, data: Any, rows: np.ndarray) -> np.ndarray:
        return self.success[np.asarray(rows, dtype=np.int64)]


def shared_platt(oof: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """One slope for every label, one intercept per label, by the summed log loss."""
    from scipy.optimize import minimize

    z = logit(oof)

    def nll(params: np.ndarray) -> float:
        q = np.clip(sigmoid(params[0] * z + params[1:]), 1e-6, 1 - 1e-6)
        return float(-(y * np.log(q) + (1 - y) * np.log1p(-q)).mean())

    res = minimize(nll, x0=np.r_[1.0, np.zeros(y.shape[1])], method="L-BFGS-B")
    return float(res.x[0]), res.x[1:]


def calibrated(method: str, oof: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    from triage.probes import calibration as cal

    if method == "platt-shared":
        a, b = shared_platt(oof, y)
        return sigmoid(a * logit(p) + b)
    return np.column_stack([cal.apply_binary(cal.fit_binary(method, oof[:, j], y[:, j]), p[:, j])
                            for j in range(y.shape[1])])


def run_pair(dataset: str, cheap: str | None, dear: str | None, n_boot: int) -> dict[str, Any]:
    from triage.eval.evaluation import evaluate
    from triage.probes.heads.base import make_head
    from triage.probes.training import TrainConfig, cross_fit, feature_matrix, fold_ids, parse_features
    from triage.replay import ReplayData

    train, test = load(dataset)
    if cheap is None or dear is None:
        cheap, dear = pick_pair(train)
    rows = [r.model_copy(update={"split": "train"}) for r in train] + \
        [r.model_copy(update={"split": "test"}) for r in test]
    data = ReplayData.from_records(rows, candidates=[cheap, dear], name=f"{dataset}:{cheap}|{dear}")
    tr = np.flatnonzero(np.asarray(data.splits) == "train")
    te = np.flatnonzero(np.asarray(data.splits) == "test")
    X = feature_matrix(parse_features(FEATURES), list(data.texts))
    y = (data.score >= 0.5).astype(np.int8)
    tier = np.where(y[:, 0] == 1, 0, np.where(y[:, 1] == 1, 1, 2)).astype(np.int8)  # fold strata only
    config = TrainConfig(head="logreg", head_params={"C": C}, folds=FOLDS)
    oof, _ = cross_fit(config, X[tr], y[tr], tier[tr], fold_ids(tier[tr], FOLDS, 0))
    p = np.zeros(y.shape)
    p[te] = make_head("logreg", C=C).fit(X[tr], y[tr], tier[tr]).predict_proba(X[te])[0]
    scores = {"raw": p}
    for method in METHODS:
        q = np.zeros(y.shape)
        q[te] = calibrated(method, oof, y[tr].astype(float), p[te])
        scores[method] = q
    res = evaluate(data, [FixedScores(k, v) for k, v in scores.items()], n_boot=n_boot, protocol="split")
    rand = res.routers["random"].metrics["aiq"]
    raw_b = res.routers["raw"].replicates["aiq"]
    out: dict[str, Any] = {"dataset": dataset, "cheap": cheap, "dear": dear, "train_rows": int(tr.size),
                           "test_rows": int(te.size), "random_aiq": round(rand, 4)}
    for key in scores:
        r = res.routers[key]
        row = {"aiq": round(r.metrics["aiq"], 4), "gain_over_random": round(r.metrics["aiq"] - rand, 4)}
        if key != "raw":
            d = r.replicates["aiq"] - raw_b
            row["delta_vs_raw"] = round(r.metrics["aiq"] - res.routers["raw"].metrics["aiq"], 4)
            row["delta_vs_raw_ci"] = [round(float(np.percentile(d, q)), 4) for q in (2.5, 97.5)]
        out[key] = row
    print(f"[{dataset}] {cheap} | {dear}: raw {out['raw']['aiq']}, platt {out['platt']['delta_vs_raw']:+.4f} "
          f"{out['platt']['delta_vs_raw_ci']}", file=sys.stderr)
    return out


def summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean AIQ delta against the raw head over the pairs, and how many were lower."""
    out = {}
    for method in METHODS:
        deltas = [p[method]["delta_vs_raw"] for p in pairs]
        out[method] = {"mean_delta_vs_raw": round(float(np.mean(deltas)), 4),
                       "pairs_lower": sum(d < 0 for d in deltas), "pairs": len(deltas),
                       "pairs_interval_excludes_0": sum(p[method]["delta_vs_raw_ci"][1] < 0
                                                        or p[method]["delta_vs_raw_ci"][0] > 0 for p in pairs)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pairs = [run_pair(d, c, s, args.bootstrap) for d, c, s in PAIRS]
    result = {"benchmark": "calibration_ranking", "features": FEATURES, "C": C, "folds": FOLDS,
              "n_boot": args.bootstrap, "summary": summary(pairs), "pairs": pairs}
    return write_result(args.out, result, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
