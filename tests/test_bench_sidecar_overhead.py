"""The side-by-side sidecar benchmark runs end to end and writes the JSON issue #16 asks for.

`eval/bench/sidecar_overhead.py --quick --systems triage,direct`: the real stub upstream, two real
`triage serve` processes (one worker, and two workers for the saturated case) with their production
settings, the load generator in its own processes. Without the LiteLLM proxy, so no virtualenv or
network is needed; the proxy's side is the same code path with one more target (run by hand).
The figures themselves are not asserted (a shared 2-core machine); their shape and sanity are.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = {"1_client", "32_paced", "32_saturated"}
HEADLINE = {"added_p50_ms_1_client", "added_p99_ms_1_client", "rps_32_saturated", "rps_32_saturated_2_workers",
            "cpu_ms_per_request"}

pytestmark = pytest.mark.minutes


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval/bench/sidecar_overhead.py"), "--quick", "--systems", "triage,direct",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout)
    written = json.loads(out.read_text())
    assert printed == written
    return written


def test_shape_is_the_issues(doc: dict) -> None:
    assert doc["rounds"] == 1
    assert set(doc["systems"]) == {"triage", "triage-2-workers"}  # no proxy asked for, none started
    assert set(doc["ratios"]) == {"added_p50_1_client", "added_p99_1_client", "rps_32_saturated"}
    assert all(v is None for v in doc["ratios"].values())  # nothing to divide by without the proxy
    assert set(doc["triage"]) == HEADLINE
    assert set(doc["systems"]["triage"]["scenarios"]) == SCENARIOS
    assert set(doc["systems"]["triage-2-workers"]["scenarios"]) == {"32_saturated"}
    assert set(doc["direct"]["scenarios"]) == SCENARIOS
    assert len(doc["raw"]) == 1


def test_headline_numbers_are_positive_and_finite(doc: dict) -> None:
    bad = {k: v for k, v in doc["triage"].items() if not _positive(v)}
    assert not bad, bad
    assert _positive(doc["load_generator"]["ceiling_rps_32_clients"])


def test_every_measurement_is_sane(doc: dict) -> None:
    for name in ("triage", "triage-2-workers"):
        for scenario, e in doc["systems"][name]["scenarios"].items():
            where = f"{name}/{scenario}"
            assert e["requests"] > 0 and e["non_200"] == 0 and e["client_errors"] == 0, where
            for field in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_request", "added_p50_ms"):
                spread = e[field]
                assert spread["min"] <= spread["median"] <= spread["max"], where
                assert _positive(spread["median"]), (where, field, spread)
            assert e["p50_ms"]["median"] <= e["p99_ms"]["median"], where
    for scenario, e in doc["direct"]["scenarios"].items():
        assert e["non_200"] == 0 and _positive(e["p50_ms"]["median"]) and _positive(e["rps"]["median"]), scenario


def test_triage_ran_with_production_settings(doc: dict) -> None:
    settings = doc["systems"]["triage"]["settings"]
    assert settings["production_settings"] is True and settings["workers"] == 1
    assert doc["systems"]["triage-2-workers"]["settings"]["workers"] == 2
    config = settings["config"]
    # Nothing that would turn off the probe, the durable ledger or the access log.
    assert set(config) == {"policies", "ledger_url", "workers"}, config
    assert config["ledger_url"].endswith(".sqlite")
