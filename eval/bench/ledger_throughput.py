"""Benchmark: durable ledger write throughput and the latency the ledger adds to a request.

Concurrent request handlers (threads, or asyncio tasks with ``--mode async``) each call
``LedgerWriter.record()``, which returns only after the record's batch is committed, exactly as
the SDK and the sidecar do before answering. Durability is kept: SQLite runs in WAL mode with
``synchronous=FULL``; PostgreSQL with the server's default ``synchronous_commit=on``. Reported:

* ``*_records_per_s``: sustained committed records per second at ``--writers`` concurrency;
* ``*_p50_ms`` / ``*_p99_ms``: time inside ``record()`` per request at that concurrency (the
  latency the ledger adds to a request), and the same for a lone writer (``single_writer_*``);
* batching figures (mean and largest batch) that show group commit at work.

PostgreSQL: ``--postgres-url`` / ``$TRIAGE_BENCH_POSTGRES_URL`` / ``$TRIAGE_TEST_POSTGRES_URL``, else a
throw-away server is started on loopback when Debian's postgresql is installed; ``null`` if none.

    python eval/bench/ledger_throughput.py [--records 20000] [--writers 32] [--mode thread|async] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triage.router.ledger.records import Attempt, LedgerRecord, ProbeRecord  # noqa: E402
from triage.router.ledger.store import LedgerStore, open_ledger  # noqa: E402
from triage.router.ledger.writer import LedgerWriter  # noqa: E402

GOALS = {"sqlite_records_per_s": 2000, "postgres_records_per_s": 5000}


def make_records(n: int, tag: str) -> list[LedgerRecord]:
    """Realistic records: a probe output, one or two attempts, tokens, cost, metadata."""
    rng = np.random.default_rng(0)
    tiers = ("easy", "normal", "hard")
    out = []
    for i in range(n):
        tier = tiers[i % 3]
        p = rng.dirichlet((2, 2, 2))
        attempts = [Attempt(model="small-model", kind="primary", strategy=tier, prompt_tokens=int(rng.integers(20, 800)),
                            completion_tokens=int(rng.integers(10, 900)), reasoning_tokens=int(rng.integers(0, 400)),
                            cost_usd=float(rng.random() / 1e3), latency_s=float(rng.random()), finish_reason="stop")]
        if i % 10 == 0:
            attempts.append(Attempt(model="large-model", kind="escalation", strategy="hard", prompt_tokens=300,
                                    completion_tokens=500, cost_usd=0.004, latency_s=1.5, finish_reason="stop"))
        out.append(LedgerRecord(
            request_id=f"{tag}-{i}", tenant="acme", api_key_id="key-17", policy_name="default", policy_version="3",
            probe=ProbeRecord(probe_version="text-v1", tier=tier, tier_probs=dict(zip(tiers, p.tolist())),
                              success={"small-model": float(p[0]), "large-model": 0.9}),
            strategy=attempts[-1].strategy or tier, model=attempts[-1].model, attempts=attempts,
            latency_s=1.2, decision_latency_s=0.002, prompt_sha256="ab" * 32,
            metadata={"rule": "tier", "expected_cost_usd": 0.0012},
        ))
    return out


def _pct(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1000.0, q)) if lat else float("nan")


def run_threads(writer: LedgerWriter, records: list[LedgerRecord], writers: int) -> tuple[float, list[float]]:
    chunks = [records[i::writers] for i in range(writers)]
    lat: list[list[float]] = [[] for _ in range(writers)]
    start = threading.Barrier(writers + 1)

    def work(k: int) -> None:
        start.wait()
        pc, out = time.perf_counter, lat[k]
        for rec in chunks[k]:
            t0 = pc()
            writer.record(rec)
            out.append(pc() - t0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, [x for xs in lat for x in xs]


def run_async(writer: LedgerWriter, records: list[LedgerRecord], writers: int) -> tuple[float, list[float]]:
    chunks = [records[i::writers] for i in range(writers)]

    async def main() -> tuple[float, list[float]]:
        lat: list[float] = []

        async def work(chunk: list[LedgerRecord]) -> None:
            pc = time.perf_counter
            for rec in chunk:
                t0 = pc()
                await writer.arecord(rec)
                lat.append(pc() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(work(c) for c in chunks))
        return time.perf_counter() - t0, lat

    return asyncio.run(main())


def bench_store(store: LedgerStore, *, n: int, writers: int, mode: str, tag: str) -> dict[str, Any]:
    writer = LedgerWriter(store).start()
    try:
        warm = make_records(200, f"{tag}-warm")
        run_threads(writer, warm, 8)
        single = make_records(300, f"{tag}-single")
        _, single_lat = run_threads(writer, single, 1)
        records = make_records(n, f"{tag}-load")
        b0, r0, c0 = writer.stats.batches, writer.stats.records, writer.stats.commit_seconds
        runner = run_async if mode == "async" else run_threads
        secs, lat = runner(writer, records, writers)
        batches, recs = writer.stats.batches - b0, writer.stats.records - r0
        commit_s = writer.stats.commit_seconds - c0
    finally:
        writer.close()
    stored = store.count()
    expected = n + 500
    return {
        "records": n, "writers": writers, "mode": mode, "seconds": round(secs, 3),
        "records_per_s": round(n / secs, 1),
        "p50_ms": round(_pct(lat, 50), 3), "p99_ms": round(_pct(lat, 99), 3),
        "single_writer_p50_ms": round(_pct(single_lat, 50), 3),
        "single_writer_p99_ms": round(_pct(single_lat, 99), 3),
        "batches": batches, "mean_batch": round(recs / batches, 1) if batches else None,
        "largest_batch": writer.stats.largest_batch,
        "mean_commit_ms": round(commit_s / batches * 1000, 3) if batches else None,
        "commit_busy_share": round(commit_s / secs, 3),
        "all_records_stored": stored == expected, "stored": stored,
    }


def bench_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="triage-bench-", dir=args.tmpdir) as d:
        store = open_ledger(str(Path(d) / "ledger.sqlite"))
        try:
            res = bench_store(store, n=args.records, writers=args.writers, mode=args.mode, tag="sqlite")
            res["journal_mode"] = store.journal_mode()  # type: ignore[attr-defined]
            res["synchronous"] = store.synchronous  # type: ignore[attr-defined]
            res["integrity_problems"] = store.check_integrity()
        finally:
            store.close()
    return res


def _postgres_url(args: argparse.Namespace) -> tuple[str | None, Any, str | None]:
    url = args.postgres_url or os.environ.get("TRIAGE_BENCH_POSTGRES_URL") or os.environ.get("TRIAGE_TEST_POSTGRES_URL")
    if url:
        return url, None, None
    try:
        from tests.support.postgres import TemporaryPostgres
    except ImportError as exc:
        return None, None, f"no --postgres-url and tests/support/postgres.py unavailable: {exc}"
    server = TemporaryPostgres(install=False)
    try:
        return server.start(), server, None
    except Exception as exc:  # noqa: BLE001 - reported in the output
        server.stop()
        return None, None, f"no PostgreSQL server: {exc}"


def bench_postgres(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    url, server, why = _postgres_url(args)
    if url is None:
        return None, why
    import psycopg

    from tests.support.postgres import with_search_path

    schema = f"triage_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            sync_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
        store = open_ledger(with_search_path(url, schema))
        try:
            res = bench_store(store, n=args.records, writers=args.writers, mode=args.mode, tag="pg")
            res["integrity_problems"] = store.check_integrity()
        finally:
            store.close()
        res["synchronous_commit"], res["fsync"] = sync_commit, fsync
        res["server"] = "temporary (loopback)" if server else "given URL"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        return res, None
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--writers", type=int, default=32, help="concurrent request handlers")
    ap.add_argument("--mode", choices=("thread", "async"), default="thread")
    ap.add_argument("--postgres-url", default=None)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--tmpdir", default=None, help="where the SQLite file goes (default: system temp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    sqlite = bench_sqlite(args)
    pg, why = (None, "--no-postgres") if args.no_postgres else bench_postgres(args)
    doc = {
        "sqlite_records_per_s": sqlite["records_per_s"],
        "postgres_records_per_s": pg["records_per_s"] if pg else None,
        "sqlite_p99_added_latency_ms": sqlite["p99_ms"],
        "postgres_p99_added_latency_ms": pg["p99_ms"] if pg else None,
        "goals": GOALS,
        "cpus": os.cpu_count(),
        # Other work on the machine shares the cores; a load far above the core count depresses
        # every figure here, so it is reported with them.
        "loadavg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "sqlite": sqlite,
        "postgres": pg,
        "postgres_note": why,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for name, res in (("sqlite", sqlite), ("postgres", pg)):
            if res is None:
                print(f"{name:9s} n/a ({why})")
                continue
            print(f"{name:9s} {res['records_per_s']:>9,.0f} records/s at {res['writers']} {res['mode']} writers "
                  f"(goal {GOALS[name + '_records_per_s']:,}); record() p50 {res['p50_ms']:.2f} ms, "
                  f"p99 {res['p99_ms']:.2f} ms; lone writer p50 {res['single_writer_p50_ms']:.2f} ms, "
                  f"p99 {res['single_writer_p99_ms']:.2f} ms; mean batch {res['mean_batch']}")
    ok = sqlite["all_records_stored"] and (pg is None or pg["all_records_stored"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
