"""The demo's ``local-pair`` step (eval/demo_local_pair.py): query-level routing between two local models.

Runs the step itself on the first 2 GSM8K test questions with SmolLM2-135M as both the small and the
large model (the Qwen pair takes minutes; the step is the same code): the real Router with the
session's default probe, the real int4 local model, a real SQLite ledger in the output folder.
The single-model answers are computed without reuse here, so the test also proves that the routed
answer is the chosen model's own greedy answer (what the demo relies on when it reuses it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from triage.eval.demo import STEPS, DemoContext
from triage.eval.demo_local_pair import DEFAULT_POLICY, JSON_NAME, LEDGER_NAME, OUTCOME_SOURCE, local_pair_step
from triage.policies.loader import load_policy
from triage.settings import get_settings
from triage.token_router.gsm8k import extract_answer, load_problems, same_answer

ROWS = ["tier easy", "tier normal", "tier hard", "small-only", "large-only", "routed"]


def test_pair_policy_file_loads_and_routes_hard_to_the_large_model():
    policy = load_policy(DEFAULT_POLICY)
    assert {n: s.model for n, s in policy.strategies.items()} == {
        "small": "local/qwen2.5-coder-0.5b", "large": "local/qwen2.5-coder-1.5b"}
    assert dict(policy.tiers) == {"easy": "small", "normal": "small", "hard": "large"}
    for s in policy.strategies.values():  # greedy, same prompt: a routed answer is the model's own
        assert s.temperature == 0.0 and s.max_tokens == 256 and s.on_truncation == "accept"
        assert s.system_prompt == policy.strategies["small"].system_prompt
        # The final-number extraction reads "The answer is N" first.
        assert s.system_prompt.endswith("'The answer is N.'") and extract_answer("x = 4\nThe answer is 12.") == 12
    assert "local-pair" in [s.name for s in STEPS]


@pytest.fixture(scope="module")
def smol_policy(tmp_path_factory) -> Path:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    for s in doc["strategies"].values():
        s["model"] = "local/smollm2-135m"
        s["max_tokens"] = 32  # seconds, not minutes
    path = tmp_path_factory.mktemp("pair") / "smol_pair.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def step_run(smol_policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-out")
    console = Console(record=True, width=220)
    ctx = DemoContext(out=out, data_dir=get_settings().data_dir, console=console, local_pair_questions=2)
    run = local_pair_step(ctx, policy_path=smol_policy, reuse=False)
    return ctx, run, console.export_text()


def test_table_and_json_rows(step_run):
    ctx, run, text = step_run
    for label in ROWS + ["small-only", "accuracy", "mean tokens", "seconds", "-> large"]:
        assert label in text
    doc = json.loads((ctx.out / JSON_NAME).read_text())
    assert ctx.artifacts["local_pair"] == ctx.out / JSON_NAME
    assert doc["policy"] == "local-pair" and doc["large"] == "large"
    assert doc["data"]["count"] == 2 and doc["data"]["file"].endswith("gsm8k/test.jsonl")
    assert set(doc["timing_s"]) == {"builds", "answers", "step"}
    rows = {r["row"]: r for r in doc["rows"]}
    assert list(rows) == ROWS
    for r in rows.values():
        assert {"model", "n", "accuracy", "mean_completion_tokens", "seconds", "share_large"} <= set(r)
    assert sum(rows[f"tier {t}"]["n"] for t in ("easy", "normal", "hard")) == 2
    assert rows["small-only"]["share_large"] == 0.0 and rows["large-only"]["share_large"] == 1.0
    problems = load_problems(Path(get_settings().data_dir) / "gsm8k" / "test.jsonl", 0, 2)
    qs = doc["questions"]
    assert [q["index"] for q in qs] == [0, 1] and [q["reference"] for q in qs] == [p.answer for p in problems]
    # Scores recomputed from the stored answers: exact match on the final number.
    for q in qs:
        for a in [q["routed"], *q["single"].values()]:
            assert a["correct"] == same_answer(extract_answer(a["text"]), q["reference"])
            assert 0 < a["completion_tokens"] <= 32 and a["seconds"] > 0
    routed_acc = sum(q["routed"]["correct"] for q in qs) / 2
    assert rows["routed"]["accuracy"] == routed_acc and rows["routed"]["n"] == 2
    assert rows["routed"]["share_large"] == sum(q["strategy"] == "large" for q in qs) / 2
    for s in ("small", "large"):
        assert rows[f"{s}-only"]["accuracy"] == sum(q["single"][s]["correct"] for q in qs) / 2
        assert rows[f"{s}-only"]["mean_completion_tokens"] == sum(q["single"][s]["completion_tokens"] for q in qs) / 2


def test_routed_answer_is_the_chosen_models_greedy_answer(step_run):
    _, run, _ = step_run
    for q in run.questions:
        own = q.single[q.strategy]
        assert not own.reused
        assert q.routed.text == own.text and q.routed.completion_tokens == own.completion_tokens


def test_every_routed_call_is_in_the_ledger_with_its_outcome(step_run):
    from triage.router.ledger import open_ledger

    ctx, run, _ = step_run
    store = open_ledger(str(ctx.out / LEDGER_NAME))
    try:
        entries = {e.record.request_id: e for e in store.iter_entries()}
    finally:
        store.close()
    assert set(entries) == {q.request_id for q in run.questions} and len(entries) == 2
    for q in run.questions:
        e = entries[q.request_id]
        assert (e.record.policy_name, e.record.strategy, e.record.tier) == ("local-pair", q.strategy, q.tier)
        assert e.record.completion_tokens == q.routed.completion_tokens
        assert e.outcome is not None and e.outcome.source == OUTCOME_SOURCE
        assert e.outcome.score == (1.0 if q.routed.correct else 0.0)


def test_zero_questions_skips_the_step(tmp_path):
    console = Console(record=True, width=120)
    ctx = DemoContext(out=tmp_path, data_dir=get_settings().data_dir, console=console, local_pair_questions=0)
    assert local_pair_step(ctx) is None  # the Qwen policy: nothing is installed, built or called
    assert "skipped" in console.export_text() and not any(tmp_path.iterdir())
