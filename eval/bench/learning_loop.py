"""The learning loop, measured (issue #15): simulate traffic with exploration, `triage learn --apply`, repeat.

For each dataset - the shared RouterBench subset (its own train/test files) and pricing-reversal
SimpleQA (no split in the data: a fixed 70/30 split by a seeded draw) - a two-strategy policy
(cheap model for the easy tier, the most accurate model otherwise; epsilon-greedy exploration 0.2,
prompts stored) starts from the default probe. Each round routes the next chunk of the train split
as traffic into a real SQLite ledger (`triage.eval.simulate`: only the chosen outcome is revealed)
and runs `triage.eval.learn` with `apply=True` (objective: 95% of the best strategy's accuracy; when
that is refused as degenerate or unreachable, tier shares 0.5/0.25/0.25). Per round it reports:

* AIQ and cost ratio at best-single accuracy of the applied policy on the TEST split, with every
  candidate's true outcome (``triage.eval.evaluation.evaluate``, the policy swept over thresholds);
* the off-policy estimates (IPS, SNIPS, DR, 95% bootstrap intervals) of the new policy's accuracy on
  the held-out logged queries (learn's 30% holdout), the true value there (full information: sum over strategies of
  pi(a|x) x score, exploration included) and whether each interval covers it;
* exploration cost: the chosen strategies' cost minus the greedy choice's on the same queries.

Finally the gap to a probe trained on full-information labels of the same train rows, as a share
of the full-information router's AIQ gain over random. Subsampling (for ~10 min on 2 cores): at most
``--train`` train rows (in file order for RouterBench, the seeded order for SimpleQA) split into
``--rounds`` rounds, and ``--test`` test rows drawn with seed 0.

    python eval/bench/learning_loop.py --json [--rounds 3 --train 1500 --test 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from triage.replay.schema import ReplayRecord

RESULTS = Path(__file__).parent / "results" / "learning_loop.json"
FEATURES = "text:aux=false"
EPSILON = 0.2


def load(name: str) -> tuple[list[ReplayRecord], list[ReplayRecord]]:
    """(train, test) records of a dataset, full information only."""
    from triage.eval.importers import import_source
    from triage.settings import get_settings

    root = get_settings().data_dir
    if name == "routerbench":
        recs = import_source("routerbench", root / "routerbench-subset")
        every = set().union(*(set(r.outcomes) for r in recs))
        recs = [r for r in recs if set(r.outcomes) == every]  # drops the split ARC duplicate rows
        return [r for r in recs if r.split == "train"], [r for r in recs if r.split == "test"]
    recs = import_source("pricing-reversal", root / "pricing-reversal", dataset="simpleqa-test")
    every = set().union(*(set(r.outcomes) for r in recs))
    recs = [r for r in recs if set(r.outcomes) == every]  # claude-opus lacks 16 queries
    rng = np.random.default_rng(0)
    order = rng.permutation(len(recs))
    is_test = rng.random(len(recs)) < 0.3
    train = [recs[i].model_copy(update={"split": "train"}) for i in order if not is_test[i]]
    test = [recs[i].model_copy(update={"split": "test"}) for i in order if is_test[i]]
    return train, test


def pick_pair(train: list[ReplayRecord]) -> tuple[str, str]:
    """(cheap, strong): the most accurate candidate on train, and the cheapest of the others."""
    cands = sorted(set.intersection(*(set(r.outcomes) for r in train)))
    acc = {c: np.mean([r.outcomes[c].score for r in train]) for c in cands}
    cost = {c: np.mean([r.outcomes[c].cost_usd or 0.0 for r in train]) for c in cands}
    strong = max(cands, key=lambda c: (acc[c], -cost[c]))
    cheap = min((c for c in cands if c != strong), key=lambda c: (cost[c], -acc[c]))
    return cheap, strong


def write_policy(path: Path, name: str, cheap: str, strong: str, probe: str = "default") -> None:
    doc = {
        "name": name, "version": 1, "probe": probe,
        "strategies": {"cheap": {"model": f"openai/{cheap}", "replay_candidate": cheap},
                       "strong": {"model": f"openai/{strong}", "replay_candidate": strong}},
        "tiers": {"easy": "cheap", "normal": "strong", "hard": "strong"},
        "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.5}},
        "exploration": {"type": "epsilon", "epsilon": EPSILON},
        "ledger": {"store_prompts": True},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_figures(policy_path: Path, test: Any) -> dict[str, float | None]:
    from triage.eval.evaluation import evaluate
    from triage.eval.routers.policy import PolicyRouter

    res = evaluate(test, [PolicyRouter(str(policy_path), points=41, batch=64)], n_boot=0)
    key = next(k for k in res.routers if k not in {"best-single", "random", "random-uniform", "oracle"}
               and not k.startswith("single"))
    m = res.routers[key].metrics
    return {"aiq": m.get("aiq"), "cost_ratio_at_best_accuracy": m.get("cost_ratio_at_best_accuracy"),
            "apgr": m.get("apgr"), "random_apgr": res.routers["random"].metrics.get("apgr"),
            "random_aiq": res.routers["random"].metrics.get("aiq"),
            "oracle_aiq": res.routers["oracle"].metrics.get("aiq")}


def true_value(policy_path: Path, export: Path, full: dict[str, ReplayRecord], ids: list[str]) -> float:
    """Accuracy of the policy (exploration included) on the held-out logged queries, from every outcome."""
    from triage.policies.decide import action_distribution
    from triage.policies.loader import load_policy
    from triage.replay import read_replay
    from triage.router.core.messages import probe_text
    from triage.router.core.probing import ProbeRunner

    policy = load_policy(policy_path)
    runner = ProbeRunner(policy, str(policy_path))
    keep = set(ids)
    logged = [r for r in read_replay(export) if r.id in keep]
    outs = []
    for lo in range(0, len(logged), 64):
        outs.extend(runner.predict_many([probe_text(r.messages()) for r in logged[lo:lo + 64]]))
    vals = []
    for r, out in zip(logged, outs, strict=True):
        rec = full[r.id.split(":", 1)[1]]
        dist = action_distribution(policy, out)
        vals.append(sum(p * rec.outcomes[policy.strategies[a].candidate].score for a, p in dist.items()))
    return float(np.mean(vals))


def full_information(train: list[ReplayRecord], work: Path, name: str, cheap: str, strong: str, test: Any) -> dict:
    from triage.probes.export import export_probe
    from triage.probes.training import TrainConfig, parse_features, train_probe
    from triage.replay import ReplayData

    data = ReplayData.from_records(train, candidates=[cheap, strong], name=f"{name}-train")
    feats = parse_features(FEATURES)
    trained = train_probe(data, TrainConfig(features=[f.name for f in feats], folds=3, n_boot=0,
                                            head_params={"C": 0.02}), features=feats)
    export_probe(trained, work / "full-probe", command="learning_loop.py full information", plot=False)
    path = work / "full.yaml"
    write_policy(path, name, cheap, strong, probe=str(work / "full-probe"))
    return test_figures(path, test)


def run_dataset(name: str, rounds: int, n_train: int, n_test: int, work: Path) -> dict[str, Any]:
    from triage.errors import TriageError
    from triage.eval.calibrate import Objective
    from triage.eval.learn import LearnConfig, learn
    from triage.eval.simulate import simulate
    from triage.replay import ReplayData

    t0 = time.perf_counter()
    train, test_recs = load(name)
    train = train[:n_train]
    rng = np.random.default_rng(0)
    if len(test_recs) > n_test:
        test_recs = [test_recs[i] for i in sorted(rng.choice(len(test_recs), n_test, replace=False))]
    cheap, strong = pick_pair(train)
    test = ReplayData.from_records([r.model_copy(update={"split": None}) for r in test_recs],
                                   candidates=[cheap, strong], name=f"{name}-test")
    full = {r.id: r for r in train}
    policy_path = work / f"{name}.yaml"
    write_policy(policy_path, name, cheap, strong)
    ledger = str(work / f"{name}.sqlite")
    start = test_figures(policy_path, test)
    out: dict[str, Any] = {"pair": {"cheap": cheap, "strong": strong}, "train_rows": len(train),
                           "test_rows": test.n, "start": start, "rounds": []}
    chunk = len(train) // rounds
    for r in range(rounds):
        sim = simulate(train[r * chunk:(r + 1) * chunk], policy_path, ledger, seed=r)
        row: dict[str, Any] = {"round": r + 1, "traffic": sim.queries, "explored": sim.explored,
                               "exploration_cost_usd": sim.exploration_cost_usd,
                               "exploration_cost_share": sim.exploration_cost_usd / sim.greedy_cost_usd
                               if sim.greedy_cost_usd else None,
                               "logged_accuracy": sim.accuracy, "greedy_accuracy": sim.greedy_accuracy}
        res = None
        for objective in (Objective(target_accuracy=0.95), Objective(tier_shares=(0.5, 0.25, 0.25))):
            cfg = LearnConfig(ledger=ledger, policy=policy_path, objective=objective, apply=True,
                              out=work / f"{name}-round{r + 1}", folds=3, n_boot=300, seed=r)
            try:
                res = learn(cfg)
                row["objective"] = res.calibration.get("objective")
                break
            except TriageError as exc:  # a refusal is a result too: say which and try the fallback
                row.setdefault("refused", []).append(str(exc))
        if res is None:
            out["rounds"].append(row)
            continue
        truth = true_value(res.applied or res.policy, res.export, full, res.holdout_ids)
        ope = {}
        for est, v in res.ope_new["estimators"].items():
            acc = v["accuracy"]
            ci = acc["ci"]
            ope[est] = {"value": acc["value"], "ci": ci,
                        "covers": bool(ci and ci[0] is not None and ci[0] <= truth <= ci[1])}
        row.update({"version": res.new_version, "verdict": res.verdict, "ope_new_accuracy": ope,
                    "true_accuracy_on_logged": truth, "ess": res.ope_new.get("ess"),
                    "test": test_figures(policy_path, test)})
        out["rounds"].append(row)
        print(f"[{name}] round {r + 1}: {json.dumps(row['test'])} truth {truth:.3f} "
              f"dr {ope.get('dr', {}).get('ci')}", file=sys.stderr)
    fi = full_information(train, work, name, cheap, strong, test)
    out["full_information"] = fi
    last = next((x["test"] for x in reversed(out["rounds"]) if "test" in x), start)
    gain_full = (fi["aiq"] or 0) - (fi["random_aiq"] or 0)
    gain_bandit = (last["aiq"] or 0) - (last["random_aiq"] or 0)
    out["share_of_full_information_gain"] = gain_bandit / gain_full if gain_full > 0 else None
    covered = [x["ope_new_accuracy"][e]["covers"] for x in out["rounds"] if "ope_new_accuracy" in x
               for e in ("dr",)]
    out["dr_coverage"] = {"covered": sum(covered), "rounds": len(covered)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument("--datasets", default="routerbench,simpleqa")
    ap.add_argument("--no-write", action="store_true", help="Do not write eval/bench/results/learning_loop.json.")
    args = ap.parse_args(argv)
    doc: dict[str, Any] = {"config": {"rounds": args.rounds, "train": args.train, "test": args.test,
                                      "epsilon": EPSILON, "features": FEATURES, "seed": 0}, "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="learning-loop-") as tmp:
        for name in args.datasets.split(","):
            work = Path(tmp) / name
            work.mkdir()
            doc["datasets"][name] = run_dataset(name, args.rounds, args.train, args.test, work)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(doc, default=str) if args.json else json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
