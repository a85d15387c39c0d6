"""`triage policy init`: the starter policy loads with the real loader, routes with the real probe,
explains its fields in comments, and is never written over or written invalid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triage.policies.loader import load_policy
from triage.router.cli.main import app

runner = CliRunner()


def _init(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["policy", "init", *args], env=env)


def test_init_writes_a_commented_policy_that_loads_and_routes(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    res = _init("--cheap", "openai/gpt-4o-mini", "--strong", "anthropic/claude-3-5-sonnet-20241022",
                "--out", str(out), "--name", "mine")
    assert res.exit_code == 0, res.output
    policy = load_policy(out)
    assert policy.name == "mine" and [policy.tiers.get(t) for t in ("easy", "normal", "hard")] == ["cheap", "cheap", "strong"]
    assert policy.strategies["cheap"].model == "openai/gpt-4o-mini"
    assert policy.strategies["cheap"].api_key_env == "OPENAI_API_KEY"  # inferred from the provider
    assert policy.strategies["strong"].api_key_env == "ANTHROPIC_API_KEY"
    text = out.read_text()
    for field in ("name:", "version:", "probe:", "model:", "api_key_env:", "max_tokens:", "on_truncation:",
                  "tiers:", "rule:", "thresholds:", "fallback:"):
        [line] = [ln for ln in text.splitlines() if ln.strip().startswith(field)][:1]
        assert "#" in line, f"{field} has no comment: {line!r}"
    # Next steps name the key and the commands to run on the file.
    assert "export OPENAI_API_KEY" in res.stdout and "triage route" in res.stdout and str(out) in res.stdout
    # The decision needs no call, but the policy's keys must be set (dummy values: nothing is called).
    env = {"OPENAI_API_KEY": "sk-dummy", "ANTHROPIC_API_KEY": "sk-dummy"}
    res = runner.invoke(app, ["route", "what is 2+2", "--policy", str(out), "--json"], env=env)
    assert res.exit_code == 0, res.output
    decision = json.loads(res.stdout)
    assert decision["policy"] == "mine" and decision["strategy"] in ("cheap", "strong")
    assert decision["model"] in ("openai/gpt-4o-mini", "anthropic/claude-3-5-sonnet-20241022")
    res = runner.invoke(app, ["policy", "validate", str(out)])
    assert res.exit_code == 0 and "policy 'mine'" in res.stdout


def test_local_models_need_no_key_and_explicit_key_env_wins(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    res = _init("--cheap", "local/smollm2-135m", "--strong", "gpt-4o", "--strong-key-env", "MY_GATEWAY_KEY",
                "--strong-api-base", "http://127.0.0.1:9/v1", "--out", str(out))
    assert res.exit_code == 0, res.output
    policy = load_policy(out)
    assert policy.strategies["cheap"].api_key_env is None
    assert policy.strategies["strong"].api_key_env == "MY_GATEWAY_KEY"
    assert policy.strategies["strong"].api_base == "http://127.0.0.1:9/v1"
    assert "export MY_GATEWAY_KEY" in res.stdout


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    out.write_text("my own policy\n")
    res = _init("--cheap", "openai/gpt-4o-mini", "--strong", "openai/gpt-4o", "--out", str(out))
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0]
    assert out.read_text() == "my own policy\n"
    res = _init("--cheap", "openai/gpt-4o-mini", "--strong", "openai/gpt-4o", "--out", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert load_policy(out).strategies["strong"].model == "openai/gpt-4o"


@pytest.mark.parametrize("args, message", [
    (["--cheap", "nosuchprovider/x", "--strong", "openai/gpt-4o"], "no provider serves 'nosuchprovider/x'"),
    (["--cheap", "openai/gpt-4o-mini", "--strong", "local/no-such-model"], "unknown local model"),
    (["--cheap", "openai/gpt 4o", "--strong", "openai/gpt-4o"], "has no spaces"),
    (["--cheap", "openai/gpt-4o-mini", "--strong", "openai/gpt-4o", "--cheap-key-env", "sk-abc123"],
     "NAME of an environment variable"),
    (["--cheap", "openai/gpt-4o-mini", "--strong", "openai/gpt-4o", "--name", "bad name"], "--name"),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "p.yaml"
    res = _init(*args, "--out", str(out))
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind
