"""Batching ledger writer with group commit.

Durability rule: a request whose response reached the caller has its record committed. The
writer keeps it while still batching: :meth:`LedgerWriter.record` (and ``await arecord``) return
only after the transaction holding that record has committed. Callers answer their client after
that, so an acknowledged request is always in the store, even if the process is killed.

Group commit: one background thread owns the store's write path. While it commits one batch,
records from other requests queue up; the next transaction takes all of them (up to
``max_batch``). Under load one fsync (SQLite) or one WAL flush (PostgreSQL) is shared by many
requests; a lone request still commits at once (no artificial delay unless ``linger_s`` is set).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from router.errors import TriageError
from router.ledger.records import LedgerRecord, OutcomeRecord
from router.ledger.scrub import scrub_text
from router.ledger.store import LedgerStore
from router.logging import get_logger

if TYPE_CHECKING:
    from router.ledger.metrics import LedgerMetrics


class LedgerClosedError(TriageError):
    """A record was submitted to a writer that is closing or closed."""


@dataclass
class WriterStats:
    records: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_records: int = 0
    commit_seconds: float = 0.0


class LedgerWriter:
    """Writes :class:`LedgerRecord` objects to a store in group-committed batches.

    Parameters
    ----------
    store: the ledger to write to (the writer does not close it).
    max_batch: most records in one transaction.
    linger_s: how long a non-full batch waits for more records before committing (0 = never wait).
    max_pending: records queued beyond which ``record``/``submit`` block (back-pressure).
    store_prompts: keep prompt text in the ledger; off by default, when only its SHA-256 is kept.
    metrics: optional :class:`~router.ledger.metrics.LedgerMetrics` updated after each commit.
    """

    def __init__(self, store: LedgerStore, *, max_batch: int = 512, linger_s: float = 0.0,
                 max_pending: int = 50_000, store_prompts: bool = False,
                 metrics: "LedgerMetrics | None" = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.store_prompts = store_prompts
        self.metrics = metrics
        self.stats = WriterStats()
        self._cond = threading.Condition()
        self._pending: list[tuple[LedgerRecord, Future[None]]] = []
        self._pending_ids: dict[str, Future[None]] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        self._log = get_logger("triage.ledger")

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

    def _enqueue(self, record: LedgerRecord, block: bool) -> Future[None] | None:
        fut: Future[None] = Future()
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

    def submit(self, record: LedgerRecord) -> "Future[None]":
        """Queue ``record``; the future resolves once it is committed (or fails with the error)."""
        fut = self._enqueue(self._prepare(record), block=True)
        assert fut is not None
        return fut

    def record(self, record: LedgerRecord, timeout: float | None = None) -> None:
        """Write ``record`` and return only once it is committed. Raises what the store raised."""
        self.submit(record).result(timeout)

    def write(self, record: LedgerRecord) -> None:
        """Alias of :meth:`record` (the SDK's ledger protocol)."""
        self.record(record)

    async def arecord(self, record: LedgerRecord) -> None:
        """Async :meth:`record`: awaits the commit without blocking the event loop."""
        rec = self._prepare(record)
        fut = self._enqueue(rec, block=False)
        if fut is None:  # queue full: wait for room off the loop
            fut = await asyncio.to_thread(self._enqueue, rec, True)
            assert fut is not None
        await _await_future(fut)

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
                 time: datetime | None = None) -> OutcomeRecord:
        """Attach an outcome to a request. Raises UnknownRequestError for an id the ledger lacks."""
        outcome = OutcomeRecord(request_id=request_id, score=score, source=source,
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
                        time: datetime | None = None) -> OutcomeRecord:
        return await asyncio.to_thread(self.feedback, request_id, score, source=source, time=time)

    # --- the writer thread -----------------------------------------------------------------------
    def _take_batch(self) -> list[tuple[LedgerRecord, Future[None]]] | None:
        with self._cond:
            while not self._pending and not self._closing:
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
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._commit(batch)
            except BaseException as exc:  # noqa: BLE001 - keep the thread alive, fail the waiters
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)

    def _commit(self, batch: list[tuple[LedgerRecord, Future[None]]]) -> None:
        records = [r for r, _ in batch]
        t0 = time.perf_counter()
        try:
            self.store.write_records(records)
        except Exception as exc:  # noqa: BLE001 - reported to each waiting caller
            if len(batch) == 1:
                self._finish(batch, exc)
                return
            # Isolate the failure: a record the store rejects must not fail its neighbours.
            self._log.warning("ledger_batch_failed", records=len(batch), error=type(exc).__name__)
            for item in batch:
                self._commit([item])
            return
        dt = time.perf_counter() - t0
        st = self.stats
        st.batches += 1
        st.records += len(batch)
        st.largest_batch = max(st.largest_batch, len(batch))
        st.commit_seconds += dt
        self._finish(batch, None)
        if self.metrics is not None:
            try:
                self.metrics.observe_batch(records, dt)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop the writer
                self._log.warning("ledger_metrics_failed", error=type(exc).__name__)

    def _finish(self, batch: list[tuple[LedgerRecord, Future[None]]], exc: BaseException | None) -> None:
        with self._cond:
            for rec, fut in batch:
                if self._pending_ids.get(rec.request_id) is fut:
                    del self._pending_ids[rec.request_id]
        if exc is not None:
            self.stats.failed_records += len(batch)
            self._log.error("ledger_write_failed", records=len(batch), error=scrub_text(f"{type(exc).__name__}: {exc}"))
        for _, fut in batch:
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)


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

