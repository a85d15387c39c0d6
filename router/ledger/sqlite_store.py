"""SQLite ledger: one file, WAL mode, ``synchronous=FULL`` so a commit survives power loss too.

Several processes may share the file (WAL allows concurrent readers with one writer; writers
queue on ``BEGIN IMMEDIATE`` with a busy timeout). Group commit in the writer keeps the cost of
the per-commit fsync spread over many records.

A file deleted or replaced while open is the one failure SQLite does not report: the connection
keeps writing to the unlinked inode and every commit "succeeds" into a file nobody will read.
:meth:`SQLiteLedgerStore.check_alive` compares the path's device and inode with the ones opened
(one ``stat``), and :meth:`SQLiteLedgerStore.rescue_copy` saves what the orphaned inode still holds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from triage.router.ledger.migrations import MIGRATIONS, Migration
from triage.router.ledger.sql_base import SQLLedgerStore
from triage.router.ledger.store import LedgerError, LedgerGoneError, LedgerUnavailableError, register_store

BUSY_TIMEOUT_S = 30.0


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``; a plain path as is."""
    if url.lower().startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if not rest.startswith("/") or rest == "/":
            raise LedgerError(f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
        rest = rest[1:]
        if rest.startswith(":memory:"):
            raise LedgerError("an in-memory SQLite ledger cannot be shared with the writer; use a file path")
        return Path(rest.split("?", 1)[0])
    return Path(url)


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode=WAL``, retried while another opener holds the file: changing the
    journal mode answers "database is locked" at once, without SQLite's busy handler, when a
    concurrent first open is creating the schema (seen with six threads opening a new file)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


@register_store("sqlite")
class SQLiteLedgerStore(SQLLedgerStore):
    dialect = "sqlite"
    time_column = "time_unix"
    time_unix_sql = "r.time_unix"
    shadow_sql = "json_extract(r.record_json, '$.metadata.shadow_of') IS NOT NULL"

    def __init__(self, conn: sqlite3.Connection, path: Path, synchronous: str) -> None:
        super().__init__(conn, str(path))
        self.path = path
        self.synchronous = synchronous
        st = os.stat(path)  # the connection has created the file by now
        self._identity = (st.st_dev, st.st_ino)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, migrations: Sequence[Migration] = MIGRATIONS,
             synchronous: str = "FULL") -> "SQLiteLedgerStore":
        path = sqlite_path(url)
        if path.is_dir():
            raise LedgerError(f"ledger path {path} is a directory, not a SQLite file")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            mode = _switch_to_wal(conn)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open SQLite ledger {path}: {exc}") from None
        if str(mode).lower() != "wal":
            conn.close()
            raise LedgerError(f"SQLite ledger {path} could not switch to WAL mode (got {mode!r})")
        if synchronous.upper() not in ("FULL", "EXTRA", "NORMAL"):
            raise ValueError(f"synchronous must be FULL, EXTRA or NORMAL, not {synchronous!r}")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return cls(conn, path, synchronous.upper())._ready(migrate, migrations)

    def _time_param(self, t: datetime) -> float:
        return t.timestamp()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a busy file waits here (busy_timeout)
        # instead of failing at COMMIT after the work is done.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _table_exists(self, name: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def _lock_schema(self) -> None:
        pass  # BEGIN IMMEDIATE already excludes other writers

    def check_alive(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise LedgerGoneError(f"SQLite ledger {self.path} was deleted while open") from None
        except OSError as exc:
            raise LedgerUnavailableError(f"SQLite ledger {self.path}: {exc.strerror or exc}") from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise LedgerGoneError(f"SQLite ledger {self.path} was replaced by another file while open")

    def is_unavailable(self, exc: BaseException) -> bool:
        # OperationalError: disk full, read-only, I/O error, busy past the timeout, cannot open.
        # A DatabaseError that is not about the data (malformed image) is the file's fault too.
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)):
            return False
        return isinstance(exc, sqlite3.DatabaseError) or super().is_unavailable(exc)

    def rescue_copy(self) -> Path:
        """Copy what the open (possibly unlinked) database holds to a new file beside its path.

        After ``rm ledger.sqlite`` the records committed so far live on only in the inode this
        connection keeps open; ``VACUUM INTO`` writes them out before the process lets go of it.
        """
        target = self.path.with_name(f"{self.path.name}.rescued-{time.strftime('%Y%m%dT%H%M%S')}.sqlite")
        self._run(lambda: self._conn.execute("VACUUM INTO ?", (str(target),)))
        return target

    def journal_mode(self) -> str:
        return str(self._run(lambda: self._conn.execute("PRAGMA journal_mode").fetchone()[0]))

    def check_integrity(self) -> list[str]:
        def go() -> list[str]:
            problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
            problems += [f"foreign key violation in {r[0]} rowid {r[1]}"
                         for r in self._conn.execute("PRAGMA foreign_key_check").fetchall()]
            return problems

        return self._run(go)
