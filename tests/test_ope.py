"""Off-policy evaluation on simulated logged data, and the in-sample flag of `replay evaluate --policy`
(full-information and --logged).

The simulation: RouteLLM GSM8K (full information: both models' outcomes are known for every query)
is logged by a known stochastic policy (epsilon-greedy around a thresholds policy, fixed seeds) that
reveals one outcome per query. A deterministic target policy's TRUE accuracy and cost on those queries
is computed from the full-information outcomes; the estimators only see the logged outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from triage.eval.importers import import_source
from triage.eval.ope import (
    BanditArrays,
    SupportError,
    check_support,
    estimate,
    kish_ess,
)
from triage.eval.ope_data import LoggedBlock, LoggedRow, bandit_arrays
from triage.policies.decide import decide
from triage.policies.loader import load_policy
from triage.probes.card import read_card
from triage.probes.runtime import load_probe
from triage.router.cli.main import app
from typer.testing import CliRunner

from triage.replay import ReplayRecord, write_replay
from triage.settings import get_settings

runner = CliRunner()
SMALL, LARGE = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
ROWS = slice(200, 800)  # 600 queries the test probe was not trained on (it saw the first 200)
EPSILON = 0.4
SEEDS = range(20)

POLICY = """name: {name}
version: 1
probe: {probe}
strategies:
  small: {{model: together_ai/mixtral, replay_candidate: {small}}}
  large: {{model: openai/gpt-4, replay_candidate: {large}}}
tiers: {{easy: small, normal: large, hard: large}}
rule: {{type: thresholds, thresholds: {{normal: {normal}, hard: {hard}}}}}
"""


def _policy(tmp: Path, name: str, probe: Path, normal: float, hard: float) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(POLICY.format(name=name, probe=probe, small=SMALL, large=LARGE, normal=normal, hard=hard))
    return path


@pytest.fixture(scope="module")
def world(trained_text_probe, tmp_path_factory):
    """Queries, their probe outputs (computed once), a logging and a target policy, the truth."""
    tmp = tmp_path_factory.mktemp("ope")
    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[ROWS]
    probe = load_probe(trained_text_probe.folder)
    outputs = probe.predict([r.prompt_text() for r in records])
    tiers = np.array([o.tier_probs["normal"] + o.tier_probs["hard"] for o in outputs])
    # Thresholds at quantiles of the probe's P(not easy), so the two policies disagree on ~30% of queries.
    q = np.quantile(tiers, [0.3, 0.6])
    logging = load_policy(_policy(tmp, "logging", trained_text_probe.folder, float(q[1]), 1.0))
    target_path = _policy(tmp, "target", trained_text_probe.folder, float(q[0]), 1.0)
    target = load_policy(target_path)
    cand = {"small": SMALL, "large": LARGE}
    t_choice = [cand[decide(target, o).strategy] for o in outputs]
    truth = {"accuracy": float(np.mean([r.outcomes[c].score for r, c in zip(records, t_choice)])),
             "cost": float(np.mean([r.outcomes[c].cost_usd for r, c in zip(records, t_choice)]))}
    greedy = [decide(logging, o).strategy for o in outputs]
    return {"tmp": tmp, "records": records, "outputs": outputs, "greedy": greedy, "target": target,
            "target_path": target_path, "truth": truth, "version": probe.version,
            "logging_acc": float(np.mean([r.outcomes[cand[g]].score for r, g in zip(records, greedy)]))}


def _log(world, seed: int, epsilon: float = EPSILON) -> list[LoggedRow]:
    """One logging run: epsilon-greedy around the logging policy's choice (epsilon spread evenly)."""
    rng = np.random.default_rng(seed)
    cand = {"small": SMALL, "large": LARGE}
    rows = []
    for rec, out, g in zip(world["records"], world["outputs"], world["greedy"]):
        probs = {a: epsilon / 2 + (1 - epsilon) * (a == g) for a in cand}
        a = "small" if rng.random() < probs["small"] else "large"
        block = LoggedBlock(strategy=a, candidate=cand[a], propensity=probs[a],
                            candidates=[s for s, p in probs.items() if p > 0], explored=a != g, greedy_strategy=g,
                            policy="logging", policy_version="1", probe_version=world["version"],
                            tier_probs=out.tier_probs, success=out.success)
        o = rec.outcomes[cand[a]]
        rec1 = ReplayRecord(id=rec.id, prompt=rec.prompt, outcomes={a: o}, logged=block.model_dump())
        rows.append(LoggedRow(rec1, block, o.score, o.cost_usd))
    return rows


def _write(rows: list[LoggedRow], path: Path) -> Path:
    write_replay([r.record for r in rows], path)
    return path


