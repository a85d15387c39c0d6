"""Benchmark: what the sidecar adds to a request (probe + policy + ledger + HTTP), beside the LiteLLM proxy; a soak.

Default mode, side by side on loopback against ONE stub upstream (``stub_upstream.py``, answers at
once): the stub directly, the real sidecar (``triage serve`` with its production settings: the
default text probe on, a SQLite ledger committed durably before each response, a hashed API key,
JSON access log; one worker, and a second sidecar with ``--workers 2`` for the saturated case), and
the LiteLLM proxy (``litellm[proxy]`` installed by ``litellm_proxy.py`` into ``.bench-venvs/``, one
``openai/...`` model on the same stub, no database). Interleaved rounds of three scenarios (1 client
sequential, 32 clients paced at ``--rate``, 32 clients saturated): added latency over the stub,
throughput and server CPU per request (``/proc`` times of each server's process tree). The load
generator is ``loadgen.py`` in its own process; see ``sidecar_compare.py`` for the method.

    python eval/bench/sidecar_overhead.py --rounds 5 --duration 5 --out result.json   # ~7 min
    python eval/bench/sidecar_overhead.py --quick --systems triage,direct             # ~1 min smoke

``--fast-probe DIR`` adds a fourth system, the sidecar with the fast probe (``text:variant=l0``: the
encoder's embedding layer only; ``triage probe build-default --features text:variant=l0 --out DIR``),
with its own ratios and goal checks in ``triage_fast_probe``; the headline stays the default probe's.

``--soak N --concurrency C --fail-rate F``: N requests from C clients while the stub fails F of its
calls to the policy's primary models (half HTTP 500/503, half held past the strategy timeout); the
policy's fallback model never fails. Checks: zero 5xx, every answered request id in the ledger, RSS
of the sidecar at the start and end.

    python eval/bench/sidecar_overhead.py --soak 20000 --concurrency 64 --fail-rate 0.1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO, Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
from litellm_proxy import LiteLLMProxy, ensure_venv, proxy_config
from loadgen import KEY, load, queries
from sidecar_compare import (
    SYSTEMS,
    Target,
    environment,
    run_load,
    run_rounds,
    summarize,
)

PY = sys.executable
UPSTREAM_SECRET = "sk-bench-upstream-SECRET-9876543210"
# Issue #16's goals (one worker, 2 cores; the rps goal with --workers 2).
GOALS = {"added_p50_ms_1_client_max": 5.0, "added_p50_ratio_max": 0.35, "added_p99_ms_1_client_max": 20.0,
         "rps_ratio_min": 3.0, "rps_32_saturated_2_workers_min": 300.0, "cpu_ms_per_request_max": 6.0}


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

    def __init__(self, tmp: Path, *, fail_rate: float, workers: int, probe: str = "default",
                 stub: str | None = None, wait: bool = True) -> None:
        """``stub``: the URL of a running stub to share (the side-by-side run); else one is started.
        ``wait=False`` returns at once: call ``wait_ready()`` (to start several servers side by side)."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ledger = tmp / "ledger.sqlite"
        self.log = tmp / "sidecar.log"
        self.stub_proc: subprocess.Popen | None = None
        if stub is None:
            self.stub_port = free_port()
            self.stub = f"http://127.0.0.1:{self.stub_port}"
            self.stub_proc = start_stub(self.stub_port, fail_rate)
        else:
            self.stub = stub
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
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        if self.stub_proc is not None:
            wait_http(self.stub + "/stats", 30, self.stub_proc)
        wait_http(self.url + "/readyz", 300, self.proc)

    def rss_mb(self) -> float:
        import psutil

        p = psutil.Process(self.proc.pid)
        return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        stop_all([self.proc] + ([self.stub_proc] if self.stub_proc is not None else []))


