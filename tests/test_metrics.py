"""Metric implementations against small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from triage.eval.evaluation import apply_budgets, parse_budget
from triage.eval.metrics import (
    Bootstrap,
    aiq,
    apgr,
    cost_axis,
    cost_of_pass,
    cost_ratio_at_accuracy,
    cpt,
    nondecreasing_hull,
    percentile_interval,
    pgr,
    summarize_outcomes,
    tep,
    tep_array,
)
from triage.replay.matrix import ReplayData


def _data(score, cost=None, prompt=None, completion=None, reasoning=None) -> ReplayData:
    score = np.asarray(score, dtype=float)
    n, m = score.shape
    full = lambda x: np.full((n, m), np.nan) if x is None else np.asarray(x, dtype=float)  # noqa: E731
    return ReplayData(
        ids=[f"q{i}" for i in range(n)], candidates=[f"c{j}" for j in range(m)], score=score,
        cost=full(cost), prompt_tokens=full(prompt), completion_tokens=full(completion),
        reasoning_tokens=full(reasoning), latency_s=full(None), truncated=np.zeros((n, m), bool),
        splits=[None] * n, tasks=[None] * n, texts=[""] * n,
    )


# --- summarize_outcomes (shared with the ledger report) ---------------------------------------

def test_summarize_outcomes_by_hand() -> None:
    s = summarize_outcomes(
        score=[1.0, 0.0, np.nan, 1.0],
        cost=[0.1, 0.2, 0.3, np.nan],
        prompt_tokens=[10, 10, 10, 10],
        completion_tokens=[5, 5, 5, np.nan],
        reasoning_tokens=[0, 1, 2, np.nan],
        truncated=[False, True, False, False],
        escalated=[0, 1, 0, 0],
    )
    assert (s["n"], s["n_scored"], s["n_unscored"], s["n_costed"]) == (4, 3, 1, 3)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["total_cost"] == pytest.approx(0.6)
    assert s["mean_cost"] == pytest.approx(0.2)
    # cost-of-pass over calls with both outcome and price known: (0.1 + 0.2) / 1 correct
    assert s["cost_of_pass"] == pytest.approx(0.3)
    assert s["tokens"] == {"prompt": 40.0, "completion": 15.0, "reasoning": 3.0, "total": 55.0,
                           "mean_total": 13.75}
    # accuracy / (mean total tokens of scored calls / 1000): rows 0, 1, 3 -> (15 + 15 + 10) / 3
    assert s["accuracy_per_1k_tokens"] == pytest.approx((2 / 3) / (40 / 3 / 1000))
    assert s["truncation_rate"] == 0.25
    assert s["escalation_rate"] == 0.25


def test_summarize_outcomes_unknowns() -> None:
    s = summarize_outcomes([np.nan, np.nan], [np.nan, np.nan], [0, 0], [0, 0], [0, 0], [False, False])
    assert s["accuracy"] is None and s["total_cost"] is None and s["cost_of_pass"] is None
    assert s["accuracy_per_1k_tokens"] is None and s["escalation_rate"] is None
    with pytest.raises(ValueError, match="rows were expected"):
        summarize_outcomes([1.0], [0.1, 0.2], [1], [1], [0], [False])


def test_cost_of_pass() -> None:
    assert cost_of_pass(3.0, 1.5) == 2.0
    assert cost_of_pass(3.0, 0.0) == math.inf
    assert cost_of_pass(None, 2.0) is None
    s = summarize_outcomes([0.0, 0.0], [1.0, 1.0], [1, 1], [1, 1], [0, 0], [False, False])
    assert s["cost_of_pass"] == math.inf


def test_tep_by_hand() -> None:
    # +10% relative accuracy... (0.8 - 0.7) / 0.7 = 0.142857 over +20% tokens -> 0.714286
    assert tep(0.8, 1200, 0.7, 1000) == pytest.approx((0.1 / 0.7) / 0.2)
    assert tep(0.6, 500, 0.8, 1000) == pytest.approx((-0.25) / (-0.5))
    assert tep(0.8, 1000, 0.7, 1000) is None  # no token change
    assert tep(0.8, 1000, 0.0, 1000) is None
    assert tep(None, 1000, 0.7, 900) is None
    arr = tep_array([0.8, 0.8, 0.6], [1200, 1000, 500], [0.7, 0.7, 0.8], [1000, 1000, 1000])
    assert arr[0] == pytest.approx(tep(0.8, 1200, 0.7, 1000))
    assert np.isnan(arr[1]) and arr[2] == pytest.approx(0.5)


# --- RouteLLM metrics ---------------------------------------------------------------------------

def test_pgr() -> None:
    np.testing.assert_allclose(pgr([0.6, 0.7, 0.8], 0.6, 0.8), [0.0, 0.5, 1.0])
    assert np.isnan(pgr(0.7, 0.7, 0.7))


def test_apgr_by_hand() -> None:
    # endpoints (0,0) and (1,1) are added: area of (0,0)-(0.5,0.75)-(1,1) = 0.1875 + 0.4375
    assert apgr([0.5], [0.75]) == pytest.approx(0.625)
    # random mixing is the diagonal
    share = np.linspace(0, 1, 11)
    assert apgr(share, share) == pytest.approx(0.5)
    # unsorted input is sorted by share first
    assert apgr([0.8, 0.2], [0.9, 0.4]) == pytest.approx(
        0.2 * 0.4 / 2 + 0.6 * (0.4 + 0.9) / 2 + 0.2 * (0.9 + 1.0) / 2)
    # batch axis: one APGR per bootstrap replicate
    batch = apgr(np.array([[0.5], [0.5]]), np.array([[0.75], [0.5]]))
    np.testing.assert_allclose(batch, [0.625, 0.5])


def test_cpt_by_hand() -> None:
    # (0,0) -> (0.5,0.75) -> (1,1): PGR 50% at share 1/3, PGR 80% at 0.5 + 0.05/0.25 * 0.5 = 0.6
    assert cpt([0.5], [0.75], 0.5) == pytest.approx(1 / 3)
    assert cpt([0.5], [0.75], 0.8) == pytest.approx(0.6)
    # a point that reaches the target exactly is the answer
    assert cpt([0.2, 0.4], [0.5, 0.9], 0.5) == pytest.approx(0.2)
    assert cpt([0.5], [np.nan], 0.5) is None


# --- RouterBench metrics ------------------------------------------------------------------------

def test_nondecreasing_hull() -> None:
    hx, hy = nondecreasing_hull([0, 0.2, 0.5, 0.6, 1.0], [0.5, 0.55, 0.8, 0.7, 0.9])
    np.testing.assert_allclose(hx, [0, 0.5, 1.0])
    np.testing.assert_allclose(hy, [0.5, 0.8, 0.9])
    hx, hy = nondecreasing_hull([0, 0.5, 1.0], [0.5, 0.9, 0.7])  # cut after the peak
    np.testing.assert_allclose(hx, [0, 0.5])
    np.testing.assert_allclose(hy, [0.5, 0.9])


def test_aiq_by_hand() -> None:
    assert aiq([0, 0.2, 0.5, 0.6, 1.0], [0.5, 0.55, 0.8, 0.7, 0.9], 0.0, 1.0) == pytest.approx(0.75)
    # flat after the peak: 0.5 * (0.5 + 0.9) / 2 + 0.5 * 0.9
    assert aiq([0, 0.5, 1.0], [0.5, 0.9, 0.7], 0.0, 1.0) == pytest.approx(0.8)
    # nothing below the cheapest point: 0.6 * (0.6 + 0.9) / 2
    assert aiq([0.4, 1.0], [0.6, 0.9], 0.0, 1.0) == pytest.approx(0.45)
    # a single model: quality * (1 - normalised cost); dollars normalised over [1e-3, 5e-3]
    assert aiq([2e-3], [0.8], 1e-3, 5e-3) == pytest.approx(0.8 * 0.75)
    assert aiq([1.0], [0.8], 1.0, 1.0) is None  # all candidates cost the same


def test_cost_ratio_at_accuracy() -> None:
    assert cost_ratio_at_accuracy([1, 2, 3], [0.5, 0.8, 0.9], 0.8, 4.0) == pytest.approx(0.5)
    assert cost_ratio_at_accuracy([3, 1, 2], [0.9, 0.5, 0.85], 0.8, 4.0) == pytest.approx(0.5)
    assert cost_ratio_at_accuracy([1, 2], [0.5, 0.8], 0.95, 4.0) is None


# --- bootstrap ----------------------------------------------------------------------------------

def test_bootstrap_interval_contains_point_and_has_binomial_width() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random(2000) < 0.7).astype(float)
    boot = Bootstrap(len(x), n_boot=1000, seed=0)
    assert np.all(boot.replicate_n == len(x))
    reps = boot.replicate_means(x[None])[:, 0]
    lo, hi = percentile_interval(reps)
    assert lo <= x.mean() <= hi
    se = math.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_block_bootstrap_matches_row_bootstrap_even_on_sorted_data() -> None:
    # Sorted outcomes (like a file ordered by subject): blocks must be dealt at random, or the
    # interval would collapse.
    x = np.sort((np.random.default_rng(2).random(20_000) < 0.3).astype(float))
    rows = Bootstrap(len(x), n_boot=800, seed=0, max_units=10**9).replicate_means(x[None])[:, 0]
    blocks = Bootstrap(len(x), n_boot=800, seed=0, max_units=500)
    assert blocks.n_units == 500 and blocks.replicate_n.mean() == pytest.approx(len(x), rel=0.01)
    reps = blocks.replicate_means(x[None])[:, 0]
    assert reps.std() == pytest.approx(rows.std(), rel=0.15)
    lo, hi = percentile_interval(reps)
    assert lo <= x.mean() <= hi


def test_percentile_interval_keeps_infinite_replicates() -> None:
    assert percentile_interval([1.0, 2.0, math.inf, math.inf] * 10)[1] == math.inf
    assert percentile_interval([np.nan, np.nan]) is None


# --- cost axis and budgets ----------------------------------------------------------------------

def test_cost_axis_units() -> None:
    d = _data([[1, 0]], cost=[[0.1, 0.2]], prompt=[[10, 10]], completion=[[5, 50]])
    assert cost_axis(d).unit == "usd"
    d = _data([[1, 0]], cost=[[0.1, np.nan]], prompt=[[10, 10]], completion=[[5, 50]])
    ax = cost_axis(d)
    assert ax.unit == "tokens" and ax.values.tolist() == [[15.0, 60.0]]
    assert cost_axis(_data([[1, 0]])).unit == "calls"


def test_budget_truncates_scores_and_bills_capped_tokens() -> None:
    d = _data([[1.0, 1.0], [1.0, 1.0]], cost=[[0.01, 0.21], [0.01, 0.21]],
              prompt=[[100, 100], [100, 100]], completion=[[100, 100], [500, 500]],
              reasoning=[[0, 50], [0, 450]])
    out = apply_budgets(d, [parse_budget("c1=200")])
    # Row 0 fits the cap: untouched. Row 1 (500 > 200): truncated, scores 0, billed for 200 tokens.
    assert out.score.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert out.truncated.tolist() == [[False, False], [False, True]]
    assert out.completion_tokens[1, 1] == 200 and out.reasoning_tokens[1, 1] == 200
    # cost = prompt share + completion share * 200/500, completion priced 3x prompt per token
    # (ReplayData.apply_budget's default): 0.21 * (100 + 3 * 500 * 0.4) / (100 + 3 * 500)
    assert out.cost[1, 1] == pytest.approx(0.21 * 700 / 1600)
    assert out.cost[0, 1] == 0.21 and out.cost[1, 0] == 0.01
    assert d.score[1, 1] == 1.0  # the input is not modified


def test_parse_budget_errors() -> None:
    assert parse_budget("org/model=v2=4000") == ("org/model=v2", 4000)
    for bad in ("gpt-5-mini", "gpt-5-mini=lots", "=100", "m=0"):
        with pytest.raises(ValueError):
            parse_budget(bad)
    d = _data([[1.0, 0.0]], cost=[[0.1, 0.2]])
    with pytest.raises(KeyError, match="unknown candidate"):
        apply_budgets(d, [("nope", 10)])
    with pytest.raises(ValueError, match="no completion token counts"):
        apply_budgets(d, [("c0", 10)])
