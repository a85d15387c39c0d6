"""Side by side, interleaved in rounds: the stub directly, the Triage sidecar, and the LiteLLM proxy.

Used by ``sidecar_overhead.py`` (its default mode). All servers run at once against ONE stub upstream;
each round measures every (scenario, system) pair in turn, the system order rotating from round to
round, so a noisy minute on the shared machine hits every system alike and each round's figures are
comparable with each other. Every measurement is a fresh load-generator process (``loadgen.py``).

Scenarios: ``1_client`` (sequential), ``32_paced`` (32 clients offering ``--rate`` req/s in total,
below every system's saturation, so latency is work, not queueing), ``32_saturated`` (closed loop).
Added latency = the system's quantile - the stub's same quantile in the same round and scenario.
Figures are medians over rounds with min and max; ratios are Triage ÷ LiteLLM proxy per round, then
the median (``ratios``) and min..max (``ratios_range``). A ``triage-fast-probe`` system (the sidecar
with the fast probe) gets the same headline and ratios in its own ``triage_fast_probe`` block.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIOS = ("1_client", "32_paced", "32_saturated")
SYSTEMS = ("direct", "triage", "triage-2-workers", "triage-fast-probe", "litellm-proxy")


@dataclass
class Target:
    """One server under test: where to send requests, the model name it serves, the root pid to meter."""

    name: str
    url: str
    model: str
    pid: int
    scenarios: tuple[str, ...] = SCENARIOS


def run_load(target: Target, scenario: str, *, duration: float, rate: float, stub_pid: int) -> dict[str, Any]:
    """One scenario against one target, in a fresh load-generator process."""
    clients = 1 if scenario == "1_client" else 32
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", target.url + "/v1/chat/completions",
           "--model", target.model, "--clients", str(clients), "--duration", str(duration),
           "--cpu-pid", str(target.pid)]
    if target.pid != stub_pid:
        cmd += ["--cpu-pid", str(stub_pid)]
    if scenario == "32_paced":
        cmd += ["--rate", str(rate)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"load generator failed on {target.name}/{scenario}: {r.stderr[-2000:]}")
    res = json.loads(r.stdout)
    cpu = res.pop("cpu_ms")
    ok = res["ok"] or None
    res["cpu_ms_per_request"] = round(cpu[str(target.pid)] / ok, 3) if ok else None
    res["stub_cpu_ms_per_request"] = round(cpu.get(str(stub_pid), cpu[str(target.pid)]) / ok, 3) if ok else None
    return res


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def spread(xs: list[Any]) -> dict[str, float] | None:
    vals = [float(x) for x in xs if _finite(x)]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3), "max": round(max(vals), 3)}


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if _finite(a) and _finite(b) and b > 0 else None


def run_rounds(targets: dict[str, Target], *, rounds: int, duration: float, rate: float,
               log: Callable[[str], None]) -> list[dict[str, dict[str, dict[str, Any]]]]:
    """raw[round][system][scenario] = one load-generator result."""
    stub_pid = targets["direct"].pid
    names = list(targets)
    raw: list[dict[str, dict[str, dict[str, Any]]]] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no system always runs first
        got: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
        for scenario in SCENARIOS:
            for name in order:
                if scenario in targets[name].scenarios:
                    res = run_load(targets[name], scenario, duration=duration, rate=rate, stub_pid=stub_pid)
                    got[name][scenario] = res
                    log(f"round {r + 1}/{rounds} {scenario:13s} {name:17s} rps={res['rps']} p50={res['p50_ms']} "
                        f"p99={res['p99_ms']} cpu/req={res['cpu_ms_per_request']} non200={res['requests'] - res['ok']}")
        raw.append(got)
    return raw


def summarize(raw: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """systems / ratios / ratios_range / triage headline block from the per-round results."""
    systems: dict[str, Any] = {}
    for name in raw[0]:
        scen: dict[str, Any] = {}
        for scenario in SCENARIOS:
            runs = [(rd[name].get(scenario), rd["direct"].get(scenario)) for rd in raw]
            runs = [(s, d) for s, d in runs if s is not None]
            if not runs:
                continue
            entry: dict[str, Any] = {
                "p50_ms": spread([s["p50_ms"] for s, _ in runs]), "p99_ms": spread([s["p99_ms"] for s, _ in runs]),
                "rps": spread([s["rps"] for s, _ in runs]),
                "cpu_ms_per_request": spread([s["cpu_ms_per_request"] for s, _ in runs]),
                "stub_cpu_ms_per_request": spread([s["stub_cpu_ms_per_request"] for s, _ in runs]),
                "requests": sum(s["requests"] for s, _ in runs), "non_200": sum(s["requests"] - s["ok"] for s, _ in runs),
                "client_errors": sum(s["client_errors"] for s, _ in runs),
            }
            if name != "direct":
                for q in ("p50", "p99"):
                    entry[f"added_{q}_ms"] = spread([s[f"{q}_ms"] - d[f"{q}_ms"] for s, d in runs
                                                     if d is not None and _finite(s[f"{q}_ms"]) and _finite(d[f"{q}_ms"])])
            scen[scenario] = entry
        systems[name] = {"scenarios": scen}

    def per_round(system: str, scenario: str, field: str) -> list[Any]:
        out = []
        for rd in raw:
            s, d = rd.get(system, {}).get(scenario), rd["direct"].get(scenario)
            if s is None or d is None:
                out.append(None)
            elif field.startswith("added_"):
                q = field.split("_")[1]
                out.append(s[f"{q}_ms"] - d[f"{q}_ms"] if _finite(s[f"{q}_ms"]) and _finite(d[f"{q}_ms"]) else None)
            else:
                out.append(s[field])
        return out

    def ratios_of(system: str) -> tuple[dict[str, float | None], dict[str, list[float] | None]]:
        ratios: dict[str, float | None] = {}
        ranges: dict[str, list[float] | None] = {}
        for key, scenario, field in (("added_p50_1_client", "1_client", "added_p50"),
                                     ("added_p99_1_client", "1_client", "added_p99"),
                                     ("rps_32_saturated", "32_saturated", "rps")):
            rs = [_ratio(t, lp) for t, lp in zip(per_round(system, scenario, field), per_round("litellm-proxy", scenario, field))]
            sp = spread(rs)
            ratios[key] = sp["median"] if sp else None
            ranges[key] = [sp["min"], sp["max"]] if sp else None
        return ratios, ranges

    def med(system: str, scenario: str, field: str) -> float | None:
        e = systems.get(system, {}).get("scenarios", {}).get(scenario, {}).get(field)
        return e["median"] if e else None

    def headline_of(system: str, two_workers: str | None) -> dict[str, float | None]:
        return {
            "added_p50_ms_1_client": med(system, "1_client", "added_p50_ms"),
            "added_p99_ms_1_client": med(system, "1_client", "added_p99_ms"),
            "rps_32_saturated": med(system, "32_saturated", "rps"),
            "rps_32_saturated_2_workers": med(two_workers, "32_saturated", "rps") if two_workers else None,
            # Saturated: the most requests per scenario, so idle background work weighs least per request.
            "cpu_ms_per_request": med(system, "32_saturated", "cpu_ms_per_request"),
        }

    ratios, ranges = ratios_of("triage")
    headline = headline_of("triage", "triage-2-workers")
    fast: dict[str, Any] = {}
    if "triage-fast-probe" in systems:
        f_ratios, f_ranges = ratios_of("triage-fast-probe")
        fast = {"triage_fast_probe": {**headline_of("triage-fast-probe", None), "ratios": f_ratios,
                                      "ratios_range": f_ranges}}
    ceiling = med("direct", "32_saturated", "rps")
    bound = [n for n in systems if n != "direct" and ceiling and (med(n, "32_saturated", "rps") or 0) > 0.5 * ceiling]
    return {"systems": systems, "ratios": ratios, "ratios_range": ranges, "triage": headline, **fast,
            "load_generator": {
                "tool": "aiohttp on uvloop, keep-alive, its own process per measurement (eval/bench/loadgen.py)",
                "ceiling_rps_32_clients": ceiling,
                "note": "ceiling = 32 closed-loop clients straight to the stub: bounds the load generator and the "
                        "stub together; a system above half of it may be measured short of its own limit",
                "systems_near_ceiling": bound}}


def environment() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
