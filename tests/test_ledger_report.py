"""Ledger reports: hand-checked figures, agreement with replay metrics, grouping, --since, the CLI."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from triage.replay.summary import summarize_outcomes, tep
from triage.replay import ReplayData, read_replay
from triage.router.cli.main import app
from triage.router.ledger import LedgerWriter, OutcomeRecord, open_ledger
from triage.router.ledger.export import export_jsonl
from triage.router.ledger.migrations import latest_version
from triage.router.ledger.records import Attempt, LedgerRecord
from triage.router.ledger.report import ledger_report, parse_since
from triage.errors import TriageError
from tests.support.ledger import T0, ledger_url, make_record  # noqa: F401

runner = CliRunner()


def _fill(url: str, n: int, *, scored_share: float = 1.0, seed: int = 0) -> None:
    """n records, outcomes on ``scored_share`` of them (some judged twice: the later one counts)."""
    rng = random.Random(seed)
    store = open_ledger(url)
    with LedgerWriter(store) as w:
        for i in range(n):
            w.record(make_record(i, rng=rng))
    outcomes = []
    for i in range(n):
        if rng.random() < scored_share:
            rid = f"req-{i:06d}"
            outcomes.append(OutcomeRecord(request_id=rid, score=rng.choice([0.0, 1.0, 0.5]), source="judge",
                                          time=T0 + timedelta(days=30)))
            if i % 4 == 0:  # re-judged later by the user: this one must win
                outcomes.append(OutcomeRecord(request_id=rid, score=rng.choice([0.0, 1.0]), source="user",
                                              time=T0 + timedelta(days=31)))
    store.add_outcomes(outcomes)
    store.close()


def _replay_summary(data: ReplayData, candidate: str) -> dict:
    j = data.candidate_index(candidate)
    rows = ~np.isnan(data.score[:, j])
    esc = np.array([bool(r.outcomes[candidate].model_extra["escalated"])
                    for r, keep in zip(data.records or [], rows) if keep])
    return summarize_outcomes(data.score[rows, j], data.cost[rows, j], data.prompt_tokens[rows, j],
                              data.completion_tokens[rows, j], data.reasoning_tokens[rows, j],
                              data.truncated[rows, j], escalated=esc)


def _close(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) <= set(b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    else:
        assert a == b


def test_hand_computed_report(tmp_path: Path) -> None:
    url = str(tmp_path / "l.sqlite")
    recs = [
        LedgerRecord(request_id="a", strategy="cheap", model="m1", tier="easy", time=T0,
                     attempts=[Attempt(model="m1", prompt_tokens=100, completion_tokens=100, cost_usd=0.01)]),
        LedgerRecord(request_id="b", strategy="cheap", model="m1", tier="easy", time=T0, truncated=True,
                     attempts=[Attempt(model="m1", prompt_tokens=100, completion_tokens=300, reasoning_tokens=50,
                                       cost_usd=0.03)]),
        LedgerRecord(request_id="c", strategy="big", model="m2", tier="hard", time=T0,
                     attempts=[Attempt(model="m1", prompt_tokens=100, completion_tokens=100, cost_usd=0.01),
                               Attempt(model="m2", kind="escalation", prompt_tokens=100, completion_tokens=700,
                                       reasoning_tokens=400, cost_usd=0.10)]),
        LedgerRecord(request_id="d", strategy="big", model="m2", tier="hard", time=T0,
                     attempts=[Attempt(model="m2", prompt_tokens=100, completion_tokens=900, cost_usd=0.09)]),
    ]
    with open_ledger(url) as store:
        store.write_records(recs)
        store.add_outcomes([OutcomeRecord(request_id="a", score=1, time=T0),
                            OutcomeRecord(request_id="a", score=0, time=T0 + timedelta(hours=1)),  # latest
                            OutcomeRecord(request_id="b", score=1),
                            OutcomeRecord(request_id="c", score=1),
                            OutcomeRecord(request_id="d", score=1)])
        # d's outcome stays; give "d" no influence on cheap. Now: cheap = {a:0, b:1}, big = {c:1, d:1}
        rep = ledger_report(store, by="strategy", baseline="big")
    g = {x["key"]: x for x in rep["groups"]}
    cheap, big = g["cheap"], g["big"]
    assert cheap["requests"] == 2 and cheap["n_scored"] == 2 and cheap["accuracy"] == 0.5
    assert cheap["tokens"] == {"prompt": 200, "completion": 400, "reasoning": 50, "total": 600, "mean_total": 300}
    assert cheap["total_cost"] == pytest.approx(0.04)
    assert cheap["cost_of_pass"] == pytest.approx(0.04 / 1)
    assert cheap["accuracy_per_1k_tokens"] == pytest.approx(0.5 / 0.3)
    assert cheap["truncation_rate"] == 0.5 and cheap["escalation_rate"] == 0.0
    assert big["accuracy"] == 1.0 and big["escalation_rate"] == 0.5 and big["truncation_rate"] == 0.0
    assert big["tokens"]["mean_total"] == 1000  # (100+100+100+700 + 100+900) / 2
    assert big["cost_of_pass"] == pytest.approx(0.20 / 2)
    # TEP vs big: accuracy -50% for -70% tokens -> 0.5 / 0.7
    assert cheap["tep"] == pytest.approx((-0.5) / (-0.7))
    assert big["tep"] is None  # same tokens as itself: undefined
    assert rep["overall"]["requests"] == 4 and rep["overall"]["accuracy"] == 0.75


def test_report_equals_replay_metrics_on_the_exported_records(ledger_url: str, tmp_path: Path) -> None:
    _fill(ledger_url, 240)
    with open_ledger(ledger_url) as store:
        report = ledger_report(store, by="strategy", baseline="large-think")
        res = export_jsonl(store, tmp_path / "out.jsonl")
    assert res.written == 240 and res.skipped_unscored == 0
    data = ReplayData.from_records(read_replay(tmp_path / "out.jsonl"))
    assert sorted(data.candidates) == sorted(g["key"] for g in report["groups"])
    base = _replay_summary(data, "large-think")
    for group in report["groups"]:
        expected = _replay_summary(data, group["key"])
        expected["tep"] = tep(expected["accuracy"], expected["tokens"]["mean_total"],
                              base["accuracy"], base["tokens"]["mean_total"])
        _close(expected, group)
        assert group["requests"] == expected["n"] > 0
    assert report["overall"]["n"] == 240


def test_unscored_requests_count_for_volume_not_accuracy(ledger_url: str, tmp_path: Path) -> None:
    _fill(ledger_url, 150, scored_share=0.6, seed=3)
    with open_ledger(ledger_url) as store:
        report = ledger_report(store, by="strategy")
        res = export_jsonl(store, tmp_path / "out.jsonl")
        rows = store.report_rows()
    n_scored = int((~np.isnan(rows.score)).sum())
    assert 0 < n_scored < 150 and res.written == n_scored and res.skipped_unscored == 150 - n_scored
    data = ReplayData.from_records(read_replay(tmp_path / "out.jsonl"))
    for group in report["groups"]:
        expected = _replay_summary(data, group["key"])
        assert group["n_scored"] == expected["n"] < group["requests"]
        for k in ("accuracy", "expected_correct", "accuracy_per_1k_tokens", "cost_of_pass"):
            _close(expected[k], group[k])
    assert report["overall"]["requests"] == 150
    assert report["overall"]["tokens"]["prompt"] == float(rows.prompt_tokens.sum())


def test_group_by_tier_model_day_and_since(tmp_path: Path) -> None:
    url = str(tmp_path / "l.sqlite")
    _fill(url, 150)  # 7-minute spacing from T0 (noon): 150 records span two days
    with open_ledger(url) as store:
        by_day = ledger_report(store, by="day")
        assert [g["key"] for g in by_day["groups"]] == ["2025-03-01", "2025-03-02"]
        assert sum(g["requests"] for g in by_day["groups"]) == 150
        by_tier = ledger_report(store, by="tier")
        assert {g["key"] for g in by_tier["groups"]} == {"easy", "normal", "hard"}
        by_model = ledger_report(store, by="model")
        assert {g["key"] for g in by_model["groups"]} <= {"gpt-4o-mini", "o3"}
        later = ledger_report(store, by="day", since=datetime(2025, 3, 2, tzinfo=timezone.utc))
        assert [g["key"] for g in later["groups"]] == ["2025-03-02"]
        assert later["n"] == by_day["groups"][1]["requests"]
        with pytest.raises(TriageError, match="cannot group by 'week'"):
            ledger_report(store, by="week")
        with pytest.raises(TriageError, match="baseline strategy 'nope' has no records"):
            ledger_report(store, baseline="nope")


def test_parse_since() -> None:
    now = datetime(2025, 3, 10, tzinfo=timezone.utc)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2025-03-01", now) == datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert parse_since("2025-03-01T05:00:00+02:00", now) == datetime(2025, 3, 1, 3, tzinfo=timezone.utc)
    with pytest.raises(TriageError, match="neither a duration"):
        parse_since("last tuesday", now)


# --- the CLI ----------------------------------------------------------------------------------

def _cli(*args: str) -> "object":
    return runner.invoke(app, ["ledger", *args])


def test_cli_report_json_and_table(tmp_path: Path) -> None:
    url = str(tmp_path / "l.sqlite")
    _fill(url, 60)
    res = _cli("report", "--ledger", url, "--by", "tier", "--baseline", "large-think", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["by"] == "tier" and doc["n"] == 60 and doc["baseline"] == "large-think"
    assert all(math.isfinite(g["accuracy"]) for g in doc["groups"])
    res = _cli("report", "--ledger", url, "--since", "2025-03-01T06:00:00")
    assert res.exit_code == 0 and "large-think" in res.stdout and "p95 s" in res.stdout
    assert max(len(ln) for ln in res.stdout.splitlines()) <= 120 and "acc/1k tok" not in res.stdout
    res = _cli("report", "--ledger", url, "--wide")
    assert res.exit_code == 0 and "acc/1k tok" in res.stdout and "trunc" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["report", "--by", "week"], "week"),
    (["report", "--since", "yesterday-ish"], "neither a duration"),
    (["report", "--baseline", "ghost"], "baseline strategy 'ghost'"),
    (["feedback", "ghost-id", "1"], "no ledger record for request id 'ghost-id'"),
    (["feedback", "req-000001", "1.5"], "score must be a number in 0..1"),
    (["feedback", "req-000001", "1", "--source", "a b"], "invalid source"),
    (["export", "-o", "x.jsonl", "--format", "csv"], "csv"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    url = str(tmp_path / "l.sqlite")
    _fill(url, 6)
    res = runner.invoke(app, ["ledger", *args, "--ledger", url])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_cli_feedback_export_and_migrate(tmp_path: Path) -> None:
    url = str(tmp_path / "l.sqlite")
    _fill(url, 12, scored_share=0.0)
    res = _cli("feedback", "req-000004", "1", "--source", "exact-match", "--ledger", url)
    assert res.exit_code == 0, res.output
    # A path longer than any console: the summary line must stay one line whatever the width.
    out = tmp_path / ("d" * 150) / "o.jsonl"
    out.parent.mkdir()
    res = _cli("export", "--format", "jsonl", "-o", str(out), "--ledger", url, "--without-prompts")
    assert res.exit_code == 0, res.output
    [line] = [ln for ln in res.stdout.splitlines() if "wrote 1 records" in ln]
    assert str(out) in line and "11 without an outcome" in line
    [rec] = read_replay(out)
    assert rec.id == "req-000004" and next(iter(rec.outcomes.values())).score == 1.0
    res = _cli("export", "--format", "parquet", "-o", str(tmp_path / "o.parquet"), "--ledger", url,
               "--without-prompts")
    assert res.exit_code == 0 and (tmp_path / "o.parquet").exists()
    res = _cli("migrate", "--ledger", str(tmp_path / "new.sqlite"))
    assert res.exit_code == 0 and f"schema version 0 -> {latest_version()}" in res.stdout
    res = _cli("migrate", "--ledger", str(tmp_path / "new.sqlite"))
    assert res.exit_code == 0 and "up to date" in res.stdout


def test_cli_refuses_a_newer_ledger(tmp_path: Path) -> None:
    import sqlite3

    url = str(tmp_path / "l.sqlite")
    open_ledger(url).close()
    with sqlite3.connect(url) as conn:
        conn.execute("INSERT INTO triage_schema_version (version, description) VALUES (42, 'future')")
    res = _cli("report", "--ledger", url)
    assert res.exit_code == 2
    assert "schema version 42" in res.output and f"schema version {latest_version()}" in res.output


def _timed(rid: str, strategy: str, model: str, tier: str, latency_s: float | None) -> LedgerRecord:
    return LedgerRecord(request_id=rid, strategy=strategy, model=model, tier=tier, time=T0, latency_s=latency_s,
                        attempts=[Attempt(model=model, prompt_tokens=10, completion_tokens=10, cost_usd=0.001)])


def test_latency_percentiles_per_tier_strategy_and_model(ledger_url: str, tmp_path: Path) -> None:
    # cheap/m1/easy: 0.1 .. 1.0 s (10 records) plus one without a latency (not counted);
    # big/m2/hard: 2.0 and 4.0 s. Linear interpolation: p50 0.55 / 0.955 and 3.0 / 3.9.
    recs = [_timed(f"c{i}", "cheap", "m1", "easy", round(0.1 * i, 1)) for i in range(1, 11)]
    recs += [_timed("c-none", "cheap", "m1", "easy", None),
             _timed("b1", "big", "m2", "hard", 4.0), _timed("b2", "big", "m2", "hard", 2.0)]
    with open_ledger(ledger_url) as store:
        store.write_records(recs)
        reports = {by: ledger_report(store, by=by) for by in ("tier", "strategy", "model")}
    for by, (cheap, big) in {"tier": ("easy", "hard"), "strategy": ("cheap", "big"), "model": ("m1", "m2")}.items():
        g = {x["key"]: x["latency"] for x in reports[by]["groups"]}
        assert g[cheap]["n"] == 10 and g[cheap]["p50_s"] == pytest.approx(0.55)
        assert g[cheap]["p95_s"] == pytest.approx(0.955)
        assert g[big] == {"n": 2, "p50_s": pytest.approx(3.0), "p95_s": pytest.approx(3.9)}
        overall = reports[by]["overall"]["latency"]
        assert overall["n"] == 12 and overall["p50_s"] == pytest.approx(0.65)  # 12 values: mean of 0.6, 0.7
    if ledger_url.startswith("postgres"):
        return
    res = _cli("report", "--ledger", ledger_url, "--by", "strategy")
    assert res.exit_code == 0, res.output
    assert "p50 s" in res.stdout and "p95 s" in res.stdout
    [big_row] = [ln for ln in res.stdout.splitlines() if "big" in ln]
    assert "3.00" in big_row and "3.90" in big_row
    doc = json.loads(_cli("report", "--ledger", ledger_url, "--json").stdout)
    assert {g["key"]: g["latency"]["n"] for g in doc["groups"]} == {"big": 2, "cheap": 10}


def test_latency_of_a_group_without_latencies_is_none(tmp_path: Path) -> None:
    url = str(tmp_path / "l.sqlite")
    with open_ledger(url) as store:
        store.write_records([_timed("x", "cheap", "m1", "easy", None)])
        rep = ledger_report(store, by="strategy")
    assert rep["groups"][0]["latency"] == {"n": 0, "p50_s": None, "p95_s": None}
    res = _cli("report", "--ledger", url)
    assert res.exit_code == 0, res.output
