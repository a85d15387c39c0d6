"""`triage route` and `triage chat` from the command line, with the real default probe and local model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from triage.policies.loader import EXAMPLES_DIR
from triage.router.cli.main import app

runner = CliRunner()


def test_route_prints_the_decision_as_json():
    result = runner.invoke(app, ["route", "What is 2 + 2?", "--json"])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["policy"] == "local" and decision["strategy"] in ("terse", "standard", "step_by_step")
    assert abs(sum(decision["tier_probs"].values()) - 1.0) < 1e-5
    # the same question through another policy file
    result = runner.invoke(app, ["route", "What is 2 + 2?", "--policy", str(EXAMPLES_DIR / "two_model.yaml")])
    assert result.exit_code == 0 and "strategy" in result.output and "two-model" in result.output


def test_route_with_a_bad_policy_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    result = runner.invoke(app, ["route", "hi", "--policy", str(bad)])
    assert result.exit_code == 2
    assert "field 'strategies'" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_chat_answers_with_a_receipt():
    result = runner.invoke(app, ["chat", "What is 2 + 2?", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    receipt = lines[-1]
    for part in ("tier ", "strategy ", "model local/smollm2-135m", "tokens", "$0.000000"):
        assert part in receipt, receipt
    result = runner.invoke(app, ["chat", "What is 2 + 2?", "--max-tokens", "8", "--json"])
    doc = json.loads(result.output)
    assert doc["answer"] and doc["triage"]["completion_tokens"] <= 8
