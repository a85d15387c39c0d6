"""Learning-loop test pieces: GSM8K traffic for `triage replay simulate`, a two-strategy policy, and
the CLI calls the loop tests share (tests/test_learning_loop.py, tests/test_simulate_shadow.py).

Traffic is RouteLLM GSM8K (Mixtral-8x7B vs GPT-4, every outcome known); the policy's probe is the
session probe, whose text features the test cache already holds for these rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from triage.router.cli.main import app
from triage.settings import get_settings
from tests.support.probes import ensure_session_default_probe

runner = CliRunner()
SMALL, LARGE = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def policy_doc(epsilon: float | None = 0.3, store_prompts: bool = True,
               shadow: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "loop", "version": 1, "probe": "default",
        "strategies": {
            "small": {"model": "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1", "replay_candidate": SMALL,
                      "price": {"input_per_mtok": 0.6, "output_per_mtok": 0.6}},
            "large": {"model": "openai/gpt-4-1106-preview", "replay_candidate": LARGE,
                      "price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
        },
        "tiers": {"easy": "small", "normal": "large", "hard": "large"},
        "rule": {"type": "thresholds", "thresholds": {"normal": 0.37, "hard": 0.5}},
        "ledger": {"store_prompts": store_prompts},
    }
    if epsilon:
        doc["exploration"] = {"type": "epsilon", "epsilon": epsilon}
    if shadow is not None:
        doc["shadow"] = shadow
    return doc


def gsm8k_traffic(folder: Path, rows: int) -> Path:
    """The first ``rows`` GSM8K queries as a full-information replay file in ``folder``."""
    from triage.eval.importers import import_source
    from triage.replay import write_replay

    ensure_session_default_probe()
    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[:rows]
    path = folder / "gsm8k.jsonl"
    write_replay(records, path)
    return path


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def one_line_exit_2(res: Any) -> str:
    """A CLI result's one stderr line, asserting exit 2 and that nothing else was said there."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def simulate(traffic: Path, policy: Path, ledger: str, *extra: str) -> dict[str, Any]:
    """`triage replay simulate ... --json` (exit 0 asserted): its JSON document."""
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy), "--ledger", ledger,
                              "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])
