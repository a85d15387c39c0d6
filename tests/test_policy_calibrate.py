"""`triage policy calibrate` on real replay data (RouteLLM GSM8K from the shared data).

Probe outputs are real cross-fitted outputs: the probe trainer (triage.probes.training) fits a lexical-feature
head 5-fold and each query gets the output of the fold that did not see it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from triage.eval.importers import import_source
from triage.replay import ReplayData, write_replay
from triage.policies.decide import decide
from triage.policies.loader import EXAMPLES_DIR, load_policy
from triage.probes.training import TrainConfig, train_probe
from triage.probes.types import TIERS
from triage.router.cli.main import app
from triage.settings import get_settings

runner = CliRunner()
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")
    folder = tmp_path_factory.mktemp("cal")
    data_path = folder / "gsm8k.jsonl"
    write_replay(records, data_path)
    data = ReplayData.from_records(records, name="gsm8k")
    trained = train_probe(data, TrainConfig(features=["lexical"], n_boot=0))
    outputs = {}
    for k, row in enumerate(trained.labels.rows):
        outputs[data.ids[row]] = {
            "id": data.ids[row],
            "tier_probs": {t: float(trained.oof_tier[k, j]) for j, t in enumerate(TIERS)},
            "success": {c: float(trained.oof_success[k, j]) for j, c in enumerate(trained.labels.candidates)},
        }
    out_path = folder / "oof.jsonl"
    out_path.write_text("".join(json.dumps(o) + "\n" for o in outputs.values()))
    from triage.probes.export import export_probe

    export_probe(trained, folder / "probe-lexical", plot=False)
    return data, data_path, out_path, outputs, folder


def policy_copy(tmp_path: Path, folder: Path, **changes) -> Path:
    raw = yaml.safe_load((EXAMPLES_DIR / "two_model.yaml").read_text())
    raw["probe"] = str(folder / "probe-lexical")
    raw.update(changes)
    path = tmp_path / "policy.yaml"
    path.write_text("# my header\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def replayed(policy_path: Path, data: ReplayData, outputs: dict) -> tuple[float, float]:
    """Accuracy and mean cost of the written policy, recomputed with decide() on every query."""
    from triage.probes.types import ProbeOutput

    p = load_policy(policy_path)
    col = {n: data.candidates.index(s.candidate) for n, s in p.strategies.items()}
    picks = [col[decide(p, ProbeOutput(tier_probs=outputs[i]["tier_probs"], success=outputs[i]["success"])).strategy]
             for i in data.ids]
    rows = np.arange(data.n)
    return float(data.score[rows, picks].mean()), float(data.cost[rows, picks].mean())


def test_target_accuracy_of_best(tmp_path, replay):
    data, data_path, oof, outputs, folder = replay
    path = policy_copy(tmp_path, folder)
    result = runner.invoke(app, ["policy", "calibrate", "--policy", str(path), "--data", str(data_path),
                                 "--target-accuracy", "0.95", "--of", "BEST", "--probe-outputs", str(oof), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    best_acc = float(data.score[:, data.candidates.index(STRONG)].mean())
    best_cost = float(data.cost[:, data.candidates.index(STRONG)].mean())
    assert figures["best_single"]["strategy"] == "large"
    assert figures["best_single"]["accuracy"] == pytest.approx(best_acc, abs=1e-6)
    assert figures["target_met"] and figures["accuracy"] >= 0.95 * best_acc - 1e-9
    assert figures["cost_per_query_usd"] < best_cost  # the point of routing
    # the file now holds the chosen thresholds and the figures, and still starts with its header
    text = path.read_text()
    assert text.startswith("# my header")
    written = yaml.safe_load(text)
    assert written["rule"]["thresholds"] == figures["knob"]["thresholds"]
    assert written["calibration"]["accuracy"] == figures["accuracy"]
    assert set(written["expected_cost"]) == {"small", "large"}
    # replaying the written file with decide() reproduces the written figures
    acc, cost = replayed(path, data, outputs)
    assert acc == pytest.approx(figures["accuracy"], abs=1e-6)
    assert cost == pytest.approx(figures["cost_per_query_usd"], rel=1e-5)


def test_max_cost_per_query(tmp_path, replay):
    data, data_path, oof, outputs, folder = replay
    accs = []
    for cap in (0.004, 0.010):
        path = policy_copy(tmp_path, folder)
        result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                     "--max-cost-per-query", str(cap), "--probe-outputs", str(oof), "--json"])
        assert result.exit_code == 0, result.output
        f = json.loads(result.output)
        assert f["target_met"] and f["cost_per_query_usd"] <= cap
        acc, cost = replayed(path, data, outputs)
        assert cost <= cap and acc == pytest.approx(f["accuracy"], abs=1e-6)
        accs.append(acc)
    assert accs[1] > accs[0]  # a bigger budget buys accuracy


def test_expected_utility_lambda_and_expected_costs(tmp_path, replay):
    data, data_path, oof, outputs, folder = replay
    path = policy_copy(tmp_path, folder, rule={"type": "expected_utility", "lambda": 1.0})
    result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                 "--target-accuracy", "0.95", "--probe-outputs", str(oof), "--json"])
    assert result.exit_code == 0, result.output
    f = json.loads(result.output)
    p = load_policy(path)
    assert p.rule.type == "expected_utility" and p.rule.lambda_ == f["knob"]["lambda"] > 0
    j = data.candidates.index(STRONG)
    assert p.expected_cost["large"].completion_tokens == pytest.approx(data.completion_tokens[:, j].mean(), abs=0.06)
    assert f["target_met"] and f["cost_share_of_best"] < 1.0
    acc, _ = replayed(path, data, outputs)
    assert acc == pytest.approx(f["accuracy"], abs=1e-6)


def test_cross_fitted_outputs_from_the_policys_probe_card(tmp_path, replay):
    """Without --probe-outputs the probe's configuration (from its card) is retrained k-fold."""
    data, data_path, _, _, folder = replay
    path = policy_copy(tmp_path, folder)
    result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                 "--target-accuracy", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    f = json.loads(result.output)
    assert "5-fold cross-fitted" in f["probe_outputs"] and "lexical" in f["probe_outputs"]
    assert f["target_met"]


