"""The batching writer: acknowledges only committed records, batches under concurrency, isolates failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from triage.router.ledger import LedgerClosedError, LedgerRecord, LedgerWriter, UnknownRequestError, open_ledger
from triage.router.ledger.writer import Durability
from triage.router.ledger.store import LedgerStore
from tests.support.ledger import ledger_url, make_record  # noqa: F401


class GatedStore:
    """A real store whose commits wait on a gate (and can be told to reject some ids)."""

    def __init__(self, store: LedgerStore, *, delay_s: float = 0.0, reject: set[str] | None = None) -> None:
        self.store = store
        self.gate = threading.Event()
        self.gate.set()
        self.delay_s = delay_s
        self.reject = reject or set()
        self.batch_sizes: list[int] = []

    def write_records(self, records: Sequence[LedgerRecord]) -> int:
        self.gate.wait()
        time.sleep(self.delay_s)
        bad = [r.request_id for r in records if r.request_id in self.reject]
        if bad:
            raise RuntimeError(f"rejected {bad}")
        self.batch_sizes.append(len(records))
        return self.store.write_records(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_record_returns_only_after_commit(tmp_path: Path) -> None:
    store = open_ledger(str(tmp_path / "l.sqlite"))
    gated = GatedStore(store)
    gated.gate.clear()
    writer = LedgerWriter(gated).start()  # type: ignore[arg-type]
    done = threading.Event()
    t = threading.Thread(target=lambda: (writer.record(make_record(1)), done.set()))
    t.start()
    time.sleep(0.3)
    assert not done.is_set(), "record() returned before its batch was committed"
    assert store.count() == 0
    gated.gate.set()
    t.join(10)
    assert done.is_set() and store.count() == 1
    writer.close()
    store.close()


def test_concurrent_writers_are_group_committed_and_all_land(ledger_url: str) -> None:
    store = open_ledger(ledger_url)
    gated = GatedStore(store, delay_s=0.01)  # a slow disk: later records pile up behind a commit
    n_threads, per_thread = 16, 25
    with LedgerWriter(gated, max_batch=64) as writer:  # type: ignore[arg-type]
        def work(k: int) -> None:
            for j in range(per_thread):
                writer.record(make_record(k * per_thread + j))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.count() == n_threads * per_thread  # every acknowledged record is there
    assert writer.stats.records == n_threads * per_thread
    assert writer.stats.largest_batch > 1 and writer.stats.batches < writer.stats.records
    assert max(gated.batch_sizes) <= 64
    store.close()


def test_a_rejected_record_fails_alone(tmp_path: Path) -> None:
    store = open_ledger(str(tmp_path / "l.sqlite"))
    gated = GatedStore(store, reject={"req-000003"})
    gated.gate.clear()
    writer = LedgerWriter(gated, spool=None).start()  # type: ignore[arg-type]  # no spool: errors surface
    futs = {i: writer.submit(make_record(i)) for i in range(6)}
    gated.gate.set()  # all six go in one batch, which fails, then one by one
    with pytest.raises(RuntimeError, match="rejected"):
        futs[3].result(10)
    for i in (0, 1, 2, 4, 5):
        assert futs[i].result(10) == Durability.COMMITTED
    writer.close()
    assert store.count() == 5 and store.get("req-000003") is None
    assert writer.stats.failed_records == 1
    store.close()


def test_async_record_and_feedback(ledger_url: str) -> None:
    store = open_ledger(ledger_url)
    writer = LedgerWriter(store)

    async def main() -> None:
        await asyncio.gather(*(writer.arecord(make_record(i)) for i in range(200)))
        await writer.afeedback("req-000007", 1.0, source="judge")
        with pytest.raises(UnknownRequestError):
            await writer.afeedback("never-recorded", 1.0)

    asyncio.run(main())
    writer.close()
    assert store.count() == 200
    assert [o.score for o in store.outcomes("req-000007")] == [1.0]
    assert writer.stats.largest_batch > 1  # 200 concurrent tasks share commits
    store.close()


def test_feedback_waits_for_a_record_still_in_flight(tmp_path: Path) -> None:
    store = open_ledger(str(tmp_path / "l.sqlite"))
    gated = GatedStore(store)
    gated.gate.clear()
    writer = LedgerWriter(gated).start()  # type: ignore[arg-type]
    writer.submit(make_record(1))
    threading.Timer(0.2, gated.gate.set).start()
    writer.feedback("req-000001", 0.5)
    assert [o.score for o in store.outcomes("req-000001")] == [0.5]
    writer.close()
    store.close()


def test_close_flushes_and_later_records_are_refused(tmp_path: Path) -> None:
    store = open_ledger(str(tmp_path / "l.sqlite"))
    writer = LedgerWriter(store)
    futs = [writer.submit(make_record(i)) for i in range(50)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futs)
    assert store.count() == 50
    with pytest.raises(LedgerClosedError):
        writer.record(make_record(99))
    with pytest.raises(TypeError):
        LedgerWriter(store).record({"request_id": "x"})  # type: ignore[arg-type]
    store.close()


def test_store_failure_reaches_the_caller(tmp_path: Path) -> None:
    store = open_ledger(str(tmp_path / "l.sqlite"))
    writer = LedgerWriter(store, spool=None).start()  # without a spool the error reaches the caller
    store.close()  # the database is gone from under the writer
    with pytest.raises(RuntimeError, match="closed"):
        writer.record(make_record(1), timeout=10)
    writer.close()


def test_linger_gathers_a_batch(tmp_path: Path) -> None:
    store = open_ledger(str(tmp_path / "l.sqlite"))
    with LedgerWriter(store, linger_s=0.5, max_batch=10) as writer:
        futs = []
        for i in range(10):  # arrive one by one, 10 ms apart: one commit for all of them
            futs.append(writer.submit(make_record(i)))
            time.sleep(0.01)
        for f in futs:
            f.result(10)
    assert writer.stats.batches == 1 and writer.stats.largest_batch == 10
    store.close()
