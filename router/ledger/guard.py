"""What the ledger writer does when its store fails: health, the spool, the retry loop.

:class:`StoreGuard` holds the store's health as the writer sees it: down (and why) after a commit
failed for the store's sake, or as soon as a SQLite file is found deleted or replaced; records
held in memory when the spool could not take them either; whether the spool may hold records.
The writer thread hands it the records the store did not take (:meth:`StoreGuard.shelve`) and
calls :meth:`StoreGuard.recover` every ``retry_s`` while anything is pending. Everything here runs
on the writer thread except :meth:`StoreGuard.health` and :meth:`StoreGuard.mark_down`, which
callers use from any thread (the sidecar, before every upstream call).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from triage.router.ledger.records import LedgerRecord
from triage.scrub import scrub_text
from triage.router.ledger.spool import LedgerSpool
from triage.router.ledger.store import LedgerGoneError, LedgerUnavailableError
from triage.logging import get_logger

if TYPE_CHECKING:
    from triage.router.ledger.metrics import LedgerMetrics


class Durability(str, Enum):
    """Where an acknowledged record is: what the writer's ``record``/``write``/``arecord`` return."""

    COMMITTED = "committed"  # in the store
    SPOOLED = "spooled"  # in the spool file (fsync'ed); replayed into the store when it is back
    HELD = "held"  # store and spool both failed: in this process's memory, retried every retry_s


