"""Hostile ledger conditions against the real sidecar: no acknowledged record lost, no 500 after a paid call.

The sidecar runs as `triage serve` on loopback with a real SQLite file or a real PostgreSQL server
(our own throw-away cluster, so the test can stop and start it). The upstream is a small
fault-injecting stub (below): it answers after a chosen delay, or streams for as long as asked,
which is what puts a request "in flight" at the moment the ledger fails; every answer's content is
irrelevant here. Each case counts, over every 200 response, the request ids (x-triage-request-id)
found neither in the ledger nor in its spool after recovery: ``records_lost`` must be 0, and no
response may be a 500.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from triage.router.ledger import open_ledger
from triage.router.ledger.spool import LedgerSpool
from tests.support.hostile import HostileReport
from tests.support.sidecar import CLIENT_KEY, SidecarProcess

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
STUB_KEY_ENV = "HOSTILE_LEDGER_STUB_KEY"
IN_FLIGHT = 4  # requests whose upstream call is paid for when the ledger fails


class StubUpstream:
    """OpenAI-shaped upstream: JSON answers after ``delay_s``; streams of ``stream_chunks`` chunks, one per
    ``chunk_s``. Counts the calls it answered (each is a call the sidecar would pay for)."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.stream_chunks = 3
        self.chunk_s = 0.0
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                outer.calls += 1
                if req.get("stream"):
                    self._stream(req)
                    return
                time.sleep(outer.delay_s)
                body = json.dumps({
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                    "model": req.get("model", "stub"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, req: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": req.get("model", "stub")}
                try:
                    for i in range(outer.stream_chunks):
                        delta = {"role": "assistant", "content": f"w{i} "} if i == 0 else {"content": f"w{i} "}
                        event = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                        self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                        self.wfile.flush()
                        time.sleep(outer.chunk_s)
                    end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": outer.stream_chunks,
                                     "total_tokens": 5 + outer.stream_chunks}}
                    self.wfile.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
                except OSError:  # the sidecar closed the stream: that is the point of some tests
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def upstream() -> Iterator[StubUpstream]:
    up = StubUpstream()
    yield up
    up.close()


def stub_policy(folder: Path, upstream: StubUpstream) -> Path:
    strategy = {"model": "openai/stub", "api_base": upstream.base, "api_key_env": STUB_KEY_ENV,
                "timeout_s": 60, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    path = folder / "stub.yaml"
    path.write_text(json.dumps({"name": "stub", "probe": "default", "strategies": {"only": strategy},
                                "tiers": {"easy": "only", "normal": "only", "hard": "only"}}))
    return path


def start_sidecar(folder: Path, upstream: StubUpstream, **extra: Any) -> SidecarProcess:
    return SidecarProcess(folder, [stub_policy(folder, upstream)], extra=extra,
                          env={STUB_KEY_ENV: "sk-stub-not-a-real-key"})


# --- client helpers ---------------------------------------------------------------------------------

def _conn(sidecar: SidecarProcess, timeout: float = 60) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=timeout)


def chat(sidecar: SidecarProcess, text: str = "What is 2 + 2?", **body: Any) -> tuple[int, str | None, dict]:
    """POST a chat completion; (status, x-triage-request-id, JSON body)."""
    conn = _conn(sidecar)
    try:
        payload = {"model": "triage/stub", "messages": [{"role": "user", "content": text}], **body}
        conn.request("POST", "/v1/chat/completions", json.dumps(payload), AUTH)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheader("x-triage-request-id"), _json(data) | {"_headers": dict(resp.getheaders())}
    finally:
        conn.close()


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {"_raw": data[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"_value": value}


def readyz(sidecar: SidecarProcess) -> tuple[int, dict]:
    conn = _conn(sidecar, 30)
    try:
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        return resp.status, _json(resp.read())
    finally:
        conn.close()


def wait_ready(sidecar: SidecarProcess, want: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    status, body = readyz(sidecar)
    while status != want and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = readyz(sidecar)
    assert status == want, f"/readyz stayed {status}: {body}"
    return body


class InFlight(threading.Thread):
    """One chat request running in the background (the upstream holds it for ``delay_s``)."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(daemon=True)
        self.sidecar = sidecar
        self.result: tuple[int, str | None, dict] | None = None
        self.start()

    def run(self) -> None:
        self.result = chat(self.sidecar, "In flight while the ledger fails")


def stored_ids(url: str) -> set[str]:
    with open_ledger(url) as store:
        return {e.record.request_id for e in store.iter_entries()}


def spooled_ids(path: Path) -> set[str]:
    return {r.request_id for r in LedgerSpool(path).read().records}


def lost(acked: list[str], *found: set[str]) -> list[str]:
    seen = set().union(*found)
    return [rid for rid in acked if rid not in seen]


def log_tail(sidecar: SidecarProcess, n: int = 4000) -> str:
    return sidecar.log.read_text(errors="replace")[-n:]


def assert_no_500(statuses: list[int], bodies: list[dict]) -> None:
    bad = [(s, b) for s, b in zip(statuses, bodies) if s == 500 or s >= 505]
    assert not bad, f"server errors: {bad[:3]}"


# --- 1. shutdown with streams in flight ------------------------------------------------------------

def open_stream(sidecar: SidecarProcess) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = _conn(sidecar)
    payload = {"model": "triage/stub", "stream": True, "messages": [{"role": "user", "content": "Count slowly"}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(payload), AUTH)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:300]
    first = resp.readline()  # the first SSE event is on its way: the stream is in flight
    assert first.startswith(b"data: "), first
    return conn, resp


@pytest.mark.minutes  # a fault soak (~10 s each on 2 cores): `make test-all`
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_streams_in_flight_at_shutdown_are_recorded(tmp_path: Path, upstream: StubUpstream,
                                                    hostile: HostileReport, workers: int) -> None:
    """Three streams outlive the 1 s grace period and are cancelled; each is recorded (partial,
    client_disconnected) before the ledger closes. With two workers the lifespan owns the writer."""
    upstream.stream_chunks, upstream.chunk_s = 600, 0.05  # 30 s per stream: far past the grace period
    sidecar = start_sidecar(tmp_path, upstream, shutdown_grace_s=1.0, workers=workers)
    streams = []
    try:
        streams = [open_stream(sidecar) for _ in range(3)]
        ids = [resp.getheader("x-triage-request-id") for _, resp in streams]
        t0 = time.monotonic()
        sidecar.stop()  # SIGINT: 1 s of grace, then the streams are cancelled
        stop_s = time.monotonic() - t0
    finally:
        for conn, _ in streams:
            conn.close()
        sidecar.stop()
    stored = stored_ids(str(sidecar.ledger))
    missing = lost([i for i in ids if i], stored, spooled_ids(Path(f"{sidecar.ledger}.spool.jsonl")))
    case = hostile.case(f"streams in flight at shutdown ({workers} worker(s))", statuses=[200] * len(streams),
                        records_lost=len(missing), stop_s=round(stop_s, 2))
    assert all(ids), ids
    assert case.records_lost == 0, f"{len(missing)} of 3 streams never recorded:\n{log_tail(sidecar)}"
    assert stop_s < 30, f"shutdown took {stop_s:.1f} s"
    with open_ledger(str(sidecar.ledger)) as store:
        for rid in ids:
            rec = store.get(rid)
            assert rec is not None and rec.metadata.get("client_disconnected") is True, rec


# --- shared: a burst of requests while the ledger is failing ---------------------------------------

def burst(sidecar: SidecarProcess, n: int) -> list[tuple[int, str | None, dict]]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(n, 10)) as pool:
        return list(pool.map(lambda i: chat(sidecar, f"Burst {i}: what is {i} + {i}?"), range(n)))


def in_flight_while(sidecar: SidecarProcess, upstream: StubUpstream, fail: Any,
                    n: int = IN_FLIGHT) -> list[tuple[int, str | None, dict]]:
    """Run ``n`` requests whose upstream calls are under way (paid for) when ``fail()`` breaks the ledger."""
    upstream.delay_s = 1.5
    calls = upstream.calls
    reqs = [InFlight(sidecar) for _ in range(n)]
    deadline = time.monotonic() + 30
    while upstream.calls < calls + n and time.monotonic() < deadline:
        time.sleep(0.01)
    fail()
    for r in reqs:
        r.join(60)
    upstream.delay_s = 0.0
    assert all(r.result is not None for r in reqs), "an in-flight request did not finish"
    return [r.result for r in reqs if r.result is not None]


def check_refusals(results: list[tuple[int, str | None, dict]]) -> None:
    """A request refused while the ledger is down is a 503 ledger_unavailable with Retry-After."""
    for status, _, body in results:
        if status == 503:
            assert body["error"]["code"] == "ledger_unavailable", body
            assert int(body["_headers"].get("retry-after", "0")) > 0, body["_headers"]


# --- 2. the SQLite file deleted while serving -------------------------------------------------------

@pytest.mark.minutes  # a fault soak (~10 s each on 2 cores): `make test-all`
def test_deleted_sqlite_ledger_goes_not_ready_and_loses_nothing(tmp_path: Path, upstream: StubUpstream,
                                                              hostile: HostileReport) -> None:
    sidecar = start_sidecar(tmp_path, upstream)
    ledger = Path(sidecar.ledger)
    results: list[tuple[int, str | None, dict]] = []
    try:
        results += [chat(sidecar) for _ in range(2)]

        def delete() -> None:
            for p in tmp_path.glob("ledger.sqlite*"):
                p.unlink()

        results += in_flight_while(sidecar, upstream, delete)
        paid = upstream.calls
        after = [chat(sidecar) for _ in range(10)]
        results += after
        unpaid = upstream.calls - paid
        status, ready = readyz(sidecar)
    finally:
        sidecar.stop()
    statuses = [s for s, _, _ in results]
    acked = [rid for s, rid, _ in results if s == 200 and rid]
    rescued = sorted(tmp_path.glob("ledger.sqlite.rescued-*.sqlite"))
    assert rescued, f"no rescue copy of the deleted ledger:\n{log_tail(sidecar)}"
    # The operator's move: put the rescued history back, restart; the spool is replayed at start-up.
    rescued[-1].rename(ledger)
    again = start_sidecar(tmp_path, upstream)
    try:
        wait_ready(again, 200)
        final = stored_ids(str(ledger))
    finally:
        again.stop()
    missing = lost(acked, final, spooled_ids(Path(f"{ledger}.spool.jsonl")))
    case = hostile.case("sqlite file deleted while serving", statuses=statuses, records_lost=len(missing),
                        upstream_calls_while_not_ready=unpaid, readyz=status)
    assert_no_500(statuses, [b for _, _, b in results])
    check_refusals(results)
    assert statuses[:2 + IN_FLIGHT] == [200] * (2 + IN_FLIGHT), statuses  # paid calls are answered
    assert [s for s, _, _ in after] == [503] * 10, [b for _, _, b in after][:2]
    assert unpaid == 0, "requests were sent upstream while the ledger could not record them"
    assert status == 503 and "LedgerGoneError" in ready["checks"]["ledger_writes"], ready
    assert case.records_lost == 0, missing
    assert set(acked) <= final  # everything is back in one ledger after the restart


# --- 3. the ledger's disk fills up ---------------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real filesystem that really runs out of space (ENOSPC)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        from tests.support.postgres import loud_skip

        loud_skip(f"cannot mount a small tmpfs for the disk-full test ({res.stderr.strip()}); needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem refuses even one more byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 1 << 16
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
    finally:
        os.close(fd)
    return filler


@pytest.mark.minutes  # a fault soak (~10 s each on 2 cores): `make test-all`
@pytest.mark.parametrize("spool_on", ["other-disk", "same-disk"])
def test_disk_full_answers_paid_calls_and_loses_nothing(tmp_path: Path, small_disk: Path, upstream: StubUpstream,
                                                         hostile: HostileReport, spool_on: str) -> None:
    """Ledger on a small tmpfs that fills up. With the spool on another disk the in-flight record is
    spooled; with the spool on the same full disk it is held in memory; either way it is answered
    and lands in the ledger once space is back."""
    ledger = small_disk / "ledger.sqlite"
    spool = tmp_path / "ledger.spool.jsonl" if spool_on == "other-disk" else small_disk / "ledger.spool.jsonl"
    sidecar = start_sidecar(tmp_path, upstream, ledger_url=str(ledger), ledger_spool=str(spool))
    results: list[tuple[int, str | None, dict]] = []
    try:
        results += [chat(sidecar) for _ in range(2)]
        filler: list[Path] = []
        results += in_flight_while(sidecar, upstream, lambda: filler.append(fill(small_disk)))
        during = burst(sidecar, 12)
        results += during
        status_full, ready_full = readyz(sidecar)
        filler[0].unlink()  # space is back: the writer's retry loop replays the spool
        wait_ready(sidecar, 200, timeout=20)
        results += [chat(sidecar) for _ in range(2)]
    finally:
        sidecar.stop()
    statuses = [s for s, _, _ in results]
    acked = [rid for s, rid, _ in results if s == 200 and rid]
    missing = lost(acked, stored_ids(str(ledger)), spooled_ids(spool))
    case = hostile.case(f"disk full (spool on {spool_on})", statuses=statuses, records_lost=len(missing),
                        readyz_while_full=status_full)
    assert_no_500(statuses, [b for _, _, b in results])
    check_refusals(results)
    assert statuses[2:2 + IN_FLIGHT] == [200] * IN_FLIGHT, results[2:6]  # paid while the disk filled
    assert {s for s, _, _ in during} <= {200, 503}
    assert status_full == 503, ready_full
    assert case.records_lost == 0, f"{missing}\n{log_tail(sidecar)}"
    assert spool.stat().st_size == 0 if spool.exists() else True  # replayed


# --- 4. PostgreSQL goes down ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_postgres() -> Iterator[Any]:
    """A throw-away cluster of our own: the test stops and starts it (the shared one stays up)."""
    from tests.support.postgres import PostgresUnavailable, TemporaryPostgres, loud_skip

    server = TemporaryPostgres(install=True)
    try:
        server.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        loud_skip(str(exc))
    yield server
    server.stop()


def pg_ctl(server: Any, action: str) -> None:
    assert server.root is not None and server.bin_dir is not None
    cmd = [str(server.bin_dir / "pg_ctl"), "-D", str(server.root / "data"), "-w", "-t", "60"]
    if action == "stop":
        cmd += ["-m", "fast", "stop"]
    else:
        opts = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.root / 'sock'}"
        cmd += ["-l", str(server.root / "log"), "-o", opts, "start"]
    res = server._as_postgres(cmd, timeout=90)
    assert res.returncode == 0, res.stderr or res.stdout


@pytest.mark.minutes  # a fault soak (~10 s each on 2 cores): `make test-all`
def test_postgres_down_answers_paid_calls_and_loses_nothing(tmp_path: Path, own_postgres: Any,
                                                             upstream: StubUpstream, hostile: HostileReport) -> None:
    spool = tmp_path / "ledger.spool.jsonl"
    sidecar = start_sidecar(tmp_path, upstream, ledger_url=own_postgres.url, ledger_spool=str(spool))
    results: list[tuple[int, str | None, dict]] = []
    up = True
    try:
        results += [chat(sidecar) for _ in range(2)]
        results += in_flight_while(sidecar, upstream, lambda: pg_ctl(own_postgres, "stop"))
        up = False
        during = burst(sidecar, 12)
        results += during
        status_down, ready_down = readyz(sidecar)
        pg_ctl(own_postgres, "start")
        up = True
        wait_ready(sidecar, 200, timeout=20)
        results += [chat(sidecar) for _ in range(2)]
    finally:
        sidecar.stop()
        if not up:
            pg_ctl(own_postgres, "start")
    statuses = [s for s, _, _ in results]
    acked = [rid for s, rid, _ in results if s == 200 and rid]
    missing = lost(acked, stored_ids(own_postgres.url), spooled_ids(spool))
    case = hostile.case("postgresql down", statuses=statuses, records_lost=len(missing), readyz_while_down=status_down)
    assert_no_500(statuses, [b for _, _, b in results])
    check_refusals(results)
    assert statuses[2:2 + IN_FLIGHT] == [200] * IN_FLIGHT, results[2:6]  # paid while PostgreSQL stopped
    assert {s for s, _, _ in during} <= {200, 503}
    assert status_down == 503, ready_down
    assert case.records_lost == 0, f"{missing}\n{log_tail(sidecar)}"
