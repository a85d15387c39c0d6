"""Benchmark: tokens saved at equal accuracy by difficulty-aware token budgets (``tier-budget``)
against the best uniform cap for the same model (issue #14; DiffAdapt reports 22%).

Datasets: the pricing-reversal sets (AIME, GPQA, LiveMathBench, SimpleQA: completion tokens with
reasoning logged per query) and RouteLLM GSM8K, imported from ``--data-dir`` unless replay files
are given. Each runs through :func:`triage.eval.evaluation.evaluate` (5-fold cross-fitting, paired
bootstrap), exactly as ``triage replay evaluate FILE -r tier-budget`` does, with three routers:

* ``tier-budget``: caps from the probe's predicted tier (the headline; default point r = 0.95);
* ``tier-budget:tiers=1``: one cap chosen on the training rows the same way (learned uniform cap);
* ``tier-budget:oracle=true``: tiers from the held-out rows' true need, the ceiling of the scheme.

Per dataset: the model (the most accurate candidate), tokens saved at the default point against
the best uniform cap at equal accuracy with its 95% interval, both accuracies, the uniform cap,
the completion tokens of both, the share truncated, n, the same figure for the two controls, and
the saving at every knob value. Truncated answers count as wrong (the rule is in the output).

    python eval/bench/tier_budgets.py --json [FILE.jsonl ...] [--data-dir DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

RESULTS = Path(__file__).resolve().parent / "results" / "tier_budgets.json"
DATASETS = (("pricing-reversal", "aime-hybrid"), ("pricing-reversal", "gpqa-test"),
            ("pricing-reversal", "livemathbench-test"), ("pricing-reversal", "simpleqa-test"),
            ("routellm", "gsm8k"))
ROUTERS = ("tier-budget", "tier-budget:tiers=1", "tier-budget:oracle=true")
GOAL = 0.20


def _load(args: argparse.Namespace) -> list[Any]:
    from triage.eval.importers import import_source

    from triage.replay import ReplayData, read_replay

    if args.files:
        return [ReplayData.from_records(read_replay(p), name=Path(p).stem) for p in args.files]
    out = []
    for source, name in DATASETS:
        records = import_source(source, Path(args.data_dir) / source, dataset=name)
        out.append(ReplayData.from_records(records, name=name))
    return out


def _r(x: Any, nd: int = 4) -> Any:
    if isinstance(x, list):
        return [_r(v, nd) for v in x]
    return round(x, nd) if isinstance(x, float) else x


def summarize(result: Any) -> dict[str, Any]:
    """The per-dataset figures of one :class:`EvaluationResult` holding the three routers."""
    main = result.routers["tier-budget"].metrics["budget"]
    d = main["default"]
    row: dict[str, Any] = {
        "dataset": result.dataset, "n": main["n"], "model": main["model"], "rule": main["rule"],
        "uncapped_accuracy": _r(main["uncapped"]["accuracy"]),
        "uncapped_mean_completion_tokens": _r(main["uncapped"]["mean_completion_tokens"], 1),
        "knob_accuracy_kept": d["knob"],
        "tokens_saved": _r(d["tokens_saved"]), "tokens_saved_ci": _r(d["tokens_saved_ci"]),
        "goal_met": d["tokens_saved"] is not None and d["tokens_saved"] >= GOAL,
        "accuracy_tier": _r(d["accuracy"]), "accuracy_uniform": _r(d["uniform_accuracy"]),
        "uniform_cap": d["uniform_cap"],
        "mean_completion_tokens_tier": _r(d["mean_completion_tokens"], 1),
        "mean_completion_tokens_uniform": _r(d["uniform_mean_completion_tokens"], 1),
        "truncated_share_tier": _r(d["truncated"]),
        "caps_at_default": main["caps_at_default"] if len(main["caps_at_default"]) <= 20 else "many",
        "saved_by_knob": {f"{p['knob']:g}": [_r(p["accuracy"]), _r(p["tokens_saved"])] for p in main["curve"]},
    }
    for spec, key in (("tier-budget:tiers=1", "learned_uniform"), ("tier-budget:oracle=true", "oracle_tiers")):
        b = result.routers[spec].metrics["budget"]["default"]
        row[key] = {"tokens_saved": _r(b["tokens_saved"]), "tokens_saved_ci": _r(b["tokens_saved_ci"]),
                    "accuracy": _r(b["accuracy"]), "mean_completion_tokens": _r(b["mean_completion_tokens"], 1)}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="Replay files (default: import the five datasets from --data-dir).")
    ap.add_argument("--data-dir", default=None, help="Shared data folder (default: the settings' data_dir).")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="Print one JSON document per dataset.")
    ap.add_argument("--no-write", action="store_true", help=f"Do not write {RESULTS.name}.")
    args = ap.parse_args(argv)
    if args.data_dir is None:
        from triage.settings import get_settings

        args.data_dir = str(get_settings().data_dir)
    from triage.eval.evaluation import evaluate
    from triage.eval.metrics.budget import TRUNCATION_RULE

    rows = []
    for data in _load(args):
        t0 = time.perf_counter()
        result = evaluate(data, list(ROUTERS), folds=args.folds, seed=args.seed, n_boot=args.bootstrap)
        row = summarize(result)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            ci = row["tokens_saved_ci"] or [None, None]
            print(f"{row['dataset']:<20} {row['model']:<28} n={row['n']:<5} saved {row['tokens_saved']:+.1%} "
                  f"[{ci[0]:+.1%}, {ci[1]:+.1%}] acc {row['accuracy_tier']:.3f} vs uniform cap "
                  f"{row['uniform_cap']:.0f} ({row['accuracy_uniform']:.3f})", flush=True)
    doc = {
        "command": " ".join(["python eval/bench/tier_budgets.py --json", *args.files]),
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "rule": TRUNCATION_RULE, "metric": "tokens saved = 1 - completion tokens of tier-budget / those of the "
        "cheapest uniform cap reaching its accuracy on the same queries (eval/metrics/budget.py)",
        "goal": f"tokens saved >= {GOAL:.0%} on every dataset", "folds": args.folds, "seed": args.seed,
        "bootstrap": args.bootstrap, "routers": list(ROUTERS), "datasets": rows,
    }
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"rule": TRUNCATION_RULE, "goal_met": {r["dataset"]: r["goal_met"] for r in rows}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
