"""Benchmark: records/s of the replay evaluator on synthetic outcomes.

Generates N queries x M candidates of synthetic outcomes directly as numpy arrays (no JSON
parsing: this measures the metric computation), then times :func:`triage.eval.evaluation.evaluate`
with every baseline (each candidate, best single, random, oracle) and all their metrics,
bootstrap intervals included. Goal: >= 200,000 records/s for 1M records. Wall-clock and
process CPU time are both reported (with the load average): on shared cores the wall-clock
figure mostly measures the neighbours.

    python -m triage.eval.bench.replay_metrics [--n 1000000] [--candidates 3] [--boot 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from triage.replay.matrix import ReplayData

GOAL_RECORDS_PER_S = 200_000


def synthetic_data(n: int, m: int, seed: int = 0) -> ReplayData:
    """``n`` queries of latent difficulty answered by ``m`` candidates of rising skill and price."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    skill = np.linspace(0.35, 0.9, m)
    p_correct = np.clip(skill[None, :] + 0.5 - difficulty[:, None] * (1.2 - 0.4 * skill[None, :]), 0.0, 1.0)
    score = (rng.random((n, m)) < p_correct).astype(float)
    prompt = rng.integers(30, 600, size=(n, 1)).astype(float).repeat(m, axis=1)
    reasoning = np.floor(rng.exponential(300.0, size=(n, m)) * np.arange(m)[None, :])
    completion = rng.integers(20, 400, size=(n, m)).astype(float) + reasoning
    price_in = np.geomspace(0.1, 10.0, m) / 1e6
    cost = prompt * price_in[None, :] + completion * 4 * price_in[None, :]
    return ReplayData(
        ids=[f"q{i}" for i in range(n)], candidates=[f"model-{j}" for j in range(m)], score=score, cost=cost,
        prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning,
        latency_s=np.full((n, m), np.nan), truncated=completion > 1200,
        splits=[], tasks=[], texts=[], records=None, name=f"synthetic-{n}x{m}",
    )


def main(argv: list[str] | None = None) -> int:
    from triage.eval.evaluation import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic queries")
    ap.add_argument("--candidates", type=int, default=3, help="candidates per query")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = synthetic_data(args.n, args.candidates)
    gen_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(max(1, args.repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = evaluate(data, n_boot=args.boot, protocol="kfold")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best = min(times)
    rps = args.n / best
    out = {
        "benchmark": "replay_metrics",
        "records": args.n,
        "candidates": args.candidates,
        "bootstrap_replicates": args.boot,
        "routers": list(result.routers),
        "generate_s": round(gen_s, 3),
        "evaluate_s": round(best, 3),
        "evaluate_s_all": [round(t, 3) for t in times],
        "records_per_s": round(rps),
        # CPU seconds of this process: the figure to read when other jobs share the cores
        "evaluate_cpu_s": round(min(cpu), 3),
        "records_per_cpu_s": round(args.n / min(cpu)),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "goal_records_per_s": GOAL_RECORDS_PER_S,
        "meets_goal": rps >= GOAL_RECORDS_PER_S,
        "meets_goal_cpu": args.n / min(cpu) >= GOAL_RECORDS_PER_S,
        "oracle_accuracy": result.routers["oracle"].metrics["accuracy"],
        "best_single_accuracy": result.routers["best-single"].metrics["accuracy"],
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
