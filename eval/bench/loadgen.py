"""Load generator for the sidecar benchmark: aiohttp on uvloop, keep-alive, one process of its own.

Run as its own process (``sidecar_overhead.py`` starts one per scenario) so its CPU never counts as
the server's and the server's event loop never waits on it. It reads the CPU time of the server's
process tree from ``/proc`` right before the first request and right after the last answer, so the
server's CPU per request covers exactly the measured requests.

    python eval/bench/loadgen.py --url http://127.0.0.1:8080/v1/chat/completions --model triage/bench \
        --clients 32 --duration 6 [--rate 10] [--cpu-pid 1234 --cpu-pid 1240]

Prints one JSON object: requests, elapsed_s, rps, p50/p90/p99/max ms, statuses, client errors, and
``cpu_ms`` (server CPU milliseconds per ``--cpu-pid``, its whole process tree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-bench-client-key-0123456789"
_SHORT = ["What is 2 + 2?", "Name the capital of France.", "Translate 'good morning' into Spanish.",
          "Is 17 a prime number?", "Give a synonym for 'quick'.", "What colour is the sky on a clear day?"]
_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def queries(n: int = 64) -> list[str]:
    """Short questions plus GSM8K test questions (read in place from the shared data)."""
    out = list(_SHORT)
    path = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
    if path.is_file():
        with path.open() as fh:
            for line in fh:
                out.append(json.loads(line)["question"])
                if len(out) >= n:
                    break
    return out


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime+stime+cutime+cstime in ticks) of one process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces
    # fields[1] is ppid; utime, stime, cutime, cstime are stat fields 14-17 (fields[11:15] here).
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def tree_cpu_ms(root: int) -> float:
    """CPU milliseconds of ``root`` and every live descendant (workers, helper processes).

    cutime/cstime add children that already exited and were reaped, so a worker that restarts
    mid-scenario is not lost; a live child's time is never in its parent's cutime, so nothing counts twice."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry))) is not None:
            stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total * _TICK_MS


def body(q: str, model: str, stream: bool = False) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": q}],
                       "max_tokens": 32, "stream": stream}).encode()


async def load(url: str, model: str, *, clients: int, n: int, rate: float | None, max_s: float,
               stream_share: float = 0.0, on_sample: Callable[[int], None] | None = None,
               cpu_pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """``n`` requests (or ``max_s`` seconds) from ``clients`` clients: paced at ``rate`` req/s in total
    (Poisson arrivals, at most one request in flight per client), or closed loop (each client sends its
    next request when the last one answered)."""
    import aiohttp

    qs = queries()
    lat: list[float] = []
    statuses: dict[int, int] = {}
    ids: list[str] = []
    errors: list[str] = []
    counter = iter(range(n))
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        deadline = time.monotonic() + max_s

        async def client(i: int) -> None:
            rng = random.Random(i)
            next_at = time.monotonic() + (rng.expovariate(rate / clients) if rate else 0.0)
            for k in counter:
                # A paced client whose next arrival falls past the deadline stops now: sleeping into
                # the tail would stretch the elapsed time and understate the achieved rate.
                if time.monotonic() > deadline or (rate and next_at > deadline):
                    return
                if rate:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += rng.expovariate(rate / clients)
                stream = rng.random() < stream_share
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body(qs[k % len(qs)], model, stream), headers=headers) as r:
                        await r.read()
                        lat.append(time.perf_counter() - t0)
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                        rid = r.headers.get("x-triage-request-id")
                        if r.status == 200 and rid:
                            ids.append(rid)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    errors.append(type(exc).__name__)
                if on_sample is not None:
                    on_sample(k)

        cpu0 = [tree_cpu_ms(p) for p in cpu_pids]
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
        cpu1 = [tree_cpu_ms(p) for p in cpu_pids]
    a = np.array(lat) * 1000.0
    q = (lambda p: round(float(np.percentile(a, p)), 3) if a.size else None)
    ok = statuses.get(200, 0)
    return {"requests": len(lat), "ok": ok, "elapsed_s": round(elapsed, 3),
            "rps": round(ok / elapsed, 1) if elapsed else None, "offered_rps": rate,
            "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99), "max_ms": round(float(a.max()), 3) if a.size else None,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "client_errors": len(errors),
            "cpu_ms": {str(p): round(c1 - c0, 1) for p, c0, c1 in zip(cpu_pids, cpu0, cpu1)}, "ids": ids}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--duration", type=float, required=True, help="seconds of load")
    ap.add_argument("--rate", type=float, default=None, help="offered req/s in total; default closed loop")
    ap.add_argument("--cpu-pid", type=int, action="append", default=[], help="server root pid to meter")
    args = ap.parse_args(argv)
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    res = run_loop(load(args.url, args.model, clients=args.clients, n=10**9, rate=args.rate, max_s=args.duration,
                        cpu_pids=tuple(args.cpu_pid)))
    res.pop("ids")
    json.dump(res, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