def test_intervals_cover_the_true_value_and_dr_beats_ips(world) -> None:
    """Over 20 logging seeds every estimator's 95% interval covers the true accuracy and cost in at least
    17 runs. The intervals resample queries too, which this fixed-query truth does not vary, so they
    should cover at least 95%: at exactly 95%, 16 or fewer covers has probability 1.6% (binomial);
    the logging policy's own accuracy (what a report without OPE shows) is outside DR's interval
    in most runs. DR's probe reward model removes most of IPS's variance: its spread over the seeds
    and its intervals are both narrower than IPS's."""
    truth = world["truth"]
    assert abs(truth["accuracy"] - world["logging_acc"]) > 0.02  # the target really differs from logging
    covers: dict[tuple[str, str], int] = {}
    values: dict[str, list[float]] = {"ips": [], "snips": [], "dr": [], "dr_fitted": []}
    widths: dict[str, list[float]] = {"ips": [], "dr": []}
    naive = 0
    for seed in SEEDS:
        rows = _log(world, seed)
        view = bandit_arrays(rows, world["target"], str(world["target_path"]), outputs=world["outputs"], seed=seed)
        assert view.reward_model == "probe"
        res = estimate(view.arrays, n_boot=300, seed=seed)
        for name, est in res.estimates.items():
            values[name].append(est["accuracy"].value)
            for metric in ("accuracy", "cost"):
                lo, hi = est[metric].ci
                covers[(name, metric)] = covers.get((name, metric), 0) + (lo <= truth[metric] <= hi)
        for name in widths:
            lo, hi = res.estimates[name]["accuracy"].ci
            widths[name].append(hi - lo)
        fitted = bandit_arrays(rows, world["target"], None, outputs=world["outputs"], seed=seed, reward_model="fitted")
        values["dr_fitted"].append(estimate(fitted.arrays, n_boot=0).estimates["dr"]["accuracy"].value)
        # What a report without OPE shows: the logging policy's own accuracy. Not the target's.
        lo, hi = res.estimates["dr"]["accuracy"].ci
        naive += lo <= res.logged["accuracy"].value <= hi
    assert set(covers) == {(e, m) for e in ("ips", "snips", "dr") for m in ("accuracy", "cost")}
    assert all(c >= 17 for c in covers.values()), covers
    sd = {k: float(np.std(v)) for k, v in values.items()}
    assert sd["dr"] < 0.8 * sd["ips"], sd
    assert np.mean(widths["dr"]) < np.mean(widths["ips"]), widths
    for name in ("ips", "snips", "dr", "dr_fitted"):  # no estimator is off on average
        assert abs(np.mean(values[name]) - truth["accuracy"]) < 0.02, (name, np.mean(values[name]), truth)
    assert naive < 17
    print({"truth": truth, "sd": sd, "covers": covers, "mean": {k: float(np.mean(v)) for k, v in values.items()},
           "width": {k: float(np.mean(v)) for k, v in widths.items()}, "naive": naive})


def test_kish_ess_hand_computed() -> None:
    # weights pi/mu: 1/0.5 = 2, 1/0.5 = 2, 0 (target never takes that action), 1/1 = 1
    # ESS = (2 + 2 + 0 + 1)^2 / (4 + 4 + 0 + 1) = 25 / 9
    pi = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    data = BanditArrays(actions=["a", "b"], chosen=np.array([0, 1, 1, 0]), propensity=np.array([0.5, 0.5, 0.5, 1.0]),
                        reward=np.array([1.0, 0.0, 1.0, 1.0]), cost=np.array([1.0, 2.0, 2.0, 1.0]), pi=pi,
                        supported=np.ones((4, 2), dtype=bool))
    assert np.allclose(data.weights(), [2, 2, 0, 1])
    assert kish_ess(data.weights()) == pytest.approx(25 / 9)
    res = estimate(data, n_boot=0)
    assert res.ess == pytest.approx(25 / 9)
    assert res.estimates["ips"]["accuracy"].value == pytest.approx((2 + 0 + 0 + 1) / 4)
    assert res.estimates["snips"]["accuracy"].value == pytest.approx(3 / 5)
    assert res.estimates["ips"]["cost"].value == pytest.approx((2 * 1 + 2 * 2 + 0 + 1) / 4)


def test_support_gap_is_refused(world) -> None:
    rows = _log(world, 0, epsilon=0.0)  # deterministic logging: one strategy per query has support
    view = bandit_arrays(rows, world["target"], None, outputs=world["outputs"])
    with pytest.raises(SupportError, match="no support"):
        check_support(view.arrays, 0.01, "target")


