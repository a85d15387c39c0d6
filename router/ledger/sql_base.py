"""What the SQLite and PostgreSQL stores share: the SQL, written once with ``?`` placeholders.

A backend supplies a DB-API connection, its transaction bracket and a handful of dialect
fragments (how time is stored, how JSON is passed); everything else lives here.
"""

from __future__ import annotations

import json
import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any, Self

from triage.router.ledger.migrations import MIGRATIONS, VERSION_TABLE, VERSION_TABLE_DDL, Migration, pending
from triage.router.ledger.records import LedgerRecord, OutcomeRecord, as_utc
from triage.router.ledger.store import (
    RECORD_COLUMNS,
    LedgerEntry,
    LedgerStore,
    LedgerUnavailableError,
    ReportRows,
    UnknownRequestError,
    record_row,
)

_PAGE = 2000


class StoreClosedError(LedgerUnavailableError, RuntimeError):
    """The store was closed; a RuntimeError too, as it always was."""


class SQLLedgerStore(LedgerStore):
    """Template for DB-API backends. Every call holds ``self._lock``: one connection, one user at a time."""

    #: column holding the record time, and the SQL expression reading it as Unix seconds
    time_column: str
    time_unix_sql: str
    #: placeholder expression for the JSON column, and the SQL reading it back as text
    json_param: str = "?"
    json_text_sql: str = "r.record_json"
    #: SQL true for a shadow call's record (``metadata.shadow_of`` set; triage.router.core.shadow)
    shadow_sql: str

    def __init__(self, conn: Any, where: str) -> None:
        self._conn = conn
        self._where = where
        self._lock = threading.RLock()
        self._closed = False

    # --- dialect hooks -----------------------------------------------------------------------
    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """A write transaction on ``self._conn``: committed on normal exit, rolled back on error."""

    @abstractmethod
    def _table_exists(self, name: str) -> bool: ...

    @abstractmethod
    def _lock_schema(self) -> None:
        """Inside a transaction: keep concurrent openers from migrating at the same time."""

    def _q(self, sql: str) -> str:
        """Translate ``?`` placeholders to the driver's style."""
        return sql

    def _time_param(self, t: datetime) -> Any:
        return t

    def _retrying(self, fn: Any) -> Any:
        """Run ``fn()``; backends that can reconnect override this."""
        return fn()

    # --- LedgerStore -------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return self._where

    def _run(self, fn: Any) -> Any:
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"ledger {self._where} is closed")
            return self._retrying(fn)

    def _version_locked(self) -> int:
        if not self._table_exists(VERSION_TABLE):
            return 0
        row = self._conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
        return int(row[0] or 0)

    def schema_version(self) -> int:
        return self._run(self._version_locked)

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
        def go() -> tuple[int, int]:
            # Refuse a too-new ledger before taking any write lock.
            before = self._version_locked()
            pending(before, self._where, migrations)
            with self._transaction():
                self._lock_schema()
                self._conn.execute(VERSION_TABLE_DDL[self.dialect])
                current = self._version_locked()
                for m in pending(current, self._where, migrations):
                    for stmt in m.statements(self.dialect):
                        self._conn.execute(stmt)
                    self._conn.execute(
                        self._q(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (?, ?)"),
                        (m.version, m.description))
            return before, self._version_locked()

        return self._run(go)

    def check_version(self, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        """Raise SchemaTooNewError when the ledger is newer than ``migrations``."""
        self._run(lambda: pending(self._version_locked(), self._where, migrations))

    def _ready(self, migrate: bool, migrations: Sequence[Migration]) -> Self:
        """The last step of ``open``: migrate (or only check the version); close on any failure."""
        try:
            if migrate:
                self.migrate(migrations)
            else:
                self.check_version(migrations)
        except BaseException:
            self.close()
            raise
        return self

    def write_records(self, records: Sequence[LedgerRecord]) -> int:
        if not records:
            return 0
        rows = [record_row(r, self._time_param(r.time), r.model_dump_json()) for r in records]
        marks = ", ".join(["?"] * (len(RECORD_COLUMNS) - 1) + [self.json_param])
        cols = ", ".join(self.time_column if c == "time" else c for c in RECORD_COLUMNS)
        sql = self._q(f"INSERT INTO ledger_records ({cols}) VALUES ({marks}) ON CONFLICT (request_id) DO NOTHING")

        def go() -> int:
            with self._transaction():
                cur = self._conn.cursor()
                cur.executemany(sql, rows)
                n = cur.rowcount
            return max(int(n), 0) if n is not None else len(rows)

        return self._run(go)

    def add_outcomes(self, outcomes: Sequence[OutcomeRecord]) -> None:
        if not outcomes:
            return
        ids = sorted({o.request_id for o in outcomes})
        rows = [(o.request_id, o.score, o.source, self._time_param(o.time),
                 json.dumps(o.detail, default=str) if o.detail else None) for o in outcomes]
        insert = self._q(f"INSERT INTO ledger_outcomes (request_id, score, source, {self.time_column}, "
                         "detail_json) VALUES (?, ?, ?, ?, ?)")

        def go() -> None:
            with self._transaction():
                found: set[str] = set()
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    marks = ", ".join("?" * len(chunk))
                    cur = self._conn.execute(
                        self._q(f"SELECT request_id FROM ledger_records WHERE request_id IN ({marks})"), chunk)
                    found.update(r[0] for r in cur.fetchall())
                missing = [i for i in ids if i not in found]
                if missing:
                    raise UnknownRequestError(missing)
                self._conn.cursor().executemany(insert, rows)

        self._run(go)

    def get(self, request_id: str) -> LedgerRecord | None:
        def go() -> LedgerRecord | None:
            row = self._conn.execute(
                self._q(f"SELECT {self.json_text_sql} FROM ledger_records r WHERE r.request_id = ?"),
                (request_id,)).fetchone()
            return LedgerRecord.model_validate_json(row[0]) if row else None

        return self._run(go)

    def outcomes(self, request_id: str) -> list[OutcomeRecord]:
        t = self._time_sql("o")

        def go() -> list[OutcomeRecord]:
            rows = self._conn.execute(self._q(
                f"SELECT request_id, score, source, {t}, detail_json FROM ledger_outcomes o WHERE request_id = ? "
                f"ORDER BY {t}, outcome_id"), (request_id,)).fetchall()
            return [OutcomeRecord(request_id=r[0], score=r[1], source=r[2], time=_from_unix(r[3]),
                                  detail=json.loads(r[4]) if r[4] else {}) for r in rows]

        return self._run(go)

    def _time_sql(self, alias: str) -> str:
        return self.time_unix_sql.replace("r.", f"{alias}.")

    def _latest_outcome_join(self) -> str:
        t = self._time_sql("o")
        return (
            "LEFT JOIN (SELECT o.request_id, o.score, o.source, o.detail_json, "
            f"{t} AS o_time, ROW_NUMBER() OVER (PARTITION BY o.request_id ORDER BY {t} DESC, "
            "o.outcome_id DESC) AS rn FROM ledger_outcomes o) lo ON lo.request_id = r.request_id AND lo.rn = 1"
        )

    def iter_entries(self, since: datetime | None = None) -> Iterator[LedgerEntry]:
        t = self.time_unix_sql
        lo = -1e18 if since is None else as_utc(since).timestamp()
        base = (f"SELECT {t} AS tu, r.request_id, {self.json_text_sql}, lo.score, lo.source, lo.o_time, lo.detail_json "
                f"FROM ledger_records r {self._latest_outcome_join()} ")
        # Keyset pagination: the lock is held per page, never across the caller's loop.
        first = self._q(base + f"WHERE {t} >= ? ORDER BY {t}, r.request_id LIMIT {_PAGE}")
        nxt = self._q(base + f"WHERE {t} >= ? AND ({t} > ? OR ({t} = ? AND r.request_id > ?)) "
                      f"ORDER BY {t}, r.request_id LIMIT {_PAGE}")
        last: tuple[float, str] | None = None
        while True:
            if last is None:
                rows = self._run(lambda: self._conn.execute(first, (lo,)).fetchall())
            else:
                params = (lo, last[0], last[0], last[1])
                rows = self._run(lambda p=params: self._conn.execute(nxt, p).fetchall())
            for tu, rid, js, score, source, otime, detail in rows:
                rec = LedgerRecord.model_validate_json(js)
                out = (OutcomeRecord(request_id=rid, score=score, source=source, time=_from_unix(otime),
                                     detail=json.loads(detail) if detail else {})
                       if score is not None else None)
                yield LedgerEntry(rec, out)
            if len(rows) < _PAGE:
                return
            last = (rows[-1][0], rows[-1][1])

    def report_rows(self, since: datetime | None = None, tenant: str | None = None, *,
                    shadow: bool = False) -> ReportRows:
        t = self.time_unix_sql
        where = f"{t} >= ?" + (" AND r.tenant = ?" if tenant is not None else "")
        where += f" AND {'' if shadow else 'NOT '}({self.shadow_sql})"
        sql = self._q(
            f"SELECT {t}, r.tier, r.strategy, r.model, r.cost_usd, r.prompt_tokens, r.completion_tokens, "
            f"r.reasoning_tokens, r.truncated, r.escalated, lo.score, r.latency_s FROM ledger_records r "
            f"{self._latest_outcome_join()} WHERE {where} ORDER BY {t}, r.request_id")
        lo = -1e18 if since is None else as_utc(since).timestamp()
        params = (lo,) if tenant is None else (lo, tenant)
        rows = self._run(lambda: self._conn.execute(sql, params).fetchall())
        return ReportRows.from_tuples(rows)

    def count(self) -> int:
        return int(self._run(lambda: self._conn.execute("SELECT COUNT(*) FROM ledger_records").fetchone()[0]))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _from_unix(t: float | None) -> datetime:
    return datetime.fromtimestamp(float(t), tz=timezone.utc) if t is not None else datetime.now(timezone.utc)