def test_split_data_chooses_on_train_and_reports_on_test(tmp_path, replay):
    data, _, oof, _, folder = replay
    records = [r.model_copy(update={"split": "train" if i % 2 else "test"}) for i, r in enumerate(data.records)]
    split_path = tmp_path / "split.jsonl"
    write_replay(records, split_path)
    path = policy_copy(tmp_path, folder)
    result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(split_path),
                                 "--target-accuracy", "0.95", "--probe-outputs", str(oof), "--json"])
    f = json.loads(result.output)
    assert f["reported_on"].startswith("test split")
    assert f["rows_selected"] + f["rows_reported"] == data.n


@pytest.mark.parametrize(("args", "message"), [
    (["--target-accuracy", "0.9", "--max-cost-per-query", "0.01"], "exactly one of"),
    (["--target-accuracy", "0.9", "--of", "nobody"], "--of must be BEST or a strategy"),
])
def test_bad_requests_are_one_line_exit_2(tmp_path, replay, args, message):
    data, data_path, oof, _, folder = replay
    path = policy_copy(tmp_path, folder)
    before = path.read_text()
    result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                 "--probe-outputs", str(oof), *args])
    assert result.exit_code == 2 and message in result.output
    assert path.read_text() == before


def test_cascade_is_refused_with_a_reason(tmp_path, replay):
    _, data_path, oof, _, _ = replay
    path = tmp_path / "cascade.yaml"
    path.write_text((EXAMPLES_DIR / "cascade.yaml").read_text())
    result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                 "--target-accuracy", "0.9", "--probe-outputs", str(oof)])
    assert result.exit_code == 2 and "cascade" in result.output


def test_tier_shares_for_a_one_model_policy(tmp_path, replay):
    """No outcomes needed: thresholds that split the queries 50/30/20 by the policy's own probe."""
    data, data_path, _, _, folder = replay
    raw = yaml.safe_load((EXAMPLES_DIR / "local.yaml").read_text())
    raw["probe"] = str(folder / "probe-lexical")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                 "--tier-shares", "0.5,0.3,0.2", "--json"])
    assert result.exit_code == 0, result.output
    f = json.loads(result.output)
    for tier, want in zip(("easy", "normal", "hard"), (0.5, 0.3, 0.2)):
        assert abs(f["tier_shares"][tier] - want) < 0.03, f["tier_shares"]
    # the SDK, reading the rewritten file, sorts the same queries into the same shares
    from triage.router.core import Router

    router = Router.from_file(path)
    tiers = [router.route(r.messages()).tier for r in data.records[:300]]
    assert 0.35 < tiers.count("easy") / 300 < 0.65 and tiers.count("hard") > 20
    bad = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path), "--tier-shares", "0.5,0.6"])
    assert bad.exit_code == 2 and "tier-shares" in bad.output


def test_the_human_readable_line_states_the_written_setting(tmp_path, replay):
    """Without --json the line names the chosen setting as people read it (`thresholds normal=0.53,
    hard=0.5`, `lambda=0.3`), the values the file now holds - not a Python dict."""
    data, data_path, oof, outputs, folder = replay
    for rule in (None, {"type": "expected_utility", "lambda": 1.0}):
        path = policy_copy(tmp_path, folder, **({"rule": rule} if rule else {}))
        result = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data_path),
                                     "--target-accuracy", "0.95", "--probe-outputs", str(oof)])
        assert result.exit_code == 0, result.output
        p = load_policy(path)
        if rule:
            want = f"lambda={p.rule.lambda_:g}"
        else:
            t = p.rule.thresholds
            want = f"thresholds normal={t.normal:g}, hard={t.hard:g}"
        assert f": {want}; accuracy " in result.output and "{" not in result.output, result.output