def test_cli_logged_table_json_and_support_refusal(world) -> None:
    tmp, target = world["tmp"], str(world["target_path"])
    explored = _write(_log(world, 1), tmp / "explored.jsonl")
    res = runner.invoke(app, ["replay", "evaluate", "--logged", str(explored), "--policy", target,
                              "--bootstrap", "200", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["probe_outputs"].startswith("logged outputs") and doc["unsupported_mass"] == 0.0
    assert doc["in_sample"] is None  # the probe never saw these queries (it trained on the first 200)
    assert set(doc["estimators"]) == {"ips", "snips", "dr"} and 0 < doc["ess"] <= doc["n"] == 600
    lo, hi = doc["estimators"]["dr"]["accuracy"]["ci"]
    assert lo <= world["truth"]["accuracy"] <= hi
    res = runner.invoke(app, ["replay", "evaluate", "--logged", str(explored), "--policy", target, "--bootstrap", "200"],
                        env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "doubly robust" in res.stdout and "ESS" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 120

    greedy_only = _write(_log(world, 0, epsilon=0.0), tmp / "greedy.jsonl")
    res = runner.invoke(app, ["replay", "evaluate", "--logged", str(greedy_only), "--policy", target])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no support" in lines[0] and "large 30.0%" in lines[0] and "exploration" in lines[0], res.stderr


def test_null_propensity_needs_a_flag(world) -> None:
    rows = _log(world, 2)
    for r in rows:
        r.record.logged["propensity"] = None  # type: ignore[attr-defined]
    path = _write(rows, world["tmp"] / "null.jsonl")
    res = runner.invoke(app, ["replay", "evaluate", "--logged", str(path), "--policy", str(world["target_path"])])
    assert res.exit_code == 2 and "no propensity" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_in_sample_probe_is_flagged(trained_text_probe, tmp_path) -> None:
    """The test probe was trained on the first 200 GSM8K queries: a policy using it, evaluated on them
    plus 100 unseen ones, is marked in-sample (200 of 300); --exclude-trained scores the 100 only."""
    card, _ = read_card(trained_text_probe.folder)
    assert card.training_data["rows"]["count"] == 200
    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[:300]
    data = write_replay(records, tmp_path / "gsm8k-300.jsonl") and tmp_path / "gsm8k-300.jsonl"
    policy = _policy(tmp_path, "p", trained_text_probe.folder, 0.5, 0.9)
    args = ["replay", "evaluate", str(data), "--policy", str(policy), "--bootstrap", "0", "--folds", "3"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    flagged = doc["routers"][f"policy:path={policy}"]
    assert flagged["in_sample"]["rows"] == 200 and flagged["in_sample"]["of"] == 300
    assert any("in-sample" in n for n in doc["notes"])
    res = runner.invoke(app, args, env={"COLUMNS": "120"})
    assert "IN-SAMPLE 200/300" in res.stdout
    res = runner.invoke(app, [*args, "--json", "--exclude-trained"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["n"] == 100 and "in_sample" not in doc["routers"][f"policy:path={policy}"]


def test_off_policy_figures_on_the_probes_training_queries_are_flagged(world, trained_text_probe) -> None:
    """Logged queries the target policy's probe was trained on (as `triage learn`'s refit version is on
    its whole export) make the estimate in-sample: the table and --json say so; --exclude-trained
    estimates on the other queries, and refuses in one line when none are left."""
    trained = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[100:200]
    probe = load_probe(trained_text_probe.folder)
    outputs = probe.predict([r.prompt_text() for r in trained])
    mixed = {"records": trained + world["records"][:200], "outputs": outputs + world["outputs"][:200],
             "version": world["version"]}
    mixed["greedy"] = [decide(world["target"], o).strategy for o in mixed["outputs"]]
    path = _write(_log(mixed, 5), world["tmp"] / "mixed.jsonl")
    args = ["replay", "evaluate", "--logged", str(path), "--policy", str(world["target_path"]), "--bootstrap", "100"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["in_sample"] == {"rows": 100, "of": 300, "probe": world["version"]}
    assert any(n.startswith("IN-SAMPLE") and "100 of these 300" in n for n in doc["notes"]), doc["notes"]
    res = runner.invoke(app, args, env={"COLUMNS": "120"})
    assert res.exit_code == 0 and "IN-SAMPLE" in res.stdout, res.output
    res = runner.invoke(app, [*args, "--json", "--exclude-trained"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["n"] == 200 and doc["in_sample"] is None and not any("IN-SAMPLE" in n for n in doc["notes"])
    assert "100 of 300 logged queries" in res.stderr
    only_trained = _write(_log({**mixed, **{k: mixed[k][:100] for k in ("records", "outputs", "greedy")}}, 6),
                          world["tmp"] / "trained-only.jsonl")
    res = runner.invoke(app, ["replay", "evaluate", "--logged", str(only_trained), "--policy", str(world["target_path"]),
                              "--exclude-trained"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "trained on every logged query" in lines[0], res.output


def test_shadow_rows_are_not_logged_decisions(world) -> None:
    """A shadow call's row (router/core/shadow.py) is an extra observed outcome, not a decision of the
    logging policy: the estimate reads the same rows with or without it."""
    from triage.eval.ope_data import parse_logged

    rows = _log(world, 3)
    shadow = rows[0].record.model_copy(update={"id": rows[0].record.id + ":shadow"})
    shadow.logged = {**rows[0].record.logged, "shadow": True, "shadow_of": rows[0].record.id}  # type: ignore[attr-defined]
    parsed = parse_logged([r.record for r in rows] + [shadow])
    assert [p.record.id for p in parsed] == [r.record.id for r in rows]
