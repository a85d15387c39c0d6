"""The ledger's spool: an append-only JSONL file that holds records the store could not commit.

Why it exists: by the time a record is written, the upstream call it describes has been paid for.
If the store then fails (PostgreSQL down, disk full, the SQLite file deleted), raising would turn a
paid answer into an error and the client's retry would pay again. The writer appends the record
here instead (fsync before acknowledging), and replays the spool into the store when it is back,
at start-up, and on ``triage ledger recover``.

Format: one :class:`LedgerRecord` JSON document per line. A crash can leave a torn last line;
:meth:`LedgerSpool.append` starts on a fresh line whenever the file does not end with one, so a
torn line never swallows the next record, and readers count it as corrupt and move it aside.
Replay is idempotent: the request id is the key and the store keeps a record it already has.

Several processes may share one spool (``--workers``, or the CLI while the server runs): every
append and every replay holds an exclusive ``flock`` on the file, so a replay that truncates the
file cannot drop a record appended meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from triage.router.ledger.records import LedgerRecord
from triage.logging import get_logger

REPLAY_BATCH = 500
SPOOL_SUFFIX = ".spool.jsonl"
REJECTED_SUFFIX = ".rejected.jsonl"


def default_spool_path(store: Any) -> Path:
    """Where ``store``'s spool lives unless configured: beside a SQLite file, else in the cache dir.

    Beside the file keeps ledger and spool together (backups, permissions); a deployment that
    wants the spool to survive the ledger's disk filling up configures one on another filesystem.
    """
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return path.with_name(path.name + SPOOL_SUFFIX)
    from triage.settings import get_settings

    where = str(getattr(store, "where", type(store).__name__))
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return get_settings().cache_dir / "ledger-spool" / f"{digest}{SPOOL_SUFFIX}"


@dataclass
class SpoolContents:
    records: list[LedgerRecord] = field(default_factory=list)
    corrupt: list[bytes] = field(default_factory=list)  # torn or unreadable lines, kept verbatim


@dataclass
class ReplayResult:
    """What one replay did. ``inserted + already_present + rejected`` = records read."""

    read: int = 0
    inserted: int = 0
    already_present: int = 0
    rejected: int = 0  # records the store refused (moved to the .rejected file)
    corrupt_lines: int = 0  # torn / unreadable lines (moved to the .rejected file)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class LedgerSpool:
    """An append-only, fsync'ed JSONL file of records waiting for the store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rejected_path = self.path.with_name(self.path.name.removesuffix(".jsonl") + REJECTED_SUFFIX)
        self._log = get_logger("triage.ledger")

    def __repr__(self) -> str:
        return f"LedgerSpool({str(self.path)!r})"

    # --- low level ---------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, create: bool) -> Iterator[int | None]:
        """The spool's file descriptor under an exclusive flock; None when it does not exist."""
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    @staticmethod
    def _ends_with_newline(fd: int) -> bool:
        size = os.fstat(fd).st_size
        return size == 0 or os.pread(fd, 1, size - 1) == b"\n"

    @staticmethod
    def _read_fd(fd: int) -> bytes:
        size = os.fstat(fd).st_size
        chunks, pos = [], 0
        while pos < size:
            chunk = os.pread(fd, min(1 << 20, size - pos), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(data: bytes) -> SpoolContents:
        out = SpoolContents()
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                out.records.append(LedgerRecord.model_validate_json(line))
            except (ValidationError, ValueError):
                out.corrupt.append(line)
        return out

    # --- public ------------------------------------------------------------------------------------
    def append(self, records: Sequence[LedgerRecord]) -> None:
        """Append ``records`` and fsync; returns only once they are on disk. Raises OSError."""
        if not records:
            return
        data = b"".join(r.model_dump_json().encode() + b"\n" for r in records)
        existed = self.path.exists()
        with self._locked(create=True) as fd:
            assert fd is not None
            if not self._ends_with_newline(fd):  # a torn line from a crash: never glue onto it
                data = b"\n" + data
            self._write_all(fd, data)
            os.fsync(fd)
        if not existed:  # the new directory entry must survive a power cut too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def size_bytes(self) -> int:
        """Bytes waiting (0 when the file does not exist or cannot be read; appends will say why)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self) -> SpoolContents:
        """Every readable record in the spool (and the lines that are not), without changing it."""
        with self._locked(create=False) as fd:
            return SpoolContents() if fd is None else self._parse(self._read_fd(fd))

    def replay(self, store: Any, batch: int = REPLAY_BATCH) -> ReplayResult:
        """Write every spooled record into ``store``, then empty the spool.

        Idempotent: a record the store already holds is skipped (and counted as such). A batch the
        store rejects is retried record by record; records it still refuses, and corrupt lines,
        move to the ``.rejected.jsonl`` file beside the spool, so one bad record cannot block the
        rest. When the store is unavailable, whatever it raises propagates and the spool is left
        as it was (the next replay re-inserts nothing twice).
        """
        result = ReplayResult()
        is_unavailable = getattr(store, "is_unavailable", lambda e: isinstance(e, OSError))
        with self._locked(create=False) as fd:
            if fd is None:
                return result
            contents = self._parse(self._read_fd(fd))
            result.read = len(contents.records)
            result.corrupt_lines = len(contents.corrupt)
            rejected: list[bytes] = list(contents.corrupt)
            for i in range(0, len(contents.records), batch):
                chunk = contents.records[i:i + batch]
                try:
                    n = int(store.write_records(chunk))
                    result.inserted += n
                    result.already_present += len(chunk) - n
                    continue
                except Exception as exc:  # sorted here: the store's fault (raise), or a record's (below)
                    if is_unavailable(exc):
                        raise
                for rec in chunk:
                    try:
                        n = int(store.write_records([rec]))
                    except Exception as exc:
                        if is_unavailable(exc):
                            raise
                        result.rejected += 1
                        rejected.append(rec.model_dump_json().encode())
                        self._log.error("ledger_spool_record_rejected", request_id=rec.request_id,
                                        error=type(exc).__name__)
                        continue
                    result.inserted += n
                    result.already_present += 1 - n
            if rejected:
                self._set_aside(rejected)
            os.ftruncate(fd, 0)  # everything is in the store (or set aside): start the spool afresh
            os.fsync(fd)
        if result.read or result.corrupt_lines:
            self._log.info("ledger_spool_replayed", spool=str(self.path), **result.as_dict())
        return result

    def _set_aside(self, lines: list[bytes]) -> None:
        fd = os.open(self.rejected_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            prefix = b"" if self._ends_with_newline(fd) else b"\n"
            self._write_all(fd, prefix + b"\n".join(lines) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