def reason_of(exc: BaseException) -> str:
    """``Class: first line`` of an exception, scrubbed of secrets, for logs."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class StoreGuard:
    """The store's health and the way around its failures (see the module docstring)."""

    def __init__(self, store: Any, spool: LedgerSpool | None, *, retry_s: float, max_held: int,
                 stats: Any, metrics: LedgerMetrics | None, wake: Callable[[], None]) -> None:
        self.store = store
        self.spool = spool
        self.retry_s = retry_s
        self.max_held = max_held
        self.stats = stats
        self.metrics = metrics
        self._wake = wake
        self._lock = threading.Lock()
        self._log = get_logger("triage.ledger")
        self.down: str | None = None  # why the store is down; None = up
        self._held: list[LedgerRecord] = []
        self._spool_dirty = spool is not None and spool.size_bytes() > 0  # a crash left records: replay
        self._last_try = float("-inf")
        self._rescued = False

    # --- any thread ------------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(can the store take writes, why not). Cheap: flags and at most one ``stat``.

        The reason is short (an error class, no paths or URLs) since it may reach ``/readyz``;
        the full message is in the ``ledger_unavailable`` log event.
        """
        self.check_alive()
        with self._lock:
            down, held = self.down, len(self._held)
        if held:
            return False, f"{held} records held in memory: neither the store nor the spool takes writes"
        if down is not None:
            return False, down.split(":", 1)[0]
        return True, "ok"

    def mark_down(self, reason: str) -> None:
        """Treat the store as down until a retry succeeds."""
        with self._lock:
            first = self.down is None
            self.down = reason
        self._wake()  # the writer thread starts its retry loop
        if first:
            self._log.error("ledger_unavailable", store=self._where(), reason=scrub_text(reason)[:300])

    def check_alive(self) -> None:
        """Mark the store down when its storage is gone (a commit now would be lost). Raises nothing."""
        check = getattr(self.store, "check_alive", None)
        if check is None:
            return
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - LedgerGoneError, or the path cannot be read
            self.mark_down(reason_of(exc))

    # --- the writer thread -----------------------------------------------------------------------
    def is_unavailable(self, exc: BaseException) -> bool:
        """The store's failure (spool, retry later) rather than a record it refuses."""
        check = getattr(self.store, "is_unavailable", None)
        if check is not None:
            return bool(check(exc))
        return isinstance(exc, (LedgerUnavailableError, OSError))

    def needs_recovery(self) -> bool:
        return self.down is not None or bool(self._held) or self._spool_dirty

    def retry_in(self) -> float:
        """Seconds until the next recovery attempt is due (<= 0: now)."""
        return self._last_try + self.retry_s - time.monotonic()

    def shelve(self, records: Sequence[LedgerRecord], exc: BaseException | None) -> Durability:
        """Keep records the store did not take: the spool, else memory. Raises only without a spool
        (``exc``, or LedgerUnavailableError) or when memory is full too: then the record is lost."""
        if self.spool is None:
            raise exc or LedgerUnavailableError(self.down or "ledger unavailable")
        try:
            self.spool.append(records)
        except Exception as sexc:  # the spool's disk is full or gone too
            with self._lock:
                if len(self._held) + len(records) > self.max_held:
                    raise sexc from exc
                self._held.extend(records)
            self.stats.held += len(records)
            self._log.error("ledger_spool_failed", records=len(records), spool=str(self.spool.path),
                            error=reason_of(sexc))
            durability = Durability.HELD
        else:
            self._spool_dirty = True
            self.stats.spooled += len(records)
            self._log.warning("ledger_records_spooled", records=len(records), spool=str(self.spool.path),
                              reason=reason_of(exc) if exc is not None else self.down)
            durability = Durability.SPOOLED
        if self.metrics is not None:  # the requests were served: count them like committed ones
            for rec in records:
                try:
                    self.metrics.observe_record(rec)
                except Exception:  # noqa: BLE001 - metrics must never stop the writer
                    pass
        return durability

    def recover(self) -> None:
        """Try the store again: held records to the spool, the spool into the store, then up."""
        self._last_try = time.monotonic()
        with self._lock:
            held = list(self._held)
        if held and self.spool is not None:
            try:
                self.spool.append(held)
            except Exception:  # noqa: BLE001 - still full: keep them in memory
                pass
            else:
                self._drop_held(held)
                self._spool_dirty = True
        try:
            check = getattr(self.store, "check_alive", None)
            if check is not None:
                check()
            if self.spool is not None and self._spool_dirty:
                self.stats.replayed += self.spool.replay(self.store).read
            elif hasattr(self.store, "ping"):
                self.store.ping()
            with self._lock:
                held = list(self._held)
            if held:  # the store is back but the spool still refuses: straight in
                self.store.write_records(held)
                self._drop_held(held)
        except Exception as exc:  # noqa: BLE001 - still down; the next try is retry_s away
            if isinstance(exc, LedgerGoneError) and not self._rescued:
                self._rescue()
            self.mark_down(reason_of(exc))
            return
        with self._lock:
            was_down, self.down = self.down, None
        self._spool_dirty = False
        if was_down is not None:
            self._log.warning("ledger_recovered", store=self._where(), was=scrub_text(was_down)[:300])

    def abandon(self) -> None:
        """The process is ending and nothing took these records: the log is the only copy left."""
        for rec in self._held:
            self._log.critical("ledger_record_unsaved", request_id=rec.request_id, record=rec.model_dump_json())

    # --- internals -------------------------------------------------------------------------------
    def _where(self) -> str:
        return str(getattr(self.store, "where", type(self.store).__name__))

    def _drop_held(self, records: list[LedgerRecord]) -> None:
        ids = {id(r) for r in records}
        with self._lock:
            self._held = [r for r in self._held if id(r) not in ids]

    def _rescue(self) -> None:
        """The SQLite file vanished: copy what the open inode still holds before letting go of it."""
        self._rescued = True
        rescue = getattr(self.store, "rescue_copy", None)
        if rescue is None:
            return
        try:
            target = rescue()
        except Exception as exc:  # noqa: BLE001 - best effort; the spool still holds new records
            self._log.error("ledger_rescue_failed", store=self._where(), error=reason_of(exc))
        else:
            self._log.error("ledger_rescued", store=self._where(), copy=str(target),
                            hint="move the copy back to the ledger path and restart to keep the history")
