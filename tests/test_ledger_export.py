"""Ledger export: valid replay JSONL (the replay issue's contract) and a lossless parquet twin."""

from __future__ import annotations

import json
from pathlib import Path

from triage.replay import ReplayData, read_replay
from triage.router.ledger import LedgerWriter, OutcomeRecord, open_ledger
from triage.router.ledger.export import export_jsonl, export_parquet, read_parquet_replay
from tests.support.ledger import make_record

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


def _ledger(tmp_path: Path, *, store_prompts: bool) -> str:
    url = str(tmp_path / f"l-{store_prompts}.sqlite")
    store = open_ledger(url)
    with LedgerWriter(store, store_prompts=store_prompts) as w:
        for i in range(40):
            w.record(make_record(i, prompt=CHAT if i % 2 else f"question {i}", prompt_sha256=None))
    store.add_outcomes([OutcomeRecord(request_id=f"req-{i:06d}", score=(i % 3) / 2, source="judge")
                        for i in range(40) if i % 4 != 3])
    store.close()
    return url


def test_jsonl_export_is_valid_replay_data(tmp_path: Path) -> None:
    url = _ledger(tmp_path, store_prompts=False)
    with open_ledger(url) as store:
        res = export_jsonl(store, tmp_path / "o.jsonl")
        original = {e.record.request_id: e for e in store.iter_entries()}
    assert (res.written, res.skipped_unscored) == (30, 10)
    records = read_replay(tmp_path / "o.jsonl")  # the replay reader's validation
    assert len(records) == 30
    for rr in records:
        entry = original[rr.id]
        rec, out = entry.record, entry.outcome
        assert out is not None
        assert rr.prompt == "" and rr.model_extra["prompt_sha256"] == rec.prompt_sha256  # text not kept
        (cand, o), = rr.outcomes.items()
        assert cand == rec.strategy and o.score == out.score and o.cost_usd == rec.cost_usd
        assert (o.prompt_tokens, o.completion_tokens, o.reasoning_tokens) == (
            rec.prompt_tokens, rec.completion_tokens, rec.reasoning_tokens)
        assert o.truncated == rec.truncated and o.model_extra["model"] == rec.model
        assert rr.model_extra["tier"] == rec.tier and rr.model_extra["tier_probs"] == rec.probe.tier_probs
    data = ReplayData.from_records(records)
    assert set(data.candidates) <= {"small-fast", "small-think", "large-think"} and data.n == 30


def test_stored_prompts_are_exported_and_parquet_round_trips(tmp_path: Path) -> None:
    url = _ledger(tmp_path, store_prompts=True)
    with open_ledger(url) as store:
        export_jsonl(store, tmp_path / "o.jsonl", candidate="model")
        res = export_parquet(store, tmp_path / "o.parquet", candidate="model")
    assert res.written == 30
    from_jsonl = read_replay(tmp_path / "o.jsonl")
    by_id = {r.id: r for r in from_jsonl}
    assert by_id["req-000001"].messages() == CHAT and by_id["req-000002"].prompt == "question 2"
    assert set(next(iter(r.outcomes)) for r in from_jsonl) <= {"gpt-4o-mini", "o3"}
    from_parquet = read_parquet_replay(tmp_path / "o.parquet")
    assert [json.loads(r.model_dump_json()) for r in from_parquet] == [
        json.loads(r.model_dump_json()) for r in from_jsonl]


def test_empty_export_writes_a_readable_file(tmp_path: Path) -> None:
    with open_ledger(str(tmp_path / "e.sqlite")) as store:
        assert export_jsonl(store, tmp_path / "e.jsonl").written == 0
        assert export_parquet(store, tmp_path / "e.parquet").written == 0
    assert read_replay(tmp_path / "e.jsonl") == [] and read_parquet_replay(tmp_path / "e.parquet") == []
