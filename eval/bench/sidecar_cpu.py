"""Sidecar CPU per request: process CPU time over N sequential requests to the stub upstream.

    python eval/bench/sidecar_cpu.py --json [--n 400]

CPU seconds are far less sensitive to other load on the machine than latency, so this is the figure
to compare two versions of Triage on a shared machine (run both, interleaved). Uses the same
stack as sidecar_overhead.py: the stub upstream, one sidecar worker, the default probe, SQLite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sidecar_overhead import KEY, Stack  # noqa: E402


def measure(n: int, warmup: int = 50) -> dict[str, float]:
    import httpx
    import psutil

    body = {"model": "triage/bench", "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is 12 times 7? Answer briefly."}]}
    headers = {"authorization": f"Bearer {KEY}"}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), fail_rate=0.0, workers=1)
        try:
            with httpx.Client(timeout=30) as client:
                for _ in range(warmup):
                    client.post(stack.url + "/v1/chat/completions", json=body, headers=headers)
                proc = psutil.Process(stack.proc.pid)
                c0, w0 = proc.cpu_times(), time.perf_counter()
                for _ in range(n):
                    r = client.post(stack.url + "/v1/chat/completions", json=body, headers=headers)
                    r.raise_for_status()
                c1, w1 = proc.cpu_times(), time.perf_counter()
        finally:
            stack.stop()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"requests": n, "cpu_ms_per_request": round(cpu / n * 1000, 2),
            "wall_ms_per_request": round((w1 - w0) / n * 1000, 2)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = measure(args.n)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