def start_stub(port: int, fail_rate: float = 0.0) -> subprocess.Popen:
    half = fail_rate / 2
    return subprocess.Popen(
        [PY, str(REPO / "eval/bench/stub_upstream.py"), "--port", str(port), "--fail-rate", str(half),
         "--timeout-rate", str(half), "--hang-s", "2", "--fault-models", "flaky-*"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGINT (a graceful shutdown, the ledger closed) to all, then wait; kill what outlives 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def breakdown(stack: Stack, n: int = 200) -> dict[str, Any]:
    """Where a request's time goes, measured in this process on the same policy and stub: CPU of the
    probe + policy, CPU of the upstream call (the direct path: the bench strategies are `openai/...` with
    an `api_base`), wall time of a durable ledger commit."""
    from triage.router.core.receipt import ledger_record
    from triage.router.core.router import Router
    from triage.router.ledger import LedgerWriter, open_ledger

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
    return {"probe_and_policy_cpu_ms": round(probe_cpu, 2), "upstream_call_cpu_ms": round(call_cpu, 2),
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


def warm_up(target: Target, seconds: float, stub_pid: int, passes: int = 5) -> list[float]:
    """Saturated passes until two in a row agree within 20%: the first requests of each worker pay for
    lazy imports, the first ONNX runs and connection pools, and with 2 workers the kernel may hand one
    pass's connections all to one worker, so one pass does not warm them all."""
    seen: list[float] = []
    for _ in range(passes):
        w = run_load(target, "32_saturated", duration=seconds, rate=0.0, stub_pid=stub_pid)
        seen.append(w["rps"] or 0.0)
        print(f"warm-up {target.name}: {w['ok']} ok, {w['rps']} rps", file=sys.stderr, flush=True)
        if len(seen) >= 2 and abs(seen[-1] - seen[-2]) <= 0.2 * max(seen[-1], seen[-2]):
            break
    return seen


def compare(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start every system in ``args.systems`` against one stub, warm each, run the rounds, summarize."""
    wanted = {x.strip() for x in args.systems.split(",") if x.strip()}
    if unknown := wanted - set(SYSTEMS):
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if "triage" in wanted and not args.no_2_workers:
        wanted.add("triage-2-workers")
    if args.fast_probe:
        if not (Path(args.fast_probe) / "card.json").is_file():
            raise SystemExit(f"--fast-probe {args.fast_probe}: not a probe folder (no card.json); build one with "
                             "`triage probe build-default --features text:variant=l0 --out DIR`")
        wanted.add("triage-fast-probe")
    elif "triage-fast-probe" in wanted:
        raise SystemExit("--systems triage-fast-probe needs --fast-probe DIR (a probe folder)")
    t_start = time.monotonic()
    doc: dict[str, Any] = {"rounds": args.rounds}
    proxy_install = ensure_venv() if "litellm-proxy" in wanted else None
    stub_port = free_port()
    stub = f"http://127.0.0.1:{stub_port}"
    stub_proc = start_stub(stub_port)
    servers: list[Any] = []
    try:
        wait_http(stub + "/stats", 30, stub_proc)
        targets = {"direct": Target("direct", stub, "flaky-small", stub_proc.pid)}
        stacks: dict[str, Stack] = {}
        for name, workers in (("triage", 1), ("triage-2-workers", 2), ("triage-fast-probe", 1)):
            if name in wanted:
                probe = str(Path(args.fast_probe).resolve()) if name == "triage-fast-probe" else "default"
                stacks[name] = Stack(tmp / name, fail_rate=0.0, workers=workers, stub=stub, wait=False, probe=probe)
                servers.append(stacks[name])
        proxy = None
        if proxy_install is not None:
            proxy = LiteLLMProxy(tmp, stub_url=stub, port=free_port(), master_key=KEY, upstream_key=UPSTREAM_SECRET)
            servers.append(proxy)
        for name, stack in stacks.items():  # started side by side above; now wait for each
            stack.wait_ready()
            scen = ("32_saturated",) if name == "triage-2-workers" else ("1_client", "32_paced", "32_saturated")
            targets[name] = Target(name, stack.url, "triage/bench", stack.proc.pid, scen)
        if proxy is not None:
            wait_http(proxy.url + "/health/liveliness", 180, proxy.proc)
            targets["litellm-proxy"] = Target("litellm-proxy", proxy.url, "bench", proxy.pid)
        doc["startup_s"] = round(time.monotonic() - t_start, 1)
        print(f"started in {doc['startup_s']} s: {', '.join(targets)}", file=sys.stderr, flush=True)
        doc["warmup_rps"] = {t.name: warm_up(t, args.warmup, stub_proc.pid) for t in targets.values()}
        env0 = environment()
        raw = run_rounds(targets, rounds=args.rounds, duration=args.duration, rate=args.rate,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        t_stop = time.monotonic()
        stop_all([srv.proc for srv in servers] + [stub_proc])
        print(f"stopped in {time.monotonic() - t_stop:.1f} s", file=sys.stderr, flush=True)
    summary = summarize(raw)
    systems = summary.pop("systems")
    doc["systems"] = {k: systems[k] for k in ("triage", "litellm-proxy", "triage-2-workers", "triage-fast-probe")
                      if k in systems}
    for name, stack in stacks.items():
        doc["systems"][name]["settings"] = {
            "production_settings": True, "workers": 2 if name == "triage-2-workers" else 1,
            "probe": (fast_probe_description(args.fast_probe) if name == "triage-fast-probe"
                      else "default text probe, on"), "ledger": "SQLite, WAL, synchronous=FULL, each record committed "
            "before its response", "access_log": "JSON, one line per request", "auth": "hashed API key",
            "config": {k: v for k, v in json.loads((stack.tmp / "sidecar.yaml").read_text()).items() if k != "api_keys"}}
    if proxy_install is not None:
        doc["systems"]["litellm-proxy"]["settings"] = {
            **proxy_install, "workers": 1, "database": None, "config": proxy_config(stub, "<client key>", "BENCH_UPSTREAM_KEY")}
    doc.update(summary)
    doc["direct"] = systems["direct"]
    doc["scenarios"] = {"1_client": "1 client, sequential", "32_paced": f"32 clients, Poisson, {args.rate} req/s in total",
                        "32_saturated": "32 clients, closed loop"}
    doc["duration_s_per_measurement"] = args.duration
    doc["ratios_definition"] = "Triage ÷ LiteLLM proxy per round; ratios = median over rounds, ratios_range = min..max"
    doc["goals"] = GOALS
    doc["goals_met"] = goals_met(doc["triage"], doc["ratios"])
    if (f := doc.get("triage_fast_probe")) is not None:  # the same goals for the option (2 workers: not measured)
        f["goals_met"] = goals_met(f, f["ratios"], two_workers=False)
    doc["environment"] = {"at_start_of_rounds": env0, "at_end": environment()}
    doc["raw"] = raw
    doc["wall_s"] = round(time.monotonic() - t_start, 1)
    return doc


def goals_met(head: dict[str, Any], ratios: dict[str, Any], *, two_workers: bool = True) -> dict[str, bool | None]:
    """Each of GOALS against a headline block and its ratios (None: not measured)."""
    checks = {"added_p50_ms_1_client_max": (head["added_p50_ms_1_client"], "le"),
              "added_p50_ratio_max": (ratios["added_p50_1_client"], "le"),
              "added_p99_ms_1_client_max": (head["added_p99_ms_1_client"], "le"),
              "rps_ratio_min": (ratios["rps_32_saturated"], "ge"),
              "cpu_ms_per_request_max": (head["cpu_ms_per_request"], "le")}
    if two_workers:
        checks["rps_32_saturated_2_workers_min"] = (head["rps_32_saturated_2_workers"], "ge")
    return {k: None if v is None else (v <= GOALS[k] if op == "le" else v >= GOALS[k]) for k, (v, op) in checks.items()}


def fast_probe_description(path: str) -> str:
    """What the fast-probe row ran: the probe's features and its card's own latency figure."""
    card = json.loads((Path(path) / "card.json").read_text())
    specs = [f"{f['name']}:{','.join(f'{k}={v}' for k, v in f.get('params', {}).items())}" for f in card["features"]]
    return f"probe {Path(path).name} ({'; '.join(specs)}; card p50 {card.get('latency', {}).get('p50_ms')} ms), on"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default="direct,triage,litellm-proxy",
                    help=f"comma-separated, of {', '.join(SYSTEMS)}; `triage` brings `triage-2-workers` "
                    "(saturated only) unless --no-2-workers; the stub (direct) is always measured")
    ap.add_argument("--no-2-workers", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds per warm-up pass (2-5 passes per system)")
    ap.add_argument("--rate", type=float, default=10.0, help="offered req/s (in total) of the paced scenario")
    ap.add_argument("--quick", action="store_true", help="smoke: 1 round of 2 s measurements")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--workers", type=int, default=1, help="soak/breakdown: sidecar worker processes")
    ap.add_argument("--fast-probe", default=None, metavar="DIR",
                    help="also measure a sidecar whose policy uses this probe folder (the fast probe: "
                    "`triage probe build-default --features text:variant=l0 --out DIR`), 1 worker, every scenario")
    ap.add_argument("--probe", default="default",
                    help="soak/breakdown: the bench policy's probe: `default` (the text probe) or a probe folder")
    ap.add_argument("--breakdown", action="store_true", help="in-process CPU breakdown (probe, call, commit) instead")
    ap.add_argument("--soak", type=int, default=0, help="run the soak with this many requests instead")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fail-rate", type=float, default=0.1)
    ap.add_argument("--stream-share", type=float, default=0.1, help="share of streaming requests in the soak")
    ap.add_argument("--soak-max-s", type=float, default=900.0)
    ap.add_argument("--json", action="store_true", help="(kept for old command lines: the output is JSON)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 2.0
    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        if not (args.soak or args.breakdown):
            doc = compare(args, Path(tmp))
        else:
            stack = Stack(Path(tmp), fail_rate=args.fail_rate if args.soak else 0.0, workers=args.workers,
                          probe=str(Path(args.probe).resolve()) if args.probe != "default" else "default")
            try:
                # Warm-up: first calls pay for lazy set-up and onnxruntime's first runs.
                asyncio.run(load(stack.url + "/v1/chat/completions", "triage/bench", clients=4, n=200, rate=None,
                                 max_s=60))
                doc = {"cpus": os.cpu_count(), "workers": args.workers, "probe": args.probe,
                       "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
                if args.soak:
                    doc["soak"] = soak(stack, args)
                    doc["soak"]["fail_rate"] = args.fail_rate
                    doc["soak"]["concurrency"] = args.concurrency
                else:
                    doc["breakdown"] = breakdown(stack)
            finally:
                stack.stop()
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
