"""A cascade against query-only routing at equal cost, on one replay file (paired bootstrap).

    python -m triage.eval.cascade_compare eval/data/gsm8k_local_pair.jsonl [--json]

``triage replay evaluate`` reports each router's curve and APGR, but APGR integrates over the share
of calls to the strong model, and a cascade pays the weak call on every query: at the same strong
share it costs more. This compares on the cost axis instead: for each operating point ``k`` of the
cascade (escalation share ``s_k``, mean cost ``C_k``) the query-only router's accuracy at the same
mean cost, read off its curve by linear interpolation (mixing two adjacent operating points at
random reaches every point of the chord); above the query-only router's dearest point its best
accuracy at or under that cost. Both routers are cross-fitted on the same folds and scored on the
same queries; each bootstrap replicate resamples queries once for both, re-reads both curves and
takes the difference, so the intervals are paired. Also reported: each router's AUROC at telling a
wrong small-model answer from a right one (held-out scores), the direct test of the signal.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from triage.eval.evaluation.outcomes import OutcomeTable, RoutedOutcomes
from triage.eval.evaluation.protocol import make_protocol, run_router
from triage.eval.metrics.bootstrap import Bootstrap, percentile_interval
from triage.eval.metrics.cost import cost_axis
from triage.eval.routers.base import make_router

from triage.replay.io import read_replay
from triage.replay.matrix import ReplayData


def accuracy_at_cost(cost: np.ndarray, acc: np.ndarray, level: float) -> float:
    """Accuracy of a curve (operating points ``cost``/``acc``) at mean cost ``level``: linear between
    the points around it, the best accuracy at or under ``level`` above the dearest point, NaN below
    the cheapest."""
    order = np.argsort(cost, kind="stable")
    c, a = cost[order], acc[order]
    if level < c[0] - 1e-12:
        return float("nan")
    if level >= c[-1]:
        return float(a.max())
    return float(np.interp(level, c, a))


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC by ranks (ties share their mean rank); NaN without both classes."""
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        return float("nan")
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    for v in np.unique(score):  # mid-ranks for ties
        tie = score == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def _held_out_fail_scores(spec: str, data: ReplayData, proto: Any, small: int) -> np.ndarray | None:
    """Cross-fitted P(small answer wrong) of a router on ``proto.eval_rows`` (in that order), or its
    escalation score; None for a router with neither."""
    router = make_router(spec)
    position = np.full(data.n, -1, dtype=np.int64)
    position[proto.eval_rows] = np.arange(len(proto.eval_rows))
    out = np.full(len(proto.eval_rows), np.nan)
    for train, test in proto.folds:
        fitted = copy.deepcopy(router).fit(data, train)
        if hasattr(fitted, "p_fail"):
            out[position[test]] = fitted.p_fail(data, test)
        elif hasattr(fitted, "predict_success"):  # a ProbabilisticRouter: P(success) per candidate
            out[position[test]] = 1.0 - fitted.predict_success(data, test)[:, small]
        elif isinstance(getattr(fitted, "score", None), str):  # threshold: higher score, dearer model
            from triage.eval.routers.threshold import query_scores

            out[position[test]] = query_scores(data, test, fitted.score)
        else:
            return None
    return out


