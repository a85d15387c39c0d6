"""Ledger stores on a real SQLite file and a real PostgreSQL server: records, outcomes, schema."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

import triage.router.ledger.sql_base as sql_base
from triage.router.ledger import (
    LedgerError,
    OutcomeRecord,
    SchemaTooNewError,
    UnknownRequestError,
    open_ledger,
)
from triage.router.ledger.migrations import MIGRATIONS, VERSION_TABLE, Migration, latest_version
from triage.router.ledger.sqlite_store import SQLiteLedgerStore, sqlite_path
from tests.support.ledger import T0, ledger_url, make_record  # noqa: F401


def test_records_round_trip_and_duplicates_keep_the_first(ledger_url: str) -> None:
    recs = [make_record(i) for i in range(30)]
    with open_ledger(ledger_url) as store:
        assert store.write_records(recs) == 30
        dup = make_record(3, strategy="other")
        assert store.write_records([dup, make_record(30)]) == 1
        assert store.count() == 31
        for r in recs[:5]:
            assert store.get(r.request_id) == r
        assert store.get("req-000003").strategy == recs[3].strategy  # type: ignore[union-attr]
        assert store.get("nope") is None
        assert store.check_integrity() == []


def test_outcomes_latest_wins_and_unknown_ids_fail_whole_batch(ledger_url: str) -> None:
    with open_ledger(ledger_url) as store:
        store.write_records([make_record(i) for i in range(3)])
        store.add_outcome(OutcomeRecord(request_id="req-000000", score=0.0, source="judge", time=T0))
        store.add_outcome(OutcomeRecord(request_id="req-000000", score=1.0, source="user",
                                        time=T0 + timedelta(hours=1)))
        # Backfilled with an older time: it does not override the later judgement.
        store.add_outcome(OutcomeRecord(request_id="req-000000", score=0.25, source="exact-match",
                                        time=T0 - timedelta(days=1)))
        store.add_outcome(OutcomeRecord(request_id="req-000001", score=0.5))
        with pytest.raises(UnknownRequestError, match="no ledger record for request id 'ghost'"):
            store.add_outcomes([OutcomeRecord(request_id="req-000002", score=1.0),
                                OutcomeRecord(request_id="ghost", score=1.0)])
        assert store.outcomes("req-000002") == []  # all-or-nothing
        assert [o.score for o in store.outcomes("req-000000")] == [0.25, 0.0, 1.0]
        latest = {e.record.request_id: e.outcome for e in store.iter_entries()}
        assert latest["req-000000"] is not None and latest["req-000000"].score == 1.0
        assert latest["req-000000"].source == "user"
        assert latest["req-000001"] is not None and latest["req-000001"].score == 0.5
        assert latest["req-000002"] is None
        rows = store.report_rows()
        by_strategy = dict(zip(rows.strategy, rows.score.tolist()))
        assert rows.n == 3 and by_strategy[make_record(0).strategy] == 1.0


def test_iter_entries_pages_through_ties_in_time_order(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_base, "_PAGE", 4)
    # 23 records, many sharing a timestamp: keyset paging must neither skip nor repeat any.
    recs = [make_record(i, time=T0 + timedelta(seconds=i // 5)) for i in range(23)]
    with open_ledger(ledger_url) as store:
        store.write_records(list(reversed(recs)))
        got = [e.record.request_id for e in store.iter_entries()]
        assert got == [r.request_id for r in recs]
        since = [e.record.request_id for e in store.iter_entries(since=T0 + timedelta(seconds=3))]
        assert since == [r.request_id for r in recs[15:]]
        assert store.report_rows(since=T0 + timedelta(seconds=3)).n == 8


def test_schema_is_versioned_and_a_newer_one_is_refused(ledger_url: str) -> None:
    with open_ledger(ledger_url) as store:
        assert store.schema_version() == latest_version()
        store.write_records([make_record(0)])
        newer = latest_version() + 7
        store._run(lambda: store._conn.execute(  # type: ignore[attr-defined]
            store._q(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (?, ?)"),  # type: ignore[attr-defined]
            (newer, "from the future")))
    with pytest.raises(SchemaTooNewError) as err:
        open_ledger(ledger_url)
    msg = str(err.value)
    assert f"schema version {newer}" in msg and f"schema version {latest_version()}" in msg
    assert "upgrade Triage" in msg
    with pytest.raises(SchemaTooNewError):
        open_ledger(ledger_url, migrate=False)


def test_pending_migrations_are_applied_on_open(ledger_url: str) -> None:
    with open_ledger(ledger_url) as store:
        store.write_records([make_record(0)])
    add_column = Migration(
        latest_version() + 1, "test: a note column",
        sqlite=("ALTER TABLE ledger_records ADD COLUMN note TEXT",),
        postgres=("ALTER TABLE ledger_records ADD COLUMN note TEXT",),
    )
    newer = (*MIGRATIONS, add_column)
    with open_ledger(ledger_url, migrate=False, migrations=newer) as store:
        assert store.schema_version() == latest_version()  # not upgraded without migrate
    with open_ledger(ledger_url, migrations=newer) as store:
        assert store.schema_version() == add_column.version
        assert store.get("req-000000") is not None  # data survived
        n = store._run(lambda: store._conn.execute(  # type: ignore[attr-defined]
            "SELECT COUNT(note) FROM ledger_records").fetchone()[0])
        assert n == 0
    with open_ledger(ledger_url, migrations=newer) as store:  # idempotent
        assert store.migrate(newer) == (add_column.version, add_column.version)
    with pytest.raises(SchemaTooNewError):  # and this Triage (without the migration) refuses it now
        open_ledger(ledger_url)


def test_concurrent_first_opens_create_the_schema_once(ledger_url: str) -> None:
    errors: list[BaseException] = []
    stores = []

    def opener() -> None:
        try:
            stores.append(open_ledger(ledger_url))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.schema_version() for s in stores] == [latest_version()] * 6
    for s in stores:
        s.close()


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    with open_ledger(f"sqlite:///{tmp_path}/x.sqlite") as store:
        assert isinstance(store, SQLiteLedgerStore)
        assert store.journal_mode() == "wal" and store.synchronous == "FULL"
        assert store.path == tmp_path / "x.sqlite"


def test_ledger_urls(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///rel/x.db") == Path("rel/x.db")
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("plain.sqlite") == Path("plain.sqlite")
    with pytest.raises(LedgerError, match="unknown ledger URL scheme 'mysql'"):
        open_ledger("mysql://u:pw@h/db")
    with pytest.raises(LedgerError, match="in-memory"):
        open_ledger("sqlite:///:memory:")
    with pytest.raises(LedgerError, match="is a directory"):
        open_ledger(str(tmp_path))
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="cannot open SQLite ledger"):
        open_ledger(str(junk))


def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LedgerError) as err:
        open_ledger(f"postgresql://app:pa55word@127.0.0.1:{port}/db?connect_timeout=2")
    assert "cannot connect to PostgreSQL ledger" in str(err.value)
    assert "pa55word" not in str(err.value)


def test_postgres_store_reconnects_after_losing_its_connection(postgres_url: str) -> None:
    import psycopg

    with open_ledger(postgres_url) as store:
        store.write_records([make_record(0)])
        pid = store._conn.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.write_records([make_record(1)]) == 1
        assert store.count() == 2


def test_many_concurrent_first_opens_of_new_sqlite_files(tmp_path: Path) -> None:
    """Eight threads opening each of ten new files at once: switching a new file to WAL answers
    "database is locked" without SQLite's busy handler while another opener creates the schema
    (4 of 320 opens failed that way on a loaded machine before the open retried it)."""
    errors: list[BaseException] = []
    for trial in range(10):
        url = str(tmp_path / f"l{trial}.sqlite")
        stores = []

        def opener(url: str = url, stores: list = stores) -> None:
            try:
                stores.append(open_ledger(url))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in stores:
            s.close()
    assert errors == []
