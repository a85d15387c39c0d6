"""`sidecar_compare.summarize`: the headline, ratios and the fast-probe block from per-round results.

Synthetic rounds with known values (no servers): the arithmetic the side-by-side benchmark reports.
"""

from __future__ import annotations

from triage.eval.bench.sidecar_compare import summarize


def _m(p50: float, p99: float, rps: float, cpu: float) -> dict:
    return {"p50_ms": p50, "p99_ms": p99, "rps": rps, "cpu_ms_per_request": cpu, "stub_cpu_ms_per_request": 0.1,
            "requests": 100, "ok": 100, "client_errors": 0}


def _round(k: float) -> dict:
    direct = {"1_client": _m(0.2, 0.3, 4000, 0.07), "32_saturated": _m(2.0, 3.0, 13000, 0.05)}
    return {
        "direct": direct,
        "triage": {"1_client": _m(5.2, 10.3, 190, 4.6), "32_saturated": _m(90, 300, 300 * k, 4.5)},
        "triage-fast-probe": {"1_client": _m(2.7, 4.3, 370, 2.3), "32_saturated": _m(60, 280, 450 * k, 2.5)},
        "litellm-proxy": {"1_client": _m(10.2, 14.3, 100, 9.0), "32_saturated": _m(250, 400, 100 * k, 8.5)},
    }


def test_ratios_and_fast_probe_block() -> None:
    out = summarize([_round(1.0), _round(1.1), _round(0.9)])
    assert abs(out["ratios"]["added_p50_1_client"] - 5.0 / 10.0) < 1e-9
    assert abs(out["ratios"]["rps_32_saturated"] - 3.0) < 1e-9
    fast = out["triage_fast_probe"]
    assert abs(fast["ratios"]["added_p50_1_client"] - 2.5 / 10.0) < 1e-9
    assert abs(fast["ratios"]["rps_32_saturated"] - 4.5) < 1e-9
    assert fast["rps_32_saturated"] == 450.0 and fast["cpu_ms_per_request"] == 2.5
    assert fast["rps_32_saturated_2_workers"] is None  # measured for the default probe only
    assert out["triage"]["added_p50_ms_1_client"] == 5.0


def test_no_fast_probe_block_without_that_system() -> None:
    rounds = [{k: v for k, v in _round(1.0).items() if k != "triage-fast-probe"}]
    assert "triage_fast_probe" not in summarize(rounds)


def test_goals_are_checked_alike_for_both_rows() -> None:
    from triage.eval.bench.sidecar_overhead import goals_met

    out = summarize([_round(1.0), _round(1.1), _round(0.9)])
    default = goals_met(out["triage"], out["ratios"])
    # 5.0 ms added p50 (<= 5), 0.5x (> 0.35), 3.0x throughput (>= 3), no 2-worker run: not measured
    assert default == {"added_p50_ms_1_client_max": True, "added_p50_ratio_max": False,
                       "added_p99_ms_1_client_max": True, "rps_ratio_min": True, "cpu_ms_per_request_max": True,
                       "rps_32_saturated_2_workers_min": None}
    fast = out["triage_fast_probe"]
    assert goals_met(fast, fast["ratios"], two_workers=False) == {
        "added_p50_ms_1_client_max": True, "added_p50_ratio_max": True, "added_p99_ms_1_client_max": True,
        "rps_ratio_min": True, "cpu_ms_per_request_max": True}
