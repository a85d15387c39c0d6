"""The replay format contract: round trips, unknown fields, precise errors, skip-invalid, JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from triage.eval.importers import import_source
from triage.replay import ReplayFormatError, ReplayRecord, iter_replay, read_replay, write_replay
from triage.replay.io import SkippedLines
from triage.router.cli.main import app
from triage.settings import get_settings


def _line(**overrides: object) -> str:
    record: dict[str, object] = {
        "id": "q1",
        "prompt": "What is 2 + 2?",
        "task": "arith",
        "split": "test",
        "gold": "4",
        "outcomes": {"small": {"score": 1.0, "cost_usd": 0.001, "completion_tokens": 12}},
    }
    record.update(overrides)
    return json.dumps(record)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real_records() -> list[ReplayRecord]:
    """A small real dataset: the GSM8K GPT-3 solutions (1,319 records, four candidates)."""
    return import_source("gsm8k-solutions", get_settings().data_dir / "gsm8k")


def test_round_trip_keeps_every_field_and_unknown_ones(tmp_path: Path, real_records: list[ReplayRecord]) -> None:
    records = real_records[:50]
    first = records[0].model_copy()
    extra_line = _line(
        id="extra",
        prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi", "name": "u"}],
        future_field={"nested": [1, 2]},
        outcomes={"m": {"score": 0.5, "latency_s": 1.5, "truncated": True, "provider_region": "eu"}},
    )
    src = _write_lines(tmp_path / "in.jsonl", [extra_line])
    records = [*records, *read_replay(src)]

    out = tmp_path / "out.jsonl"
    assert write_replay(records, out) == 51
    back = read_replay(out)

    assert [r.model_dump() for r in back] == [r.model_dump() for r in records]
    assert back[0].model_dump() == first.model_dump()
    assert back[0].token_counter == "tiktoken/r50k_base"  # importer's extra field survived
    last = back[-1]
    assert last.future_field == {"nested": [1, 2]}
    assert last.outcomes["m"].provider_region == "eu"
    assert last.prompt[1].name == "u"  # unknown field of a chat message
    assert last.messages()[0] == {"role": "system", "content": "be brief"}


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", [_line(id="a"), _line(id="b"), '{"id": "c", "prompt": '])
    with pytest.raises(ReplayFormatError) as info:
        read_replay(path)
    err = info.value
    assert (err.path, err.line) == (str(path), 3)
    assert f"{path}:3" in str(err) and "invalid JSON" in str(err)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"outcomes": {"small": {"score": 1.5}}}, "outcomes.small.score"),
        ({"outcomes": {"small": {"score": 1.0, "completion_tokens": -3}}}, "outcomes.small.completion_tokens"),
        ({"split": "validation"}, "split"),
        ({"outcomes": {}}, "outcomes"),
        ({"prompt": None}, "prompt"),
    ],
)
def test_schema_violation_names_the_field(tmp_path: Path, bad: dict, field: str) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", [_line(id="ok"), _line(id="bad", **bad)])
    with pytest.raises(ReplayFormatError) as info:
        read_replay(path)
    err = info.value
    assert err.line == 2
    assert err.field_path == field or err.field_path.startswith(field + ".")
    assert f"{path}:2: field '{err.field_path}'" in str(err)


def test_missing_required_field_and_duplicate_id(tmp_path: Path) -> None:
    no_prompt = json.dumps({"id": "x", "outcomes": {"m": {"score": 1}}})
    with pytest.raises(ReplayFormatError, match=r":1: field 'prompt'"):
        read_replay(_write_lines(tmp_path / "a.jsonl", [no_prompt]))
    with pytest.raises(ReplayFormatError, match=r":2: field 'id': duplicate id 'q1'"):
        read_replay(_write_lines(tmp_path / "b.jsonl", [_line(), _line()]))


def test_skip_invalid_reports_and_skips(tmp_path: Path) -> None:
    lines = [_line(id="a"), "not json", _line(id="b", outcomes={"m": {"score": 2}}), "", _line(id="c"), _line(id="a")]
    path = _write_lines(tmp_path / "mixed.jsonl", lines)
    skipped = SkippedLines()
    kept = list(iter_replay(path, skip_invalid=True, skipped=skipped))
    assert [r.id for r in kept] == ["a", "c"]
    assert [(e.line, e.field_path) for e in skipped.errors] == [(2, ""), (3, "outcomes.m.score"), (6, "id")]
    with pytest.raises(ReplayFormatError):
        read_replay(path)  # the default stops at the first bad line


def test_schema_command_prints_a_schema_real_records_satisfy(real_records: list[ReplayRecord]) -> None:
    result = CliRunner().invoke(app, ["replay", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert set(schema["required"]) == {"id", "prompt", "outcomes"}
    assert schema["additionalProperties"] is True
    validator = jsonschema.Draft202012Validator(schema)
    for record in real_records[:20]:
        validator.validate(json.loads(record.model_dump_json()))
    bad = json.loads(real_records[0].model_dump_json())
    bad["outcomes"]["6b_finetuning"]["score"] = 3
    assert not validator.is_valid(bad)
