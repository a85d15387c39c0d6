"""PostgreSQL ledger over psycopg 3, for several sidecar replicas sharing one ledger.

Commits use the server's ``synchronous_commit`` (on by default): a returned ``write_records``
means the batch is in the server's WAL on disk. Batches go out as one pipelined ``executemany``
(measured cheaper in client CPU than one ``unnest`` statement over arrays, and on a par with COPY
at the batch sizes group commit produces). The full record is a ``json`` column, not ``jsonb``:
it is written once and rarely queried, and ``json`` costs the server about a third less CPU per
insert; the ``->>`` operators work on it all the same.
A connection that breaks (server restart, failover) is reopened once and the call retried;
inserts are idempotent (``ON CONFLICT DO NOTHING``), so a retried batch cannot duplicate rows.
Concurrent openers serialise migrations on an advisory lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from triage.router.ledger.migrations import MIGRATIONS, Migration
from triage.router.ledger.sql_base import SQLLedgerStore
from triage.router.ledger.store import LedgerError, LedgerUnavailableError, redact_url, register_store

T = TypeVar("T")
_SCHEMA_LOCK_KEY = 0x7472696167  # "triag": an arbitrary constant shared by every Triage process


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a main dependency
        raise LedgerError("PostgreSQL ledgers need psycopg 3: pip install 'psycopg[binary]'") from exc
    return psycopg


def _connect(url: str) -> Any:
    psycopg = _psycopg()
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LedgerUnavailableError(f"cannot connect to PostgreSQL ledger {redact_url(url)}: {first}") from None


@register_store("postgresql", "postgres", "postgresql+psycopg")
class PostgresLedgerStore(SQLLedgerStore):
    dialect = "postgres"
    time_column = "time"
    time_unix_sql = "extract(epoch FROM r.time)::float8"
    json_param = "?::json"
    json_text_sql = "r.record_json::text"
    shadow_sql = "(r.record_json -> 'metadata' ->> 'shadow_of') IS NOT NULL"

    def __init__(self, conn: Any, url: str) -> None:
        super().__init__(conn, redact_url(url))
        self._url = url

    @classmethod
    def open(cls, url: str, *, migrate: bool = True,
             migrations: Sequence[Migration] = MIGRATIONS) -> "PostgresLedgerStore":
        return cls(_connect(url), url)._ready(migrate, migrations)

    def _q(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def _time_param(self, t: datetime) -> Any:
        return t

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._conn.transaction():
            yield self._conn

    def _table_exists(self, name: str) -> bool:
        row = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        return bool(row[0])

    def _lock_schema(self) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))

    def _retrying(self, fn: Callable[[], T]) -> T:
        psycopg = _psycopg()
        try:
            return fn()
        except psycopg.OperationalError:
            if not (self._conn.closed or self._conn.broken):
                raise
        # The connection died under us: reconnect once and retry (writes are idempotent).
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - it is already broken
            pass
        self._conn = _connect(self._url)
        return fn()

    def is_unavailable(self, exc: BaseException) -> bool:
        # OperationalError covers a refused or broken connection, admin shutdown and disk full
        # (SQLSTATE classes 08, 53, 57); InterfaceError a connection already closed.
        psycopg = _psycopg()
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or super().is_unavailable(exc)

    def check_integrity(self) -> list[str]:
        def go() -> list[str]:
            problems: list[str] = []
            n_orphans = self._conn.execute(
                "SELECT count(*) FROM ledger_outcomes o LEFT JOIN ledger_records r USING (request_id) "
                "WHERE r.request_id IS NULL").fetchone()[0]
            if n_orphans:
                problems.append(f"{n_orphans} outcomes without a record")
            # Index and heap must agree: a count through the primary key equals a sequential count.
            with self._conn.transaction():
                self._conn.execute("SET LOCAL enable_seqscan = off")
                n_idx = self._conn.execute("SELECT count(request_id) FROM ledger_records "
                                           "WHERE request_id >= ''").fetchone()[0]
            n_seq = self._conn.execute("SELECT count(*) FROM ledger_records").fetchone()[0]
            if n_idx != n_seq:
                problems.append(f"primary-key index sees {n_idx} records, the table {n_seq}")
            return problems

        return self._run(go)
