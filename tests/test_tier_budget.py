"""Difficulty-aware token budgets (issue #14): the truncation rule, the saved-tokens metric, the
``tier-budget`` router (caps from training rows only) through the evaluator, the CLI report, and
one run on a real GSM8K slice."""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from triage.eval.evaluation import evaluate
from triage.eval.metrics.bootstrap import Bootstrap
from triage.eval.metrics.budget import TRUNCATION_RULE, apply_caps, cheapest_uniform, tokens_saved
from triage.eval.routers import make_router
from triage.eval.routers.tier_budget import cheapest_tier_caps
from triage.replay import Outcome, ReplayData, ReplayRecord, read_replay, write_replay
from triage.router.cli.main import app

LEX = "features=lexical"  # cheap text features: these tests need no encoder


def budget_records(n: int = 300, seed: int = 0) -> list[ReplayRecord]:
    """Two thirds short questions (the model answers in ~100 tokens, or rambles ~4000 tokens and
    fails), one third long ones (always right, ~1500-2500 tokens). The text tells them apart, so
    per-tier caps can cut the rambling a uniform cap must allow for the long answers."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        short = i % 3 != 2
        if short:
            ok = rng.random() < 0.6
            ct = int(rng.integers(80, 121)) if ok else int(rng.integers(3500, 4500))
            prompt = f"What is {i} plus {i + 1}?"
        else:
            ok, ct = True, int(rng.integers(1500, 2501))
            prompt = ("Prove the following statement about the sequence defined below, showing every step. " * 6
                      + f"Case {i}.")
        outcomes = {
            "reasoner": Outcome(score=float(ok), cost_usd=(50 + 3 * ct) * 1e-6, prompt_tokens=50,
                                completion_tokens=ct, reasoning_tokens=ct // 2),
            "small": Outcome(score=float(short and rng.random() < 0.3), cost_usd=1e-5, prompt_tokens=50,
                             completion_tokens=40, reasoning_tokens=0),
        }
        records.append(ReplayRecord(id=f"q{i}", prompt=prompt, outcomes=outcomes))
    return records


@pytest.fixture(scope="module")
def budget_data() -> ReplayData:
    return ReplayData.from_records(budget_records(), name="budgets")


# --- the truncation rule and the metric -----------------------------------------------------------

def test_truncation_rule_scores_zero_and_bills_the_cap() -> None:
    fields = {"score": np.array([1.0, 1.0, 1.0]), "cost": np.array([0.4, 0.4, 0.4]),
              "prompt_tokens": np.array([100.0, 100.0, 100.0]), "completion_tokens": np.array([100.0, 100.0, 100.0]),
              "reasoning_tokens": np.array([80.0, 80.0, 80.0]), "truncated": np.zeros(3)}
    out = apply_caps(fields, np.array([100.0, 50.0, np.inf]), cost_unit="usd")
    # at the cap: kept; over it: wrong, the cap's tokens, truncated; no cap: kept
    assert out["score"].tolist() == [1.0, 0.0, 1.0]
    assert out["completion_tokens"].tolist() == [100.0, 50.0, 100.0]
    assert out["tokens"].tolist() == [200.0, 150.0, 200.0]
    assert out["reasoning_tokens"].tolist() == [80.0, 50.0, 80.0]
    assert out["truncated"].tolist() == [0.0, 1.0, 0.0]
    # usd: the completion share (3x price, 300 of 400 weighted tokens = 0.75) is halved
    assert out["cost"][1] == pytest.approx(0.4 * (0.75 * 0.5 + 0.25))
    assert out["cost"][0] == out["cost"][2] == 0.4
    tok = apply_caps({**fields, "cost": np.array([200.0] * 3)}, np.array([50.0] * 3), cost_unit="tokens")
    assert tok["cost"].tolist() == [150.0] * 3


def test_saved_tokens_against_the_cheapest_uniform_cap() -> None:
    score = np.array([1.0, 1.0, 0.0, 1.0])
    tokens = np.array([10.0, 30.0, 50.0, 20.0])
    u = cheapest_uniform(score, tokens, 0.5)
    # cap 10 keeps 1 of 4, cap 20 keeps 2 of 4: c* = 20, tokens (10 + 20 + 20 + 20) / 4
    assert u["cap"][0] == 20.0 and u["accuracy"][0] == 0.5 and u["mean_tokens"][0] == 17.5
    # a router capping the 2nd and 3rd answers at 5 tokens: accuracy 0.5 at (10 + 5 + 5 + 20) / 4 = 10 tokens
    caps = np.array([10.0, 5.0, 5.0, 20.0])
    r_score, r_tok = np.where(tokens > caps, 0.0, score), np.minimum(tokens, caps)
    out = tokens_saved(r_score, r_tok, score, tokens, Bootstrap(4, n_boot=200, seed=1))
    assert out["tokens_saved"] == pytest.approx(1 - 10 / 17.5)
    assert out["uniform_cap"] == 20.0 and out["accuracy"] == out["uniform_accuracy"] == 0.5
    lo, hi = out["tokens_saved_ci"]
    assert lo <= out["tokens_saved"] <= hi
    # the uncapped model is beaten by cap 30 (same accuracy, the wrong 50-token answer cut to 30)
    assert tokens_saved(score, tokens, score, tokens)["tokens_saved"] == pytest.approx(1 - 27.5 / 22.5)
    # with weights: a replicate holding query 1 twice and query 3 never needs cap 30 for 3 of 4
    w = np.array([[1.0, 2.0, 0.0, 1.0]])
    assert cheapest_uniform(score, tokens, 0.75, w)["cap"][0] == 30.0


def test_tier_caps_are_the_exact_optimum() -> None:
    rng = np.random.default_rng(3)
    tier = rng.integers(0, 3, 30)
    success = rng.random(30) < 0.7
    tokens = rng.integers(10, 200, 30).astype(float)
    floor = tokens[success].min()
    targets = np.array([0.5, 0.8, 1.0])
    got = cheapest_tier_caps(tier, success, tokens, 3, targets, floor)
    options = [np.unique(np.r_[floor, tokens[(tier == g) & success]]) for g in range(3)]
    for k, r in enumerate(targets):
        need = int(np.ceil(r * success.sum() - 1e-9))
        best = min(np.minimum(tokens, np.array(c)[tier]).sum() for c in itertools.product(*options)
                   if (success & (tokens <= np.array(c)[tier])).sum() >= need)
        caps = got[k][tier]
        assert (success & (tokens <= caps)).sum() >= need
        assert np.minimum(tokens, caps).sum() == pytest.approx(best)


# --- the router -----------------------------------------------------------------------------------

def test_caps_come_from_training_rows_only(budget_data: ReplayData) -> None:
    train, test = np.arange(0, 240), np.arange(240, 300)
    fitted = make_router(f"tier-budget:model=reasoner,{LEX}").fit(budget_data, train)
    # the held-out rows' outcomes rewritten: every answer wrong and ten times longer
    changed = budget_data.subset(np.arange(budget_data.n))
    changed.score[test] = 0.0
    changed.completion_tokens[test] *= 10
    again = make_router(f"tier-budget:model=reasoner,{LEX}").fit(changed, train)
    assert np.array_equal(fitted.caps_, again.caps_) and np.array_equal(fitted.thresholds_, again.thresholds_)
    # ...while the same change on training rows moves the caps (so the comparison above can fail)
    moved = budget_data.subset(np.arange(budget_data.n))
    moved.completion_tokens[train[:60]] *= 10
    assert not np.array_equal(make_router(f"tier-budget:model=reasoner,{LEX}").fit(moved, train).caps_, fitted.caps_)
    # every cap is the length of a correct training answer of the model
    j = budget_data.candidate_index("reasoner")
    lengths = set(budget_data.completion_tokens[train, j][budget_data.score[train, j] > 0].tolist())
    assert set(fitted.caps_.ravel().tolist()) <= lengths


def test_short_questions_get_the_small_cap(budget_data: ReplayData) -> None:
    router = make_router(f"tier-budget:model=reasoner,{LEX}").fit(budget_data, np.arange(0, 240))
    sweep = router.sweep(budget_data, np.arange(240, 300))
    short = np.array([i % 3 != 2 for i in range(240, 300)])
    caps = sweep.caps[sweep.default]
    assert sweep.knobs[sweep.default] == 0.95 and (sweep.choices == router.col_).all()
    assert caps[short].max() < 200 and caps[~short].min() > 1500


def test_tier_budget_saves_tokens_at_equal_accuracy_in_evaluate(budget_data: ReplayData) -> None:
    specs = [f"tier-budget:{LEX}", "tier-budget:tiers=1", "tier-budget:oracle=true"]
    result = evaluate(budget_data, specs, folds=5, n_boot=200)
    m = result.routers[specs[0]].metrics
    b = m["budget"]
    assert b["model"] == "reasoner" and b["rule"] == TRUNCATION_RULE
    d = b["default"]
    # the evaluator replayed the caps: its accuracy and truncation are the budget block's
    assert m["accuracy"] == pytest.approx(d["accuracy"]) and m["truncation_rate"] == pytest.approx(d["truncated"])
    assert m["tokens"]["completion"] / result.n == pytest.approx(d["mean_completion_tokens"])
    assert d["accuracy"] < b["uncapped"]["accuracy"]  # the rule made some answers wrong
    # the rambling failures of short questions are cut: about half the uniform cap's tokens
    assert d["tokens_saved"] > 0.35 and d["tokens_saved_ci"][0] > 0.25
    assert d["uniform_accuracy"] >= d["accuracy"]
    # one learned cap is a uniform cap: nothing to gain over the best one
    assert abs(result.routers[specs[1]].metrics["budget"]["default"]["tokens_saved"]) < 0.05
    assert result.routers[specs[2]].metrics["budget"]["default"]["tokens_saved"] > 0.35
    assert len(b["curve"]) == 12 and len(result.routers[specs[0]].curve) == 12 and b["uniform_curve"]


def test_cli_report_has_the_budget_curve(tmp_path: Path) -> None:
    path = tmp_path / "budgets.jsonl"
    write_replay(budget_records(150), path)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["replay", "evaluate", str(path), "-r", f"tier-budget:{LEX}",
                                      "--report", str(out), "--bootstrap", "50", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["routers"][f"tier-budget:{LEX}"]["budget"]["default"]["tokens_saved"] is not None
    page = (out / "report.html").read_text()
    assert (out / "budget-budgets.png").stat().st_size > 1000
    assert html.escape(TRUNCATION_RULE) in page and "completion tokens saved" in page


# --- a real replay slice --------------------------------------------------------------------------

def test_real_gsm8k_slice(probe_slice_file: Path) -> None:
    data = ReplayData.from_records(read_replay(probe_slice_file), name="gsm8k-200")
    spec = "tier-budget:features=text:aux=false"
    result = evaluate(data, [spec], folds=3, n_boot=200)
    b = result.routers[spec].metrics["budget"]
    assert b["model"] == "gpt-4-1106-preview" and b["n"] == 200
    j = data.candidate_index(b["model"])
    logged = set(data.completion_tokens[:, j][data.score[:, j] > 0].tolist())
    d = b["default"]
    assert {float(c) for c in b["caps_at_default"]} <= logged  # caps are lengths of correct answers
    assert d["uniform_cap"] in logged
    assert d["accuracy"] <= b["uncapped"]["accuracy"] and d["uniform_accuracy"] >= d["accuracy"]
    assert d["mean_completion_tokens"] <= b["uncapped"]["mean_completion_tokens"]
    lo, hi = d["tokens_saved_ci"]
    assert lo <= d["tokens_saved"] <= hi
    # a higher share of training successes kept never buys fewer tokens on these rows
    toks = [p["mean_completion_tokens"] for p in b["curve"]]
    assert toks[-1] >= toks[0]
