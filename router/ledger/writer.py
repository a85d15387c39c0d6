"""Batching ledger writer with group commit.

Durability rule: a request whose response reached the caller has its record committed (or, with
the store down, spooled: see below). :meth:`LedgerWriter.record` (and ``await arecord``) return
only after the transaction holding that record has committed, or the spool holding it has been
fsync'ed. Callers answer their client after that, so an acknowledged request survives a kill.

Group commit: one background thread owns the store's write path. While it commits one batch,
records from other requests queue up; the next transaction takes all of them (up to
``max_batch``). Under load one fsync (SQLite) or one WAL flush (PostgreSQL) is shared by many
requests; a lone request still commits at once (no artificial delay unless ``linger_s`` is set).

When the store fails (server down, disk full, file deleted), a record is never turned into an
error for its caller: the upstream call it describes is already paid for. The writer appends it to
its :class:`~triage.router.ledger.spool.LedgerSpool` and answers ``Durability.SPOOLED``;
it marks the store down (:meth:`LedgerWriter.health`), sends later records straight to the spool,
and every ``retry_s`` tries the store again, replaying the spool once it answers. Only when the
spool cannot be written either is a record kept in memory (``HELD``) and retried
(:mod:`triage.router.ledger.guard`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triage.errors import TriageError
from triage.router.ledger.guard import Durability, StoreGuard, reason_of
from triage.router.ledger.records import LedgerRecord, OutcomeRecord
from triage.router.ledger.spool import LedgerSpool, default_spool_path
from triage.router.ledger.store import LedgerStore
from triage.logging import get_logger

if TYPE_CHECKING:
    from triage.router.ledger.metrics import LedgerMetrics


class LedgerClosedError(TriageError):
    """A record was submitted to a writer that is closing or closed."""


#: ``LedgerWriter(spool=DEFAULT_SPOOL)``: the spool at :func:`~triage.router.ledger.spool.default_spool_path`.
DEFAULT_SPOOL: Any = object()


@dataclass
class WriterStats:
    records: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_records: int = 0
    commit_seconds: float = 0.0
    spooled: int = 0
    held: int = 0
    replayed: int = 0


class LedgerWriter:
    """Writes :class:`LedgerRecord` objects to a store in group-committed batches.

    Parameters
    ----------
    store: the ledger to write to (the writer does not close it).
    max_batch: most records in one transaction.
    linger_s: how long a non-full batch waits for more records before committing (0 = never wait).
    max_pending: records queued beyond which ``record``/``submit`` block (back-pressure).
    store_prompts: keep prompt text in the ledger; off by default, when only its SHA-256 is kept.
    metrics: optional :class:`~triage.router.ledger.metrics.LedgerMetrics` updated after each commit.
    spool: where records go when the store fails: a :class:`LedgerSpool` or its path; the default
        is beside a SQLite file (or in the cache dir); ``None`` = no spool, failures reach the caller.
    retry_s: while the store is down, how often to try it again (and replay the spool).
    """

    def __init__(self, store: LedgerStore, *, max_batch: int = 512, linger_s: float = 0.0,
                 max_pending: int = 50_000, store_prompts: bool = False,
                 metrics: "LedgerMetrics | None" = None, spool: Any = DEFAULT_SPOOL,
                 retry_s: float = 2.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if spool is DEFAULT_SPOOL:
            spool = LedgerSpool(default_spool_path(store))
        elif isinstance(spool, str | Path):
            spool = LedgerSpool(spool)
        self.spool: LedgerSpool | None = spool
        self.retry_s = retry_s
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.store_prompts = store_prompts
        self.metrics = metrics
        self.stats = WriterStats()
        self._cond = threading.Condition()
        self._pending: list[tuple[LedgerRecord, Future[Durability]]] = []
        self._pending_ids: dict[str, Future[Durability]] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        self._log = get_logger("triage.ledger")
        self.guard = StoreGuard(store, self.spool, retry_s=retry_s, max_held=max_pending, stats=self.stats,
                                metrics=metrics, wake=self._wake)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "LedgerWriter":
        with self._cond:
            if self._closing:
                raise LedgerClosedError("ledger writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="triage-ledger-writer", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, then stop the thread. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> "LedgerWriter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------
    def _prepare(self, record: LedgerRecord) -> LedgerRecord:
        if not isinstance(record, LedgerRecord):
            raise TypeError(f"expected a LedgerRecord, got {type(record).__name__}")
        if record.prompt is not None and not self.store_prompts:
            record = record.without_prompt_text()
        return record

    def _enqueue(self, record: LedgerRecord, block: bool) -> "Future[Durability] | None":
        fut: Future[Durability] = Future()
        with self._cond:
            if self._thread is None and not self._closing:
                self.start()
            while len(self._pending) >= self.max_pending and not self._closing:
                if not block:
                    return None
                self._cond.wait()
            if self._closing:
                raise LedgerClosedError("ledger writer is closed; the record was not written")
            self._pending.append((record, fut))
            self._pending_ids[record.request_id] = fut
            self._cond.notify_all()
        return fut

    def submit(self, record: LedgerRecord) -> "Future[Durability]":
        """Queue ``record``; the future resolves once it is durable (see :meth:`record`)."""
        fut = self._enqueue(self._prepare(record), block=True)
        assert fut is not None
        return fut

    def record(self, record: LedgerRecord, timeout: float | None = None) -> Durability:
        """Write ``record``; returns once it is committed, or spooled because the store failed.

        Raises only without a spool (``spool=None``), with what the store raised, or when the
        writer is closed.
        """
        return self.submit(record).result(timeout)

    def write(self, record: LedgerRecord) -> Durability:
        """Alias of :meth:`record` (the SDK's ledger protocol)."""
        return self.record(record)

    async def arecord(self, record: LedgerRecord) -> Durability:
        """Async :meth:`record`: awaits the commit without blocking the event loop."""
        rec = self._prepare(record)
        fut = self._enqueue(rec, block=False)
        if fut is None:  # queue full: wait for room off the loop
            fut = await asyncio.to_thread(self._enqueue, rec, True)
            assert fut is not None
        return await _await_future(fut)

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything submitted so far is committed."""
        with self._cond:
            futs = [f for _, f in self._pending] + list(self._pending_ids.values())
        for f in futs:
            try:
                f.result(timeout)
            except Exception:  # noqa: BLE001 - the submitter sees its own error
                pass

    # --- outcomes --------------------------------------------------------------------------------
    def feedback(self, request_id: str, score: float, *, source: str = "user",
                 time: datetime | None = None, detail: dict[str, Any] | None = None) -> OutcomeRecord:
        """Attach an outcome to a request. Raises UnknownRequestError for an id the ledger lacks.
        ``detail``: what a grader says about its verdict (stored with the outcome)."""
        outcome = OutcomeRecord(request_id=request_id, score=score, source=source, detail=detail or {},
                                **({"time": time} if time is not None else {}))
        with self._cond:
            queued = self._pending_ids.get(request_id)
        if queued is not None:  # its record is still on its way: let it land first
            try:
                queued.result()
            except Exception:  # noqa: BLE001 - then the store will report the id as unknown
                pass
        self.store.add_outcome(outcome)
        if self.metrics is not None:
            self.metrics.observe_outcome(outcome)
        return outcome

    async def afeedback(self, request_id: str, score: float, *, source: str = "user",
                        time: datetime | None = None, detail: dict[str, Any] | None = None) -> OutcomeRecord:
        return await asyncio.to_thread(self.feedback, request_id, score, source=source, time=time, detail=detail)

    # --- health ------------------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(can the store take writes now, why not). Cheap: flags and at most one ``stat``.

        The sidecar asks before every upstream call (503 ``ledger_unavailable`` when not) and in
        ``/readyz``. False after a commit failed for the store's sake until it answers again,
        while records are held in memory, and once a SQLite file is found deleted or replaced.
        """
        thread = self._thread
        if self._closing:
            return False, "ledger writer is closing"
        if thread is not None and not thread.is_alive():
            return False, "ledger writer thread stopped"
        return self.guard.health()

    def healthy(self) -> bool:
        return self.health()[0]

    def mark_down(self, reason: str) -> None:
        """Treat the store as down (e.g. a readiness probe failed) until a retry succeeds."""
        self.guard.mark_down(reason)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- the writer thread -----------------------------------------------------------------------
    def _take_batch(self) -> list[tuple[LedgerRecord, Future[Durability]]] | None:
        """The next batch; [] when it is time to retry the store; None when closed and drained."""
        with self._cond:
            while not self._pending and not self._closing:
                if self.guard.needs_recovery():
                    due = self.guard.retry_in()
                    if due <= 0:
                        return []
                    self._cond.wait(due)
                else:
                    self._cond.wait()
            if not self._pending:
                return None
            if self.linger_s > 0:  # wait a little for company, unless the batch is already full
                deadline = time.monotonic() + self.linger_s
                while len(self._pending) < self.max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._cond.notify_all()  # producers blocked on max_pending
            return batch

    def _run(self) -> None:
        guard = self.guard
        while True:
            batch = self._take_batch()
            if batch is None:
                break
            try:
                if batch:
                    self._commit(batch)
                if guard.needs_recovery() and guard.retry_in() <= 0:
                    guard.recover()
            except BaseException as exc:  # noqa: BLE001 - keep the thread alive, fail the waiters
                self._log.error("ledger_writer_error", error=reason_of(exc))
                for _, fut in batch or []:
                    if not fut.done():
                        fut.set_exception(exc)
        if guard.needs_recovery():  # closing: one last try, so a restart has less to replay
            guard.recover()
        guard.abandon()

    def _commit(self, batch: list[tuple[LedgerRecord, Future[Durability]]]) -> None:
        records = [r for r, _ in batch]
        if self.guard.down is not None:  # known down: straight to the spool, the retry loop replays it
            self._shelve(batch, None)
            return
        t0 = time.perf_counter()
        try:
            check = getattr(self.store, "check_alive", None)
            if check is not None:  # a deleted SQLite file still "commits", into nowhere
                check()
            self.store.write_records(records)
        except Exception as exc:  # noqa: BLE001 - the store's fault (spool) or a record's (isolate)
            if self.guard.is_unavailable(exc):
                self.guard.mark_down(reason_of(exc))
            elif len(batch) > 1:
                # Isolate the failure: a record the store rejects must not fail its neighbours.
                self._log.warning("ledger_batch_failed", records=len(batch), error=type(exc).__name__)
                for item in batch:
                    self._commit([item])
                return
            self._shelve(batch, exc)
            return
        dt = time.perf_counter() - t0
        st = self.stats
        st.batches += 1
        st.records += len(batch)
        st.largest_batch = max(st.largest_batch, len(batch))
        st.commit_seconds += dt
        self._finish(batch, Durability.COMMITTED)
        if self.metrics is not None:
            try:
                self.metrics.observe_batch(records, dt)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop the writer
                self._log.warning("ledger_metrics_failed", error=type(exc).__name__)

    def _shelve(self, batch: list[tuple[LedgerRecord, Future[Durability]]], exc: BaseException | None) -> None:
        """Records the store did not take: spooled or held; an error only when neither is possible."""
        try:
            outcome: Durability | BaseException = self.guard.shelve([r for r, _ in batch], exc)
        except Exception as err:  # noqa: BLE001 - no spool (or memory full too): the caller hears it
            self.stats.failed_records += len(batch)
            self._log.error("ledger_write_failed", records=len(batch), error=reason_of(err))
            outcome = err
        self._finish(batch, outcome)

    def _finish(self, batch: list[tuple[LedgerRecord, Future[Durability]]],
                outcome: "Durability | BaseException") -> None:
        with self._cond:
            for rec, fut in batch:
                if self._pending_ids.get(rec.request_id) is fut:
                    del self._pending_ids[rec.request_id]
        for _, fut in batch:
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)


async def _await_future(fut: "Future[Any]") -> Any:
    """Await a concurrent future without wrap_future's cancel propagation (the write goes on)."""
    loop = asyncio.get_running_loop()
    afut: asyncio.Future[Any] = loop.create_future()

    def transfer(f: "Future[Any]") -> None:
        def set_() -> None:
            if afut.done():
                return
            exc = f.exception()
            if exc is not None:
                afut.set_exception(exc)
            else:
                afut.set_result(f.result())

        try:
            loop.call_soon_threadsafe(set_)
        except RuntimeError:  # the loop is gone; nobody is waiting any more
            pass

    fut.add_done_callback(transfer)
    return await afut

