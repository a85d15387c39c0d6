"""Hostile input and faults, as one report: runs the hostile test modules against the real sidecar.

    python eval/bench/hostile.py --json            # every tests/test_hostile_*.py module
    python eval/bench/hostile.py --area ledger     # one area (credentials, input, ledger, regex, tenancy)

The cases live in ``tests/test_hostile_<area>.py`` (each starts the real ``triage serve`` on loopback,
with fault-injecting upstreams, real SQLite and PostgreSQL ledgers); each case records what it saw
(statuses, hangs, records lost, secrets leaked) through ``tests/support/hostile.py``, and this
script sums them::

    {"cases": N, "5xx": 0, "hangs": 0, "records_lost": 0, "secrets_leaked": 0,
     "tests": {"passed": ..., "failed": ...}, "by_area": {...}, "failures": [...]}

"5xx" counts 500 (a Triage bug) and anything above 504; 502/503/504 are the documented answers to
upstream and ledger faults and are counted per case in ``statuses``. Exit code 0 only when every
test passed and the four counters are zero.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run(areas: list[str] | None, timeout_s: float) -> dict[str, Any]:
    modules = sorted((REPO / "tests").glob("test_hostile_*.py"))
    if areas:
        modules = [m for m in modules if m.stem.removeprefix("test_hostile_") in areas]
    if not modules:
        raise SystemExit(f"no hostile test module matches {areas}")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "cases.jsonl"
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "TRIAGE_HOSTILE_REPORT": str(report)}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
             *[str(m.relative_to(REPO)) for m in modules]],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - t0
        cases = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        tests = _junit_counts(junit)
    by_area: dict[str, dict[str, int]] = defaultdict(lambda: {"cases": 0, "5xx": 0, "hangs": 0,
                                                              "records_lost": 0, "secrets_leaked": 0})
    for c in cases:
        a = by_area[c["area"]]
        a["cases"] += 1
        a["5xx"] += c["count_5xx"]
        a["hangs"] += c["hangs"]
        a["records_lost"] += c["records_lost"]
        a["secrets_leaked"] += c["secrets_leaked"]
    totals = {k: sum(a[k] for a in by_area.values()) for k in ("cases", "5xx", "hangs", "records_lost",
                                                                 "secrets_leaked")}
    failures = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {**totals, "tests": tests, "pytest_exit_code": proc.returncode, "wall_s": round(wall, 1),
            "by_area": dict(by_area), "failures": failures,
            "statuses": sorted({s for c in cases for s in c["statuses"]}),
            "modules": [m.name for m in modules]}


def _junit_counts(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--area", action="append", help="only tests/test_hostile_<AREA>.py (repeatable)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    result = run(args.area, args.timeout)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in ("cases", "5xx", "hangs", "records_lost", "secrets_leaked"):
            print(f"{key:>15}: {result[key]}")
        print(f"{'tests':>15}: {result['tests']}")
        for line in result["failures"]:
            print(line)
    ok = (result["pytest_exit_code"] == 0 and not any(result[k] for k in ("5xx", "hangs", "records_lost",
                                                                              "secrets_leaked")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
