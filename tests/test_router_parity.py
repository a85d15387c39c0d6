"""One policy file, one decision: the SDK (router.route) and replay (eval/routers/policy.py) agree.

200 RouteLLM GSM8K queries from the shared data, the real default probe, the shipped two-model
policy (thresholds) and an expected-utility variant of it. The replay path is reached the way
`triage replay evaluate DATA --router policy:path=P.yaml` reaches it: through the router registry.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from triage.eval.importers import import_source
from triage.replay import ReplayData, write_replay
from triage.eval.routers import make_router
from triage.policies.loader import EXAMPLES_DIR
from triage.router.cli.main import app
from triage.router.core import Router
from triage.router.core.messages import probe_text
from triage.settings import get_settings

N = 200


@pytest.fixture(scope="module")
def gsm8k() -> ReplayData:
    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")
    rng = np.random.default_rng(7)
    picked = sorted(rng.choice(len(records), size=N, replace=False))
    return ReplayData.from_records([records[i] for i in picked], name="routellm-gsm8k-200")


@pytest.fixture(scope="module")
def eu_policy(tmp_path_factory) -> str:
    raw = yaml.safe_load((EXAMPLES_DIR / "two_model.yaml").read_text())
    raw["name"] = "two-model-eu"
    raw["rule"] = {"type": "expected_utility", "lambda": 20.0}
    raw["expected_cost"] = {"small": {"prompt_tokens": 1190, "completion_tokens": 103},
                            "large": {"prompt_tokens": 1190, "completion_tokens": 124}}
    path = tmp_path_factory.mktemp("policies") / "two_model_eu.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_probe_text_matches_replay_prompt_text(gsm8k):
    for record in gsm8k.records[:20]:
        assert probe_text(record.messages()) == record.prompt_text()
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Q?"}]},
            {"role": "assistant", "content": ""}, {"role": "user", "content": "More"}]
    from triage.replay import ReplayRecord

    rec = ReplayRecord(id="x", prompt=chat, outcomes={"m": {"score": 1.0}})
    assert probe_text(chat) == rec.prompt_text()


@pytest.mark.parametrize("which", ["thresholds", "expected_utility"])
def test_sdk_and_replay_decide_identically_on_200_queries(gsm8k, eu_policy, which):
    path = str(EXAMPLES_DIR / "two_model.yaml") if which == "thresholds" else eu_policy
    sdk = Router.from_file(path)
    sdk_decisions = [sdk.route(record.messages()) for record in gsm8k.records]

    replay = make_router(f"policy:path={path}")
    rows = np.arange(gsm8k.n)
    replay_decisions = replay.decisions(gsm8k, rows)
    assert [d.model_dump() for d in replay_decisions] == [d.model_dump() for d in sdk_decisions]

    # the sweep the evaluator scores picks the candidate column of each decided strategy
    sweep = replay.sweep(gsm8k, rows)
    chosen = [gsm8k.candidates[j] for j in sweep.choices[sweep.default]]
    assert chosen == [sdk.policy.strategies[d.strategy].candidate for d in sdk_decisions]
    # a meaningful check: the probe sends queries both ways
    assert len({d.strategy for d in sdk_decisions}) == 2, "probe routes everything to one model"
    if which == "expected_utility":
        assert all(d.utilities is not None for d in sdk_decisions)


def test_replay_evaluate_cli_replays_a_policy_file(gsm8k, tmp_path):
    data = tmp_path / "gsm8k200.jsonl"
    write_replay(gsm8k.records, data)
    path = EXAMPLES_DIR / "two_model.yaml"
    result = CliRunner().invoke(app, ["replay", "evaluate", str(data), "--policy", str(path),
                                      "--json", "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    entry = next(r for r in doc["routers"].values() if r["spec"].startswith("policy:"))
    # --policy P is the same router as --router policy:path=P
    same = CliRunner().invoke(app, ["replay", "evaluate", str(data), "--router", f"policy:path={path}",
                                    "--json", "--bootstrap", "0"])
    assert same.exit_code == 0, same.output
    assert next(r for r in json.loads(same.output)["routers"].values()
                if r["spec"].startswith("policy:"))["accuracy"] == entry["accuracy"]
    missing = CliRunner().invoke(app, ["replay", "evaluate", str(data), "--policy", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "policy file not found" in missing.output
    assert entry["n"] == gsm8k.n
    # what the evaluator scored is exactly what the SDK decides, query by query
    sdk = Router.from_file(path)
    picked = [sdk.policy.strategies[sdk.route(r.messages()).strategy].candidate for r in gsm8k.records]
    share_large = picked.count("gpt-4-1106-preview") / gsm8k.n
    assert entry["call_share"]["gpt-4-1106-preview"] == pytest.approx(share_large)
    accuracy = np.mean([r.outcomes[c].score for r, c in zip(gsm8k.records, picked)])
    assert entry["accuracy"] == pytest.approx(accuracy)
    assert 0.0 < share_large < 1.0
