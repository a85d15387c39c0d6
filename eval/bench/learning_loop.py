"""The learning loop, measured (issue #15): simulate traffic with exploration, `triage learn --apply`, repeat.

For each dataset - the shared RouterBench subset (its own train/test files) and pricing-reversal
SimpleQA (no split in the data: a fixed 70/30 split by a seeded draw, seed 0) - a two-strategy policy
(cheap model for the easy tier, the most accurate model on train otherwise; epsilon-greedy
exploration 0.2, prompts stored) starts from the default probe. Each round routes the next chunk of
the train split as traffic into a real SQLite ledger (`triage.eval.simulate`: only the chosen outcome
is revealed) and runs `triage.eval.learn` with `apply=True` on the whole ledger so far (objective: 95%
of the best strategy's accuracy; when that is refused, tier shares 0.5/0.25/0.25) - the loop of
`triage replay simulate --rounds K` (`triage.eval.simulate_rounds`). Per round:

* the round's bandit-trained probe as a ROUTER on the held-out TEST split, by the project's replay
  evaluation (`triage.eval.evaluation.evaluate`, router `probe:path=PROBE`: the probe swept over the
  share of queries sent to the dearer model, the same sweep as `probe-text`): AIQ, APGR, cost ratio
  at best-single accuracy, and its AIQ gain over random as a share of the full-information router's;
  the full-information router is `probe-text` with the same features and head (logreg, C=0.02)
  trained once on the same train rows with every candidate's outcome; baselines random (mix),
  best-single and oracle come from the same evaluation;
* the off-policy estimate (DR, 95% bootstrap interval; IPS/SNIPS too) of the round's new policy's
  accuracy and cost per query, as `triage learn` reports it (on its 30% held-out logged queries), and
  the TRUE value of that same policy (exploration included: sum over strategies of pi(a|x) x outcome)
  on the test split with every outcome known - covered yes/no - and on the held-out logged queries
  (the estimator's exact estimand);
* exploration cost: the chosen strategies' cost minus the greedy choices' on the round's traffic;
* the gain share against MATCHED comparators (``test_router_matched``, ``final_gain_share_matched``):
  a full-information probe trained on the train split by the pipeline `triage learn` runs (same
  features, head, C, 3 folds, Platt calibration), both probes scored by ``probe:path=`` ranked by the
  same scores - ``calibrated`` (what a policy's expected-utility rule reads) and ``head`` (the head's
  P(success) before calibration: ``probe-text``'s footing). The first share above divides a
  calibrated bandit probe's gain by the uncalibrated ``probe-text``'s, which mixes the calibration's
  effect on the ranking (per-label calibration is not monotone in the gain ``p_dear - p_cheap``)
  into what is meant to measure learning from one outcome per query.

No choice is made on the test split: the pair, the objective, epsilon and the features are fixed
before any test figure is read. Traffic is the whole train split (a seed-0 shuffle: RouterBench's
file is grouped by task) in rounds of about ``--round-size`` queries (``--rounds`` fixes the count
instead); the whole test split is scored. ``--train`` / ``--test`` cap them (seed-0 draws) for quick
runs. `triage learn` reports on the version fitted on 70% of the logged queries (the rest is its OPE
holdout; the DR coverage figures are of that version) and applies the same procedure refit on every
logged query (``refit``; ``--no-refit`` applies the 70% version, as before); the full-information
probe sees every train row.

    python eval/bench/learning_loop.py --json [--round-size 500 | --rounds N] [--train N --test N]

Replicates and sensitivities (each its own results file): ``--seed S`` (another arrival order and
exploration draws; the split, the test rows and the full-information router stay), ``--epsilon E``,
``--no-refit``, ``--C auto`` (the logistic head's C by inner cross-validation, for the bandit-trained
and the full-information probes alike; ~4x slower), ``--weighting none|ips`` (`triage learn`'s per-label
fit weighting instead of its ``auto`` choice), ``--shadow R`` (the policy's ``shadow:`` block runs
the cheap strategy beside a share R of the requests routed to the strong one - ``--shadow-strategy
strong``: the strong one beside those routed to the cheap one; the simulator reveals that outcome
too, as a linked shadow record; its spend is reported per round and in ``shadow``).
A run whose ``--datasets`` names some of the datasets updates their sections of its configuration's
file and keeps the others (``merged_with_earlier``): one file per configuration and seed.
The scoring (true policy values, routers on the test split, gain shares, the full-information
comparators) is in ``learning_loop_scoring.py``, the data sets, split, caps and pair in
``learning_loop_data.py``; this file runs the rounds and writes the results.
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

from triage.eval.bench.learning_loop_data import capped, dataset_names, load, pick_pair
from triage.eval.bench.learning_loop_scoring import (
    FEATURES,
    full_information_probe,
    full_information_spec,
    gain_share,
    gain_share_test,
    label_volume_curve,
    ope_figures,
    policy_value,
    router_figures,
)
from triage.probes.bandit_training import WEIGHTINGS
from triage.replay.schema import ReplayRecord

RESULTS = Path(__file__).parent / "results" / "learning_loop.json"
EPSILON = 0.2


def write_policy(path: Path, name: str, cheap: str, strong: str, probe: str = "default",
                 epsilon: float = EPSILON, shadow: float = 0.0, shadow_strategy: str = "cheap") -> None:
    doc = {
        "name": name, "version": 1, "probe": probe,
        "strategies": {"cheap": {"model": f"openai/{cheap}", "replay_candidate": cheap},
                       "strong": {"model": f"openai/{strong}", "replay_candidate": strong}},
        "tiers": {"easy": "cheap", "normal": "strong", "hard": "strong"},
        "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.5}},
        "exploration": {"type": "epsilon", "epsilon": epsilon},
        "ledger": {"store_prompts": True},
    }
    if shadow > 0:
        # One strategy shadows: by default the cheap one - its outcome costs ~2% of the strong one's
        # on both data sets, and it is the label the greedy policy seldom observes. The day cap is
        # out of the way (the simulated traffic is one day); the spend is reported per round instead.
        doc["shadow"] = {"rate": shadow, "strategies": [shadow_strategy], "max_cost_usd_per_day": 1000.0}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def run_dataset(name: str, rounds: int, n_train: int, n_test: int, work: Path,
                round_size: int = 500, epsilon: float = EPSILON, refit: bool = True, seed: int = 0,
                C: str = "0.02", weighting: str = "auto", shadow: float = 0.0,
                shadow_strategy: str = "cheap") -> dict[str, Any]:
    from triage.eval.calibrate import Objective
    from triage.eval.learn import LearnConfig
    from triage.eval.simulate_rounds import simulate_rounds
    from triage.replay import ReplayData

    t0 = time.perf_counter()
    train, test_recs = load(name)
    if seed:  # another arrival order and other exploration draws; the split and the test rows stay
        train = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
    train, test_recs = capped(train, test_recs, n_train, n_test)
    cheap, strong = pick_pair(train)
    # Train rows (split "train") and test rows (split "test"): the evaluator fits learned routers on
    # the former and scores every router and baseline on the latter.
    both = [r.model_copy(update={"split": "train"}) for r in train] + \
        [r.model_copy(update={"split": "test"}) for r in test_recs]
    data = ReplayData.from_records(both, candidates=[cheap, strong], name=f"{name}-train+test")
    policy_path = work / f"{name}.yaml"
    write_policy(policy_path, name, cheap, strong, epsilon=epsilon, shadow=shadow, shadow_strategy=shadow_strategy)
    ledger = str(work / f"{name}.sqlite")
    full = {r.id: r for r in train}
    out: dict[str, Any] = {"pair": {"cheap": cheap, "strong": strong}, "train_rows": len(train),
                           "test_rows": len(test_recs), "rounds": []}
    probes: list[tuple[int, str]] = []
    # Round r (from 0): traffic simulated with seed r + 1000 * seed, then `triage learn --apply` with
    # the same seed on the whole ledger - objective 95% of the best strategy's accuracy, and when that
    # is refused, tier shares (the loop itself is triage.eval.simulate_rounds, as `replay simulate --rounds`).
    configs = lambda r: [  # noqa: E731
        LearnConfig(ledger=ledger, policy=policy_path, objective=objective, apply=True, out=work / f"{name}-round{r + 1}",
                    folds=3, n_boot=300, seed=r + 1000 * seed, refit=refit, C=C, weighting=weighting)
        for objective in (Objective(target_accuracy=0.95), Objective(tier_shares=(0.5, 0.25, 0.25)))]
    for rnd in simulate_rounds(train, policy_path, ledger, configs=configs, rounds=rounds, round_size=round_size,
                               seed=1000 * seed):
        r, sim, res = rnd.round - 1, rnd.simulation, rnd.learned
        row: dict[str, Any] = {"round": r + 1, "traffic": sim.queries, "traffic_total": rnd.stop,
                               "explored": sim.explored, "exploration_cost_usd": sim.exploration_cost_usd,
                               "exploration_cost_share": sim.exploration_cost_usd / sim.greedy_cost_usd
                               if sim.greedy_cost_usd else None,
                               "logged_accuracy": sim.accuracy, "greedy_accuracy": sim.greedy_accuracy}
        if shadow > 0:
            row.update({"shadows": sim.shadows, "shadow_cost_usd": sim.shadow_cost_usd, "traffic_cost_usd": sim.cost_usd,
                        "shadow_cost_share": sim.shadow_cost_usd / sim.cost_usd if sim.cost_usd else None})
        if rnd.refused:  # a refusal is a result too: which, before the fallback (or none) learned
            row["refused"] = rnd.refused
        if res is not None:
            row["objective"] = res.calibration.get("objective")
            held = [full[i.split(":", 1)[1]] for i in res.holdout_ids]
            # the OPE report's estimand: the version fitted without the held-out queries (with refit,
            # the applied version - scored as a router below - is the same procedure on every query)
            truth_test = policy_value(res.evaluated_policy or res.policy, test_recs)
            truth_logged = policy_value(res.evaluated_policy or res.policy, held)
            logged = res.training
            row.update({"version": res.new_version, "logged_rows": res.rows, "verdict": res.verdict,
                        # per label: logged rows, successes, IPS effective sample size, the weighting chosen
                        "probe_labels": {c: {**v, **(logged.get("weighting") or {}).get(c, {})}
                                         for c, v in (logged.get("labels") or {}).items()},
                        # auto's pair choice: the doubly-robust ranking value of each weighting pair
                        "weighting_selection": logged.get("weighting_selection"),
                        "ope_new_policy": ope_figures(res, truth_test, truth_logged)})
            probes.append((r + 1, str(res.probe)))
        out["rounds"].append(row)
        print(f"[{name}] round {r + 1} learned ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)

    fi_probe = full_information_probe(train, [cheap, strong], work / f"{name}-full-information", C, seed)
    fi_spec = full_information_spec(C)
    # Matched comparators: the full-information probe by the same pipeline, ranked by the same
    # scores as the bandit probe (calibrated; or the head's, the footing of probe-text).
    scored = {"calibrated": "", "head": ",scores=head"}  # probe router spec suffix per score
    matched = {scores: f"probe:path={fi_probe}{sfx}" for scores, sfx in scored.items()}
    specs = [fi_spec, *matched.values()] + [f"probe:path={p}{sfx}" for _, p in probes for sfx in scored.values()]
    figs, reps = router_figures(data, specs)
    fi, rand = figs[fi_spec], figs["random"]
    out["baselines"] = {k: figs[k] for k in ("random", "best-single", "oracle")}
    out["full_information"] = fi
    out["full_information_probe"] = {scores: figs[spec] for scores, spec in matched.items()}
    for rnd, path in probes:
        spec = f"probe:path={path}"
        f = figs[spec]
        row = out["rounds"][rnd - 1]
        row["test_router"] = {**f, "gain_share_of_full_information": gain_share(f["aiq"], rand["aiq"], fi["aiq"]),
                              "gain_share_paired_bootstrap": gain_share_test(reps[spec], reps["random"], reps[fi_spec])}
        row["test_router_matched"] = {}
        for scores, fi_matched in matched.items():
            own = spec + scored[scores]
            row["test_router_matched"][scores] = {
                "aiq": figs[own]["aiq"], "full_information_aiq": figs[fi_matched]["aiq"],
                "gain_share": gain_share(figs[own]["aiq"], rand["aiq"], figs[fi_matched]["aiq"]),
                "paired_bootstrap": gain_share_test(reps[own], reps["random"], reps[fi_matched])}
        m = row["test_router_matched"]
        print(f"[{name}] round {rnd}: aiq {f['aiq']:.4f} (random {rand['aiq']:.4f}, full {fi['aiq']:.4f}) "
              f"share {row['test_router']['gain_share_of_full_information']}; matched: calibrated "
              f"{m['calibrated']['gain_share']}, head {m['head']['gain_share']}", file=sys.stderr)
    last = next((x for x in reversed(out["rounds"]) if "test_router" in x), None)
    out["final_gain_share_of_full_information"] = last["test_router"]["gain_share_of_full_information"] if last else None
    out["final_gain_share_paired_bootstrap"] = last["test_router"].get("gain_share_paired_bootstrap") if last else None
    out["final_gain_share_matched"] = ({k: {"gain_share": v["gain_share"],
                                            "ci": (v["paired_bootstrap"] or {}).get("ci"),
                                            "goal_verdict_on_test_rows": (v["paired_bootstrap"] or {}).get(
                                                "goal_verdict_on_test_rows")}
                                        for k, v in last["test_router_matched"].items()} if last else None)
    cov = [x["ope_new_policy"][m]["dr_covers_test"] for x in out["rounds"] if "ope_new_policy" in x
           for m in ("accuracy",)]
    cov_cost = [x["ope_new_policy"]["cost"]["dr_covers_test"] for x in out["rounds"] if "ope_new_policy" in x]
    out["dr_coverage_test"] = {"accuracy": sum(cov), "cost": sum(cov_cost), "rounds": len(cov)}
    out["gain_share_per_round"] = [x.get("test_router", {}).get("gain_share_of_full_information")
                                   for x in out["rounds"]]
    out["label_volume_curve"] = label_volume_curve(train, test_recs, [cheap, strong], name, rand["aiq"], fi["aiq"],
                                                   C=C)
    out["logged_label_share"] = _logged_label_share(out["rounds"], len(train))
    if shadow > 0:
        spent = sum(x["shadow_cost_usd"] for x in out["rounds"])
        traffic = sum(x["traffic_cost_usd"] for x in out["rounds"])
        out["shadow"] = {"rate": shadow, "strategy": shadow_strategy, "calls": sum(x["shadows"] for x in out["rounds"]),
                         "cost_usd": spent, "cost_share_of_traffic": spent / traffic if traffic else None}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _logged_label_share(rounds: list[dict[str, Any]], n_train: int) -> dict[str, Any] | None:
    """The last round's training labels per candidate, as a share of the full-information labels
    (every train query, one outcome per candidate) - to read against ``label_volume_curve``."""
    last = next((r for r in reversed(rounds) if r.get("probe_labels")), None)
    if last is None or not n_train:
        return None
    return {c: round(v["rows"] / n_train, 3) for c, v in last["probe_labels"].items()}


def goals(datasets: dict[str, Any]) -> dict[str, Any]:
    """The issue's two goals over the datasets of one results file."""
    shares = {k: d["final_gain_share_of_full_information"] for k, d in datasets.items()}
    covered = sum(d["dr_coverage_test"]["accuracy"] for d in datasets.values())
    total = sum(d["dr_coverage_test"]["rounds"] for d in datasets.values())
    matched = {k: d.get("final_gain_share_matched") for k, d in datasets.items()}
    return {
        "final_gain_share_of_full_information": shares,
        # Bandit and full-information probes by one pipeline, ranked by the same scores (see the docstring).
        "final_gain_share_matched": matched,
        "gain_share_at_least_0.9": {k: v is not None and v >= 0.9 for k, v in shares.items()},
        # The same goal tested on the paired bootstrap of the test rows: met / missed / undecided.
        "gain_share_goal_on_test_rows": {k: (d.get("final_gain_share_paired_bootstrap") or {}).get(
            "goal_verdict_on_test_rows") for k, d in datasets.items()},
        "dr_accuracy_covers_test_truth": f"{covered}/{total}",
        "dr_coverage_at_least_0.9": bool(total) and covered / total >= 0.9,
    }


