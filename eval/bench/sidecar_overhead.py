"""Benchmark: what the sidecar adds to a request (probe + policy + ledger + HTTP), and a soak.

Three processes on loopback: the stub upstream (``stub_upstream.py``, answers at once), the real
sidecar (``triage serve``, the default text probe, a SQLite ledger with durable commits, one API
key, JSON access log), and this script as the load generator (aiohttp, keep-alive).

For each client count (``--clients 1,32,128``):

* **paced**: the clients together offer ``--rate`` requests/s (Poisson arrivals, at most one request
  in flight per client), once straight to the stub and once through the sidecar. Added latency =
  quantile through the sidecar - the same quantile direct. This is the figure the goals are about:
  below saturation, latency is the work done per request, not queueing.
* **saturated**: closed loop (each client sends its next request when the last one answered):
  throughput (``rps``) and the latencies at that throughput.

``--soak N --concurrency C --fail-rate F``: N requests from C clients while the stub fails F of its
calls to the policy's primary models (half HTTP 500/503, half held past the strategy timeout); the
policy's fallback model never fails. Checks: zero 5xx, every answered request id in the ledger, RSS
of the sidecar at the start and end.

    python eval/bench/sidecar_overhead.py --json
    python eval/bench/sidecar_overhead.py --soak 20000 --concurrency 64 --fail-rate 0.1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PY = sys.executable
KEY = "sk-bench-client-key-0123456789"
UPSTREAM_SECRET = "sk-bench-upstream-SECRET-9876543210"
GOALS = {"overhead_p50_ms": 5.0, "overhead_p99_ms": 20.0, "rps": 300.0}
_SHORT = ["What is 2 + 2?", "Name the capital of France.", "Translate 'good morning' into Spanish.",
          "Is 17 a prime number?", "Give a synonym for 'quick'.", "What colour is the sky on a clear day?"]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def policy_yaml(stub: str, probe: str = "default") -> str:
    def strategy(model: str, timeout: float, max_tokens: int) -> str:
        return (f"    model: openai/{model}\n    api_base: {stub}/v1\n    api_key_env: BENCH_UPSTREAM_KEY\n"
                f"    max_tokens: {max_tokens}\n    timeout_s: {timeout}\n"
                "    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n")
    return (f"name: bench\nversion: 1\nprobe: {probe}\nstrategies:\n"
            f"  small:\n{strategy('flaky-small', 0.5, 64)}  large:\n{strategy('flaky-large', 0.5, 256)}"
            f"  steady:\n{strategy('steady', 10.0, 256)}"
            "tiers: {easy: small, normal: small, hard: large}\nfallback: steady\n")


class Stack:
    """Stub upstream + sidecar processes for one configuration."""

    def __init__(self, tmp: Path, *, fail_rate: float, workers: int, probe: str = "default") -> None:
        self.tmp = tmp
        self.stub_port, self.port = free_port(), free_port()
        self.stub = f"http://127.0.0.1:{self.stub_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.ledger = tmp / "ledger.sqlite"
        self.log = tmp / "sidecar.log"
        half = fail_rate / 2
        self.stub_proc = subprocess.Popen(
            [PY, str(REPO / "eval/bench/stub_upstream.py"), "--port", str(self.stub_port), "--fail-rate", str(half),
             "--timeout-rate", str(half), "--hang-s", "2", "--fault-models", "flaky-*"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (tmp / "bench.yaml").write_text(policy_yaml(self.stub, probe))
        import hashlib

        (tmp / "sidecar.yaml").write_text(json.dumps({
            "policies": [str(tmp / "bench.yaml")], "ledger_url": str(self.ledger), "workers": workers,
            "api_keys": [{"id": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
        }))
        env = {**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_SECRET, "HF_HUB_OFFLINE": "1"}
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen([PY, "-m", "triage.router.cli.main", "serve", "--config", str(tmp / "sidecar.yaml"),
                                          "--port", str(self.port)], cwd=REPO, env=env, stdout=fh, stderr=fh)
        wait_http(self.stub + "/stats", 30, self.stub_proc)
        wait_http(self.url + "/readyz", 300, self.proc)

    def rss_mb(self) -> float:
        import psutil

        p = psutil.Process(self.proc.pid)
        return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        for proc in (self.proc, self.stub_proc):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (self.proc, self.stub_proc):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def body(q: str, model: str, stream: bool = False) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": q}],
                       "max_tokens": 32, "stream": stream}).encode()


async def load(url: str, model: str, *, clients: int, n: int, rate: float | None, max_s: float,
               stream_share: float = 0.0, on_sample: Any = None) -> dict[str, Any]:
    """``n`` requests from ``clients`` clients: paced at ``rate`` req/s in total, or closed loop."""
    import aiohttp

    qs = queries()
    lat: list[float] = []
    statuses: dict[int, int] = {}
    ids: list[str] = []
    errors: list[str] = []
    counter = iter(range(n))
    deadline = time.monotonic() + max_s
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def client(i: int) -> None:
            rng = random.Random(i)
            next_at = time.monotonic() + (rng.expovariate(rate / clients) if rate else 0.0)
            for k in counter:
                if time.monotonic() > deadline:
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

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    a = np.array(lat) * 1000.0
    q = (lambda p: round(float(np.percentile(a, p)), 3) if a.size else None)  # noqa: E731
    # In paced runs the request rate is set by the clients, so only saturated runs report rps.
    rps = round(len(lat) / elapsed, 1) if elapsed and rate is None else None
    return {"requests": len(lat), "elapsed_s": round(elapsed, 2), "rps": rps,
            "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99), "max_ms": round(float(a.max()), 3) if a.size else None,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "client_errors": len(errors),
            "ids": ids}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def level(stack: Stack, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    triage_url, direct_url = stack.url + "/v1/chat/completions", stack.stub + "/v1/chat/completions"
    n_paced = max(args.min_requests, int(args.rate * args.paced_seconds))
    out: dict[str, Any] = {}
    for mode, rate, n in (("paced", args.rate, n_paced), ("saturated", None, args.saturated_requests)):
        direct = asyncio.run(load(direct_url, "flaky-small", clients=clients, n=n, rate=rate, max_s=args.max_s))
        triage = asyncio.run(load(triage_url, "triage/bench", clients=clients, n=n, rate=rate, max_s=args.max_s))
        for r in (direct, triage):
            r.pop("ids")
        out[mode] = {"direct": direct, "triage": triage,
                     "overhead_p50_ms": _diff(triage["p50_ms"], direct["p50_ms"]),
                     "overhead_p99_ms": _diff(triage["p99_ms"], direct["p99_ms"])}
        if rate:
            out[mode]["offered_rps"] = rate
    return out


def breakdown(stack: Stack, n: int = 200) -> dict[str, Any]:
    """Where a request's time goes, measured in this process on the same policy and stub: CPU of the
    probe + policy, CPU of the upstream call through litellm, wall time of a durable ledger commit."""
    from triage.router.core.router import Router
    from triage.router.ledger import LedgerWriter, open_ledger
    from triage.router.core.receipt import ledger_record

    os.environ["BENCH_UPSTREAM_KEY"] = UPSTREAM_SECRET
    router = Router.from_file(stack.tmp / "bench.yaml").warm()
    qs = queries()
    routed = [router.route_detailed([{"role": "user", "content": q}]) for q in qs[:8]]  # warm-up
    c0 = time.process_time()
    for i in range(n):
        routed = [router.route_detailed([{"role": "user", "content": qs[i % len(qs)] + f" ({i})"}])]
    probe_cpu = (time.process_time() - c0) / n * 1000.0

    async def calls() -> float:
        for _ in range(20):
            await router.aexecute(routed[0])
        c1 = time.process_time()
        for _ in range(n):
            await router.aexecute(routed[0])
        return (time.process_time() - c1) / n * 1000.0

    call_cpu = asyncio.run(calls())
    store = open_ledger(str(stack.tmp / "breakdown.sqlite"))
    writer = LedgerWriter(store).start()
    import uuid

    t0 = time.perf_counter()
    for _ in range(n):
        writer.record(ledger_record(routed[0], [], request_id=uuid.uuid4().hex, latency_s=0.01))
    commit_ms = (time.perf_counter() - t0) / n * 1000.0
    writer.close()
    store.close()
    return {"probe_and_policy_cpu_ms": round(probe_cpu, 2), "litellm_call_cpu_ms": round(call_cpu, 2),
            "ledger_commit_wall_ms": round(commit_ms, 2)}


def soak(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    from triage.router.ledger import open_ledger

    rss: list[float] = []
    marks = {"start": None}

    def sample(k: int) -> None:
        if k % 500 == 0:
            rss.append(stack.rss_mb())
            if k >= 1000 and marks["start"] is None:
                marks["start"] = rss[-1]

    res = asyncio.run(load(stack.url + "/v1/chat/completions", "triage/bench", clients=args.concurrency,
                           n=args.soak, rate=None, max_s=args.soak_max_s, stream_share=args.stream_share,
                           on_sample=sample))
    rss_end = stack.rss_mb()
    store = open_ledger(str(stack.ledger))
    try:
        missing = [i for i in res["ids"] if store.get(i) is None]
        in_ledger = store.count()
    finally:
        store.close()
    stub_stats = json.loads(urllib.request.urlopen(stack.stub + "/stats").read())
    fives = sum(v for k, v in res["statuses"].items() if k.startswith("5"))
    log_text = stack.log.read_text(errors="replace")
    return {
        "requests": res["requests"], "rps": res["rps"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
        "statuses": res["statuses"], "client_errors": res["client_errors"], "http_5xx": fives,
        "answered_ids": len(res["ids"]), "missing_from_ledger": len(missing), "ledger_records": in_ledger,
        "upstream": stub_stats, "rss_start_mb": round(marks["start"] or (rss[0] if rss else rss_end), 1),
        "rss_end_mb": round(rss_end, 1), "rss_max_mb": round(max(rss + [rss_end]), 1),
        "rss_trace_mb": [round(x, 1) for x in rss[:: max(1, len(rss) // 10)]],  # every ~10% of the run
        "secret_in_log": UPSTREAM_SECRET in log_text or KEY in log_text,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,32,128", help="client counts, comma-separated")
    ap.add_argument("--rate", type=float, default=100.0, help="offered requests/s of the paced runs")
    ap.add_argument("--paced-seconds", type=float, default=10.0)
    ap.add_argument("--min-requests", type=int, default=300)
    ap.add_argument("--saturated-requests", type=int, default=3000)
    ap.add_argument("--max-s", type=float, default=120.0, help="cap on any one run")
    ap.add_argument("--workers", type=int, default=1, help="sidecar worker processes")
    ap.add_argument("--probe", default="default",
                    help="the bench policy's probe: `default` (the text probe) or a probe folder, e.g. a "
                    "lexical-only probe, to see what the text encoder costs")
    ap.add_argument("--soak", type=int, default=0, help="run the soak with this many requests instead")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fail-rate", type=float, default=0.1)
    ap.add_argument("--stream-share", type=float, default=0.1, help="share of streaming requests in the soak")
    ap.add_argument("--soak-max-s", type=float, default=900.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        stack = Stack(Path(tmp), fail_rate=args.fail_rate if args.soak else 0.0, workers=args.workers,
                      probe=str(Path(args.probe).resolve()) if args.probe != "default" else "default")
        try:
            # Warm-up: first calls pay for litellm's lazy set-up and onnxruntime's first runs.
            asyncio.run(load(stack.url + "/v1/chat/completions", "triage/bench", clients=4, n=200, rate=None, max_s=60))
            doc: dict[str, Any] = {"cpus": os.cpu_count(), "workers": args.workers, "probe": args.probe,
                                   "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
            if args.soak:
                doc["soak"] = soak(stack, args)
                doc["soak"]["fail_rate"] = args.fail_rate
                doc["soak"]["concurrency"] = args.concurrency
            else:
                levels = {c: level(stack, c, args) for c in (int(x) for x in args.clients.split(","))}
                doc["levels"] = {str(c): v for c, v in levels.items()}
                ref = levels.get(32) or levels[max(levels)]
                doc["overhead_p50_ms"] = ref["paced"]["overhead_p50_ms"]
                doc["overhead_p99_ms"] = ref["paced"]["overhead_p99_ms"]
                doc["rps"] = ref["saturated"]["triage"]["rps"]
                doc["offered_rps_paced"] = args.rate
                doc["goals"] = GOALS
                doc["breakdown"] = breakdown(stack)
        finally:
            stack.stop()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(json.dumps({k: v for k, v in doc.items() if k != "levels"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
