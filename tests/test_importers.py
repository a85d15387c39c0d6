"""Importers on the real shared datasets: known facts, joins, tokens, prices and the CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from triage.eval.importers import available_importers, import_source
from triage.eval.importers.tokens import get_counter
from triage.eval.prices import load_prices
from triage.replay import ReplayData, ReplayRecord, read_replay
from triage.router.cli.main import app
from triage.errors import ConfigError
from triage.settings import get_settings

DATA = get_settings().data_dir
GPT4 = "gpt-4-1106-preview"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _by_task(records: list[ReplayRecord], task: str) -> ReplayData:
    return ReplayData.from_records([r for r in records if r.task == task])


def _acc(data: ReplayData, candidate: str) -> float:
    return float(np.nanmean(data.score[:, data.candidate_index(candidate)]))


def _total_cost(data: ReplayData, candidate: str) -> float:
    return float(np.nansum(data.cost[:, data.candidate_index(candidate)]))


# Each dataset is imported once per test session.
@pytest.fixture(scope="module")
def pricing_reversal() -> list[ReplayRecord]:
    return import_source("pricing-reversal", DATA / "pricing-reversal")


@pytest.fixture(scope="module")
def routerbench() -> list[ReplayRecord]:
    return import_source("routerbench", DATA / "routerbench-subset")


@pytest.fixture(scope="module")
def routellm() -> list[ReplayRecord]:
    return import_source("routellm", DATA / "routellm")


@pytest.fixture(scope="module")
def gsm8k_solutions() -> list[ReplayRecord]:
    return import_source("gsm8k-solutions", DATA / "gsm8k")


def test_registry_lists_the_four_sources() -> None:
    assert set(available_importers()) == {"pricing-reversal", "routerbench", "routellm", "gsm8k-solutions"}


# --- pricing-reversal -------------------------------------------------------------------------


def test_pricing_reversal_counts_and_aime_facts(pricing_reversal: list[ReplayRecord]) -> None:
    assert Counter(r.task for r in pricing_reversal) == {
        "aime-hybrid": 60, "gpqa-test": 198, "livemathbench-test": 121, "simpleqa-test": 4326,
    }
    aime = _by_task(pricing_reversal, "aime-hybrid")
    assert aime.m == 8
    assert _acc(aime, "gpt-5-mini") == pytest.approx(0.85, abs=1e-9)
    assert _total_cost(aime, "gpt-5-mini") == pytest.approx(0.6127, abs=0.001)
    assert _acc(aime, "gpt-5.2-high") == 1.0 and _total_cost(aime, "gpt-5.2-high") == pytest.approx(6.19, abs=0.01)
    gpqa = _by_task(pricing_reversal, "gpqa-test")
    # The price reversal: same accuracy, the "cheaper" model costs more.
    assert _acc(gpqa, "gemini-3-flash-preview") == pytest.approx(_acc(gpqa, "gpt-5.2-high"))
    assert _total_cost(gpqa, "gemini-3-flash-preview") > _total_cost(gpqa, "gpt-5.2-high")
    ids = [r.id for r in pricing_reversal]
    assert len(set(ids)) == len(ids) and "aime-hybrid/17" in ids
    assert all(r.split is None for r in pricing_reversal)


def test_pricing_reversal_partial_runs_join_on_the_question(pricing_reversal: list[ReplayRecord]) -> None:
    simpleqa = [r for r in pricing_reversal if r.task == "simpleqa-test"]
    runs = Counter(m for r in simpleqa for m in r.outcomes)
    assert runs["claude-opus-4.6-thinking"] == 4310 and runs["gpt-5-mini"] == 4326
    assert "claude-haiku-4.5" not in runs and "kimi-k2.5" not in runs
    # gpt-5.2-high's LiveMathBench file numbers from 0: every joined outcome must be its own answer
    # to the same question, which a join on `index` alone would get wrong.
    raw = orjson.loads((DATA / "pricing-reversal/consolidated/livemathbench-test-gpt-5.2-high.json").read_bytes())
    by_index = {row["index"]: row for row in raw["records"]}
    joined = [r for r in pricing_reversal if r.task == "livemathbench-test" and "gpt-5.2-high" in r.outcomes]
    assert len(joined) == 120
    for record in joined:
        outcome = record.outcomes["gpt-5.2-high"]
        row = by_index[outcome.source_index]
        assert row["origin_query"] == record.query
        assert (row["cost"], row["completion_tokens"]) == (outcome.cost_usd, outcome.completion_tokens)


def test_pricing_reversal_tokens_and_truncation(pricing_reversal: list[ReplayRecord]) -> None:
    aime = [r for r in pricing_reversal if r.task == "aime-hybrid"]
    minimax = [r.outcomes["MiniMax-M2.5"] for r in aime]
    assert sum(o.truncated for o in minimax) == 56
    assert all(o.truncated == (o.completion_tokens >= 2048) for o in minimax)
    assert all(r.outcomes["gpt-5-mini"].truncated is None for r in aime)  # no evidence either way
    raw = orjson.loads((DATA / "pricing-reversal/consolidated/aime-hybrid-gpt-5-mini.json").read_bytes())
    row = next(x for x in raw["records"] if x["index"] == 17)
    o = next(r for r in aime if r.id == "aime-hybrid/17").outcomes["gpt-5-mini"]
    assert (o.prompt_tokens, o.completion_tokens, o.reasoning_tokens) == (
        row["prompt_tokens"], row["completion_tokens"], row["thinking_tokens"],
    )
    assert o.reasoning_tokens <= o.completion_tokens


def test_shipped_prices_reproduce_logged_costs(
    pricing_reversal: list[ReplayRecord], routerbench: list[ReplayRecord]
) -> None:
    table = load_prices()
    for records in (pricing_reversal, routerbench):
        for record in records:
            for model, o in record.outcomes.items():
                expected = table.cost(model, o.prompt_tokens, o.completion_tokens)
                assert expected == pytest.approx(o.cost_usd, rel=1e-9, abs=1e-15), (record.id, model)


# --- routerbench ------------------------------------------------------------------------------


def test_routerbench_rows_splits_and_ids(routerbench: list[ReplayRecord]) -> None:
    assert len(routerbench) == 3178
    assert Counter((r.task, r.split) for r in routerbench) == {
        ("arc-challenge", "train"): 1039, ("arc-challenge", "test"): 445,
        ("mbpp", "train"): 299, ("mbpp", "test"): 128,
        ("winogrande", "train"): 887, ("winogrande", "test"): 380,
    }
    ids = [r.id for r in routerbench]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(r.prompt, str) and r.prompt for r in routerbench)
    # 14 queries are split over two rows whose scored models are complementary: both kept, ids suffixed.
    pairs: dict[str, list[ReplayRecord]] = {}
    for r in routerbench:
        if "@" in r.id:
            assert r.id == f"{r.sample_id}@{r.source_row}"
            pairs.setdefault(r.sample_id, []).append(r)
    assert len(pairs) == 14 and all(len(p) == 2 for p in pairs.values())
    for a, b in pairs.values():
        assert not set(a.outcomes) & set(b.outcomes) and len(set(a.outcomes) | set(b.outcomes)) == 11
    assert sum(len(r.outcomes) == 11 for r in routerbench) == 3178 - 28
    assert routerbench[0].token_counter == "tiktoken/cl100k_base"


def test_routerbench_test_split_facts(routerbench: list[ReplayRecord]) -> None:
    test = [r for r in routerbench if r.split == "test"]
    arc, mbpp = _by_task(test, "arc-challenge"), _by_task(test, "mbpp")
    assert _acc(arc, GPT4) == pytest.approx(0.957, abs=0.001)
    # SOURCE.md's $0.00507 averages all 445 rows, including 6 where gpt-4 has a cost but no score.
    rows = list(csv.DictReader((DATA / "routerbench-subset/arc_challenge_test.csv").open(encoding="utf-8", newline="")))
    scored = [float(r[f"{GPT4}|total_cost"]) for r in rows if r[GPT4] != ""]
    gpt4 = arc.candidate_index(GPT4)
    assert np.nanmean(arc.cost[:, gpt4]) == pytest.approx(np.mean(scored), rel=1e-12)
    assert np.nanmean(arc.cost[:, gpt4]) == pytest.approx(0.00507, rel=0.02)
    assert _acc(mbpp, GPT4) == pytest.approx(0.688, abs=0.001)
    assert _total_cost(mbpp, GPT4) / mbpp.n == pytest.approx(0.00938, abs=0.000005)


def test_routerbench_single_file_keeps_its_split() -> None:
    records = import_source("routerbench", DATA / "routerbench-subset" / "mbpp_train.csv")
    assert len(records) == 299 and {r.split for r in records} == {"train"} and {r.task for r in records} == {"mbpp"}


# --- routellm ---------------------------------------------------------------------------------


def test_routellm_known_accuracies(routellm: list[ReplayRecord]) -> None:
    assert Counter(r.task for r in routellm) == {"gsm8k": 1319, "mmlu": 14042, "mt_bench": 80}
    gsm8k, mmlu = _by_task(routellm, "gsm8k"), _by_task(routellm, "mmlu")
    assert _acc(gsm8k, MIXTRAL) == pytest.approx(0.638, abs=0.001)
    assert _acc(gsm8k, GPT4) == pytest.approx(0.857, abs=0.001)
    assert _acc(mmlu, MIXTRAL) == pytest.approx(0.681, abs=0.001)
    assert _acc(mmlu, GPT4) == pytest.approx(0.806, abs=0.001)
    contaminated = Counter(r.task for r in routellm if r.contaminated)
    assert contaminated == {"gsm8k": 12, "mmlu": 5, "mt_bench": 8}


def test_routellm_tokens_costs_and_gold(routellm: list[ReplayRecord]) -> None:
    table, counter = load_prices(), get_counter("cl100k_base")
    rows = list(csv.DictReader((DATA / "routellm/gsm8k/gsm8k_responses.csv").open(encoding="utf-8", newline="")))
    gsm8k = [r for r in routellm if r.task == "gsm8k"]
    for record, row in zip(gsm8k[:25], rows[:25]):
        assert record.prompt == row["prompt"]
        for model in (GPT4, MIXTRAL):
            o = record.outcomes[model]
            assert o.completion_tokens == counter.count(row[f"{model}_response"])
            assert o.cost_usd == pytest.approx(table.cost(model, o.prompt_tokens, o.completion_tokens))
        # the 8-shot prefix is billed input: several hundred tokens beyond the question
        assert record.outcomes[GPT4].prompt_tokens > counter.count(record.prompt) + 500
        assert record.token_counter == "tiktoken/cl100k_base"
    assert gsm8k[0].gold == "18"
    mmlu = [r for r in routellm if r.task == "mmlu"]
    assert all(o.completion_tokens == 1 for r in mmlu for o in r.outcomes.values())
    assert len({r.subject for r in mmlu}) == 57


def test_routellm_mt_bench_score_is_judge_score_over_ten(routellm: list[ReplayRecord]) -> None:
    judgements = [json.loads(x) for x in (DATA / "routellm/mt_bench/judgements.jsonl").read_text().splitlines()]
    mt = {r.id: r for r in routellm if r.task == "mt_bench"}
    for j in judgements:
        outcome = mt[f"mt_bench/{j['question_id']}"].outcomes[j["model"]]
        assert outcome.turn_scores[j["turn"] - 1] == pytest.approx(j["score"] / 10)
    for model in (GPT4, MIXTRAL):
        mean_judge = np.mean([j["score"] for j in judgements if j["model"] == model]) / 10
        assert _acc(_by_task(list(mt.values()), "mt_bench"), model) == pytest.approx(mean_judge)
    assert all(o.completion_tokens > 0 for r in mt.values() for o in r.outcomes.values())


def test_routellm_subfolder_and_dataset_option() -> None:
    only = import_source("routellm", DATA / "routellm", dataset="mt_bench")
    assert {r.task for r in only} == {"mt_bench"} and len(only) == 80
    sub = import_source("routellm", DATA / "routellm" / "gsm8k")
    assert len(sub) == 1319


# --- gsm8k-solutions --------------------------------------------------------------------------


def test_gsm8k_solutions_accuracies_gold_and_costs(gsm8k_solutions: list[ReplayRecord]) -> None:
    data = ReplayData.from_records(gsm8k_solutions)
    assert data.n == 1319
    expected = {"6b_finetuning": 0.217, "6b_verification": 0.390, "175b_finetuning": 0.347, "175b_verification": 0.563}
    for name, acc in expected.items():
        assert _acc(data, name) == pytest.approx(acc, abs=0.001)
    test = [json.loads(x) for x in (DATA / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r.gold for r in gsm8k_solutions] == [t["answer"].rsplit("####", 1)[-1].strip() for t in test]
    table, counter = load_prices(), get_counter("r50k_base")
    raw = json.loads((DATA / "gsm8k/example_model_solutions.jsonl").open(encoding="utf-8").readline())
    first = gsm8k_solutions[0]
    q, s = counter.count(raw["question"]), counter.count(raw["175b_verification"]["solution"])
    ver = first.outcomes["175b_verification"]
    assert (ver.samples, ver.prompt_tokens, ver.completion_tokens) == (100, q + 100 * (q + s), 100 * s)
    assert ver.cost_usd == pytest.approx(table.cost("gpt-3-175b", q + 100 * (q + s), 100 * s))
    fine = first.outcomes["175b_finetuning"]
    assert (fine.prompt_tokens, fine.samples) == (q, 1)
    assert first.token_counter == "tiktoken/r50k_base"


def test_token_counters_are_the_real_encodings() -> None:
    cl100k, r50k = get_counter("cl100k_base"), get_counter("r50k_base")
    # Reference ids published by OpenAI's tiktoken for these encodings.
    assert cl100k.encoding.encode_ordinary("hello world") == [15339, 1917]
    assert r50k.encoding.encode_ordinary("hello world") == [31373, 995]
    assert r50k.encoding.n_vocab == 50257
    with pytest.raises(ValueError, match="unknown encoding"):
        get_counter("o9k")


# --- prices and the CLI -----------------------------------------------------------------------


def test_price_table_covers_every_candidate(
    pricing_reversal: list[ReplayRecord], routerbench: list[ReplayRecord],
    routellm: list[ReplayRecord],
) -> None:
    table = load_prices()
    models = {m for recs in (pricing_reversal, routerbench, routellm) for r in recs[:: 50] for m in r.outcomes}
    models |= {"gpt-3-6b", "gpt-3-175b"}
    assert models <= set(table.models)
    assert all(p.sources for p in table.models.values())
    assert table.price("gpt-3-175b").approximate
    with pytest.raises(ConfigError, match="no price for model 'nope'"):
        table.price("nope")


def test_bad_price_files(tmp_path: Path) -> None:
    (tmp_path / "neg.yaml").write_text("models:\n  m: {input: -1, output: 1, sources: x}\n")
    with pytest.raises(ConfigError, match=r"neg.yaml: field 'models.m.input'"):
        load_prices(tmp_path / "neg.yaml")
    (tmp_path / "broken.yaml").write_text("models: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_prices(tmp_path / "broken.yaml")
    # a JSON table works and changes costs
    (tmp_path / "p.json").write_text(json.dumps({"models": {
        GPT4: {"input": 0, "output": 0, "sources": "test"}, MIXTRAL: {"input": 1e6, "output": 0, "sources": "test"},
    }}))
    records = import_source("routellm", DATA / "routellm", dataset="mt_bench", prices=tmp_path / "p.json")
    assert all(r.outcomes[GPT4].cost_usd == 0 for r in records)
    assert all(r.outcomes[MIXTRAL].cost_usd == r.outcomes[MIXTRAL].prompt_tokens for r in records)


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "o.jsonl")
    assert "path not found" in _one_line_error(["replay", "import", "routellm", str(tmp_path / "missing"), "-o", out])
    assert "unknown source 'nope'" in _one_line_error(["replay", "import", "nope", str(DATA), "-o", out])
    (tmp_path / "bad.yaml").write_text("models: {m: {input: x}}\n")
    assert "bad.yaml" in _one_line_error(
        ["replay", "import", "routellm", str(DATA / "routellm/gsm8k"), "-o", out, "--prices", str(tmp_path / "bad.yaml")]
    )
    assert "unknown dataset 'x'" in _one_line_error(
        ["replay", "import", "pricing-reversal", str(DATA / "pricing-reversal"), "--dataset", "x", "-o", out]
    )
    assert not Path(out).exists()


def test_cli_import_writes_a_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "aime.jsonl"
    args = ["replay", "import", "pricing-reversal", str(DATA / "pricing-reversal"), "--dataset", "aime-hybrid"]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "gpt-5-mini" in result.stdout and "0.850" in result.stdout
    records = read_replay(out)
    assert len(records) == 60 and records[16].id == "aime-hybrid/17"