def results_path(args: argparse.Namespace) -> Path:
    """The results file of a configuration: the headline's, or one named by what differs from it."""
    out = RESULTS if args.epsilon == EPSILON else RESULTS.with_name(f"learning_loop_epsilon{args.epsilon:g}.json")
    if args.C != "0.02":
        out = out.with_name(out.stem + f"_C{args.C}.json")
    if args.weighting != "auto":
        out = out.with_name(out.stem + f"_weighting{args.weighting}.json")
    if args.shadow > 0:
        out = out.with_name(out.stem + f"_shadow{args.shadow:g}"
                            f"{'' if args.shadow_strategy == 'cheap' else args.shadow_strategy}.json")
    if args.seed:
        out = out.with_name(out.stem + f"_seed{args.seed}.json")
    if args.no_refit:
        out = out.with_name(out.stem + "_norefit.json")
    return out


def merged_with_earlier(doc: dict[str, Any], out: Path) -> dict[str, Any]:
    """``doc`` plus the other datasets of an earlier run of the same configuration in ``out``: one
    file per configuration and seed, whichever ``--datasets`` each run named."""
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return doc
    if not isinstance(earlier, dict) or earlier.get("config") != doc["config"]:
        return doc  # another configuration (an older version of the bench): replaced
    datasets = {**earlier.get("datasets", {}), **doc["datasets"]}
    return {**doc, "datasets": datasets, "goals": goals(datasets)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=0, help="Number of rounds (0: from --round-size).")
    ap.add_argument("--round-size", type=int, default=500, help="About this many queries per round.")
    ap.add_argument("--train", type=int, default=0, help="Cap on train rows used as traffic (0: all).")
    ap.add_argument("--test", type=int, default=0, help="Cap on test rows scored (0: all).")
    ap.add_argument("--datasets", default="routerbench,simpleqa")
    ap.add_argument("--epsilon", type=float, default=EPSILON,
                    help=f"Exploration share (the headline is {EPSILON}; another value is a sensitivity run, "
                         "written to results/learning_loop_epsilon<E>.json).")
    ap.add_argument("--seed", type=int, default=0,
                    help="Arrival order and exploration draws (0: the headline; another seed is a replicate, "
                         "written to results/learning_loop_seed<S>.json; the split and the test rows stay).")
    ap.add_argument("--C", default="0.02",
                    help="The logistic head's C for the bandit-trained and the full-information probes alike "
                         "(`auto`: inner cross-validation; written to results/learning_loop_C<C>.json).")
    ap.add_argument("--no-refit", action="store_true",
                    help="Apply the version fitted without the OPE holdout (as before refit; written to "
                         "results/learning_loop_norefit.json).")
    ap.add_argument("--weighting", default="auto", choices=WEIGHTINGS,
                    help="`triage learn`'s per-label fit weighting (triage.probes.bandit_training; written to "
                         "results/learning_loop_weighting<W>.json when not auto).")
    ap.add_argument("--shadow", type=float, default=0.0,
                    help="Shadow rate: the policy's `shadow:` block runs the cheap strategy beside this share of "
                         "the requests routed to the strong one (written to results/learning_loop_shadow<R>.json).")
    ap.add_argument("--shadow-strategy", default="cheap", choices=("cheap", "strong"),
                    help="Which strategy shadows (strong: beside the requests routed to the cheap one; written "
                         "to results/learning_loop_shadow<R>strong.json).")
    ap.add_argument("--no-write", action="store_true", help="Do not write eval/bench/results/learning_loop.json.")
    args = ap.parse_args(argv)
    try:
        names = dataset_names(args.datasets)
    except ValueError as exc:
        ap.error(str(exc))
    from triage.eval.bench import provenance

    doc: dict[str, Any] = {"config": {"rounds": args.rounds, "round_size": args.round_size, "train": args.train,
                                      "test": args.test, "epsilon": args.epsilon, "features": FEATURES, "C": args.C, "seed": args.seed,
                                      "bandit_weighting": f"{args.weighting} (triage.probes.bandit_training)",
                                      "refit": not args.no_refit, "shadow": args.shadow,
                                      "shadow_strategy": args.shadow_strategy},
                           "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="learning-loop-") as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            doc["datasets"][name] = run_dataset(name, args.rounds, args.train, args.test, work, args.round_size,
                                                args.epsilon, refit=not args.no_refit, seed=args.seed, C=args.C,
                                                weighting=args.weighting, shadow=args.shadow,
                                                shadow_strategy=args.shadow_strategy)
            doc["datasets"][name]["code"] = provenance.code_version()  # per dataset: a file merges runs of several
    doc["goals"] = goals(doc["datasets"])
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        out = results_path(args)
        out.write_text(json.dumps(merged_with_earlier(doc, out), indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(doc, default=str) if args.json else json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
