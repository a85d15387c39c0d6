"""The ledger spool and the writer's use of it: real SQLite files, real failures (closed or deleted stores,
unwritable paths), no mocks of the spool or the store."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from triage.router.ledger import LedgerRecord, LedgerWriter, open_ledger
from triage.router.ledger.spool import LedgerSpool, default_spool_path
from triage.router.ledger.store import LedgerStore, LedgerUnavailableError
from triage.router.ledger.writer import Durability
from tests.support.ledger import make_record

REPO = Path(__file__).resolve().parents[1]


class Switchable:
    """A real store that can be switched off: while ``down``, writes raise LedgerUnavailableError
    (what a refused PostgreSQL connection raises); it can also refuse some request ids as bad data."""

    def __init__(self, store: LedgerStore, reject: set[str] | None = None) -> None:
        self.store = store
        self.down = False
        self.reject = reject or set()

    def write_records(self, records: Sequence[LedgerRecord]) -> int:
        if self.down:
            raise LedgerUnavailableError("connection refused")
        if any(r.request_id in self.reject for r in records):
            raise ValueError("the store refuses this record")
        return self.store.write_records(records)

    def ping(self) -> None:
        if self.down:
            raise LedgerUnavailableError("connection refused")
        self.store.ping()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --- the spool file ---------------------------------------------------------------------------------

def test_append_read_and_private_mode(tmp_path: Path) -> None:
    spool = LedgerSpool(tmp_path / "sub" / "l.spool.jsonl")
    spool.append([make_record(i) for i in range(3)])
    spool.append([make_record(3)])
    got = spool.read()
    assert [r.request_id for r in got.records] == [f"req-{i:06d}" for i in range(4)]
    assert got.corrupt == []
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600  # records name tenants and keys


def test_a_torn_last_line_never_swallows_the_next_record(tmp_path: Path) -> None:
    spool = LedgerSpool(tmp_path / "l.spool.jsonl")
    spool.append([make_record(1), make_record(2)])
    torn = make_record(3).model_dump_json()[:57]  # a crash in the middle of a write
    with spool.path.open("ab") as fh:
        fh.write(torn.encode())
    spool.append([make_record(4)])
    got = spool.read()
    assert [r.request_id for r in got.records] == ["req-000001", "req-000002", "req-000004"]
    assert got.corrupt == [torn.encode()]
    with open_ledger(str(tmp_path / "l.sqlite")) as store:
        res = spool.replay(store)
        assert (res.read, res.inserted, res.corrupt_lines) == (3, 3, 1)
        assert store.count() == 3
    assert spool.size_bytes() == 0
    assert spool.rejected_path.read_bytes() == torn.encode() + b"\n"  # kept for a human, not dropped


def test_replay_is_idempotent(tmp_path: Path) -> None:
    spool = LedgerSpool(tmp_path / "l.spool.jsonl")
    with open_ledger(str(tmp_path / "l.sqlite")) as store:
        store.write_records([make_record(1)])  # committed before the spool got a copy (a retried batch)
        spool.append([make_record(1), make_record(2)])
        res = spool.replay(store)
        assert (res.read, res.inserted, res.already_present) == (2, 1, 1)
        assert spool.replay(store).read == 0  # emptied
        spool.append([make_record(1), make_record(2)])  # a crash between commit and truncate
        res = spool.replay(store)
        assert (res.inserted, res.already_present) == (0, 2)
        assert store.count() == 2


def test_replay_into_a_down_store_keeps_the_spool(tmp_path: Path) -> None:
    spool = LedgerSpool(tmp_path / "l.spool.jsonl")
    spool.append([make_record(i) for i in range(5)])
    before = spool.path.read_bytes()
    store = open_ledger(str(tmp_path / "l.sqlite"))
    store.close()
    with pytest.raises(LedgerUnavailableError):
        spool.replay(store)
    assert spool.path.read_bytes() == before


def test_a_refused_record_is_set_aside_not_lost(tmp_path: Path) -> None:
    spool = LedgerSpool(tmp_path / "l.spool.jsonl")
    spool.append([make_record(i) for i in range(4)])
    with open_ledger(str(tmp_path / "l.sqlite")) as real:
        res = spool.replay(Switchable(real, reject={"req-000002"}))
        assert (res.inserted, res.rejected) == (3, 1)
        assert real.get("req-000002") is None
    assert spool.size_bytes() == 0
    aside = [json.loads(line)["request_id"] for line in spool.rejected_path.read_text().splitlines()]
    assert aside == ["req-000002"]


def test_concurrent_appends_from_processes_all_land(tmp_path: Path) -> None:
    path = tmp_path / "l.spool.jsonl"
    code = ("import sys; from triage.router.ledger.spool import LedgerSpool; from tests.support.ledger import make_record\n"
            "k = int(sys.argv[2]); s = LedgerSpool(sys.argv[1])\n"
            "for i in range(100): s.append([make_record(k * 1000 + i)])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(k)], cwd=REPO) for k in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    got = LedgerSpool(path).read()
    assert len(got.records) == 300 and got.corrupt == []


def test_default_spool_path_sits_beside_a_sqlite_ledger(tmp_path: Path) -> None:
    with open_ledger(str(tmp_path / "l.sqlite")) as store:
        assert default_spool_path(store) == tmp_path / "l.sqlite.spool.jsonl"


# --- the writer ---------------------------------------------------------------------------------------

def test_a_down_store_spools_then_replays_when_it_returns(tmp_path: Path) -> None:
    real = open_ledger(str(tmp_path / "l.sqlite"))
    store = Switchable(real)
    writer = LedgerWriter(store, retry_s=0.1).start()  # type: ignore[arg-type]
    assert writer.record(make_record(0)) == Durability.COMMITTED
    store.down = True
    assert writer.record(make_record(1)) == Durability.SPOOLED  # the caller is answered, not failed
    ok, why = writer.health()
    assert not ok and why == "LedgerUnavailableError"
    assert writer.record(make_record(2)) == Durability.SPOOLED  # known down: straight to the spool
    assert writer.spool is not None and {r.request_id for r in writer.spool.read().records} == {
        "req-000001", "req-000002"}
    store.down = False
    wait_until(writer.healthy)  # the retry loop replayed the spool
    assert real.count() == 3 and writer.spool.size_bytes() == 0
    assert writer.record(make_record(3)) == Durability.COMMITTED
    writer.close()
    assert writer.stats.spooled == 2 and writer.stats.replayed == 2
    real.close()


def test_async_callers_get_the_spool_too(tmp_path: Path) -> None:
    import asyncio

    real = open_ledger(str(tmp_path / "l.sqlite"))
    store = Switchable(real)
    store.down = True
    writer = LedgerWriter(store, retry_s=60).start()  # type: ignore[arg-type]
    results = asyncio.run(_arecord_all(writer, 20))
    assert set(results) == {Durability.SPOOLED}
    writer.close()
    assert len(LedgerSpool(tmp_path / "l.sqlite.spool.jsonl").read().records) == 20
    real.close()


async def _arecord_all(writer: LedgerWriter, n: int) -> list[Durability]:
    import asyncio

    return list(await asyncio.gather(*(writer.arecord(make_record(i)) for i in range(n))))


def test_a_spool_left_by_a_crash_is_replayed_at_start(tmp_path: Path) -> None:
    LedgerSpool(tmp_path / "l.sqlite.spool.jsonl").append([make_record(i) for i in range(7)])
    store = open_ledger(str(tmp_path / "l.sqlite"))
    with LedgerWriter(store, retry_s=0.1):
        wait_until(lambda: store.count() == 7)
    assert (tmp_path / "l.sqlite.spool.jsonl").stat().st_size == 0
    store.close()


def test_a_deleted_sqlite_file_is_detected_spooled_and_rescued(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    store = open_ledger(str(path))
    writer = LedgerWriter(store, retry_s=0.1).start()
    for i in range(5):
        writer.record(make_record(i))
    assert writer.healthy()
    for p in tmp_path.glob("l.sqlite*"):
        p.unlink()
    ok, why = writer.health()
    assert not ok and why == "LedgerGoneError"
    # Committing now would "succeed" into the unlinked inode; the record goes to the spool instead.
    assert writer.record(make_record(5)) == Durability.SPOOLED
    wait_until(lambda: list(tmp_path.glob("l.sqlite.rescued-*.sqlite")))
    assert not writer.healthy()  # stays down: the operator decides (restore the copy, restart)
    writer.close()
    store.close()
    rescued = next(tmp_path.glob("l.sqlite.rescued-*.sqlite"))
    with open_ledger(str(rescued)) as copy:
        assert copy.count() == 5  # what the deleted file held is not lost
    assert [r.request_id for r in LedgerSpool(tmp_path / "l.sqlite.spool.jsonl").read().records] == ["req-000005"]


def test_when_the_spool_fails_too_records_are_held_and_retried(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool's folder should be")
    real = open_ledger(str(tmp_path / "l.sqlite"))
    store = Switchable(real)
    store.down = True
    writer = LedgerWriter(store, spool=blocker / "l.spool.jsonl", retry_s=0.1).start()  # type: ignore[arg-type]
    assert writer.record(make_record(1)) == Durability.HELD  # paid for: answered, kept in memory
    ok, why = writer.health()
    assert not ok and "held in memory" in why
    store.down = False
    wait_until(writer.healthy)
    assert real.get("req-000001") is not None
    writer.close()
    real.close()


def test_without_a_spool_failures_still_reach_the_caller(tmp_path: Path) -> None:
    real = open_ledger(str(tmp_path / "l.sqlite"))
    store = Switchable(real)
    store.down = True
    writer = LedgerWriter(store, spool=None, retry_s=0.1).start()  # type: ignore[arg-type]
    with pytest.raises(LedgerUnavailableError):
        writer.record(make_record(1), timeout=10)
    writer.close()
    real.close()


# --- the CLI -----------------------------------------------------------------------------------------

def test_triage_ledger_recover(tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    spool = tmp_path / "elsewhere.jsonl"
    LedgerSpool(spool).append([make_record(i) for i in range(3)])
    open_ledger(str(ledger)).close()
    cmd = [sys.executable, "-m", "triage.router.cli.main", "ledger", "recover", "--ledger", str(ledger),
           "--spool", str(spool), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["read"], doc["inserted"], doc["already_present"]) == (3, 3, 0)
    again = json.loads(subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=120, env=env).stdout)
    assert again["read"] == 0
    with open_ledger(str(ledger)) as store:
        assert store.count() == 3


def test_many_threads_against_a_flapping_store_lose_nothing(tmp_path: Path) -> None:
    real = open_ledger(str(tmp_path / "l.sqlite"))
    store = Switchable(real)
    writer = LedgerWriter(store, retry_s=0.05).start()  # type: ignore[arg-type]
    results: list[Durability] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for j in range(40):
            d = writer.record(make_record(k * 100 + j))
            with lock:
                results.append(d)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for _ in range(6):  # the store goes down and up while the threads write
        time.sleep(0.05)
        store.down = not store.down
    store.down = False
    for t in threads:
        t.join(60)
    wait_until(writer.healthy)
    writer.close()
    assert len(results) == 320 and real.count() == 320
    real.close()