def compare(data: ReplayData, *, query_only: str = "probe-text", cascade: str = "cascade-uncertainty",
            folds: int = 5, seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """The equal-cost comparison of ``cascade`` against ``query_only`` (see the module docstring)."""
    full = data.complete()
    proto = make_protocol(full, folds=folds, seed=seed, kind="kfold")
    rows = proto.eval_rows
    axis = cost_axis(full)
    table = OutcomeTable.build(full, axis, rows)
    boot = Bootstrap(len(rows), n_boot=n_boot, seed=seed)
    routed = {}
    for key, spec in (("cascade", cascade), ("query_only", query_only)):
        routed[key] = RoutedOutcomes.of(table, run_router(make_router(spec), full, proto))
    cas, qo = routed["cascade"], routed["query_only"]
    small = int(cas.sweep.paid_first) if cas.sweep.paid_first is not None else 0

    def curves(out: RoutedOutcomes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        acc, cost = out.means["score"], out.means["cost"]
        if boot.n_boot == 0:
            return acc, cost, np.zeros((0, len(acc))), np.zeros((0, len(acc)))
        return acc, cost, boot.replicate_means(out.curve["score"]), boot.replicate_means(out.curve["cost"])

    ca, cc, ca_b, cc_b = curves(cas)
    qa, qc, qa_b, qc_b = curves(qo)
    points, diffs_b = [], []
    for k, share in enumerate(cas.sweep.knobs):
        level = float(cc[k])
        q_at = accuracy_at_cost(qc, qa, level)
        d_b = np.array([ca_b[b, k] - accuracy_at_cost(qc_b[b], qa_b[b], cc_b[b, k]) for b in range(boot.n_boot)])
        diffs_b.append(d_b)
        points.append({"escalation_share": float(share), "cost": level, "cascade_accuracy": float(ca[k]),
                       "query_only_accuracy_at_cost": q_at, "difference": float(ca[k] - q_at),
                       "difference_ci": percentile_interval(d_b) if boot.n_boot else None})
    # the summary: mean difference over cascade points no dearer than the query-only router's dearest
    inside = [k for k in range(len(points)) if cc[k] <= qc.max() + 1e-12]
    mean_d = float(np.mean([points[k]["difference"] for k in inside])) if inside else None
    mean_d_b = np.nanmean(np.stack([diffs_b[k] for k in inside]), axis=0) if inside and boot.n_boot else None
    fails = (table.mats["score"][small] < 0.5).astype(np.int8)
    auroc = {}
    for key, spec in (("cascade", cascade), ("query_only", query_only)):
        s = _held_out_fail_scores(spec, full, proto, small)
        if s is None:
            auroc[key] = {"auroc": None, "ci": None}
            continue
        reps = []
        for b in range(min(boot.n_boot, 1000)):
            idx = np.repeat(np.arange(len(rows)), boot.weights[b].astype(np.int64)) if boot.n_units == len(rows) else None
            if idx is not None:
                reps.append(_auroc(fails[idx], s[idx]))
        auroc[key] = {"auroc": _auroc(fails, s), "ci": percentile_interval(np.array(reps)) if reps else None}
    return {
        "dataset": data.name, "n": len(rows), "cost_unit": axis.unit, "folds": folds, "seed": seed,
        "n_boot": boot.n_boot, "cascade": cascade, "query_only": query_only,
        "candidates": {c: {"accuracy": float(table.mats["score"][j].mean()), "mean_cost": float(table.mats["cost"][j].mean())}
                       for j, c in enumerate(full.candidates)},
        "small": full.candidates[small], "small_failure_rate": float(fails.mean()),
        "points": points,
        "mean_difference_within_query_only_cost_range": mean_d,
        "mean_difference_ci": percentile_interval(mean_d_b) if mean_d_b is not None else None,
        "cascade_points_in_range": len(inside),
        "small_failure_auroc": auroc,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.eval.cascade_compare", description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--query-only", default="probe-text")
    ap.add_argument("--cascade", default="cascade-uncertainty")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    data = ReplayData.from_records(read_replay(args.data), name=args.data.stem)
    res = compare(data, query_only=args.query_only, cascade=args.cascade, folds=args.folds, seed=args.seed,
                  n_boot=args.bootstrap)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['dataset']}: n={res['n']}, cost in {res['cost_unit']}; small {res['small']} fails "
          f"{res['small_failure_rate']:.2f}")
    for c, v in res["candidates"].items():
        print(f"  {c}: accuracy {v['accuracy']:.3f}, mean cost {v['mean_cost']:.3g}")
    print("  share  cost        cascade  query-only@cost  diff  [95% CI]")
    for p in res["points"]:
        ci = p["difference_ci"] or [float("nan")] * 2
        print(f"  {p['escalation_share']:.2f}   {p['cost']:.4g}  {p['cascade_accuracy']:.3f}    "
              f"{p['query_only_accuracy_at_cost']:.3f}            {p['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    ci = res["mean_difference_ci"] or [float("nan")] * 2
    md = res["mean_difference_within_query_only_cost_range"]
    print(f"  mean difference over {res['cascade_points_in_range']} points within the query-only cost range: "
          f"{md if md is None else f'{md:+.3f}'} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    for key, v in res["small_failure_auroc"].items():
        if v["auroc"] is None:
            continue
        vci = v["ci"] or [float("nan")] * 2
        print(f"  AUROC, small-model failure, {key}: {v['auroc']:.3f} [{vci[0]:.3f}, {vci[1]:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
