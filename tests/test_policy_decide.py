"""decide(): the one decision function shared by SDK, sidecar and replay.

ProbeOutput values are built directly here: they are the real input type of decide(), not a mock.
"""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.policies.decide import (
    CascadePlan,
    Decision,
    DecisionError,
    Uncertainty,
    decide,
    should_escalate,
    token_uncertainty,
    truncation_action,
)
from triage.policies.loader import EXAMPLES_DIR, load_policy, policy_from_dict
from triage.probes.types import ProbeOutput


def out(easy: float, normal: float, hard: float, **success: float) -> ProbeOutput:
    return ProbeOutput(tier_probs={"easy": easy, "normal": normal, "hard": hard}, success=success, probe_version="t1")


BASE = {
    "name": "p",
    "version": 3,
    "strategies": {
        "cheap": {"model": "local/smollm2-135m", "max_tokens": 64, "temperature": 0.0, "replay_candidate": "small",
                  "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}},
        "mid": {"model": "openai/gpt-4o-mini", "max_tokens": 256, "replay_candidate": "medium",
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, "on_truncation": "escalate"},
        "big": {"model": "openai/gpt-4o", "max_tokens": 1024, "replay_candidate": "large",
                "price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
    },
    "tiers": {"easy": "cheap", "normal": "mid", "hard": "big"},
    "rule": {"type": "thresholds", "thresholds": {"normal": 0.4, "hard": 0.6}},
    "expected_cost": {"cheap": {"prompt_tokens": 100, "completion_tokens": 100},
                      "mid": {"prompt_tokens": 100, "completion_tokens": 200},
                      "big": {"usd": 0.01}},
}


def policy(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return policy_from_dict(raw, "test.yaml")


# -- thresholds --------------------------------------------------------------------------------


def test_thresholds_pick_tiers_on_cumulative_probabilities():
    p = policy()
    assert decide(p, out(0.7, 0.2, 0.1)).strategy == "cheap"  # P(normal)+P(hard) = 0.3 < 0.4
    assert decide(p, out(0.5, 0.3, 0.2)).strategy == "mid"  # 0.5 >= 0.4, P(hard) 0.2 < 0.6
    assert decide(p, out(0.1, 0.2, 0.7)).strategy == "big"
    # at the threshold exactly: >= goes up
    d = decide(p, out(0.4, 0.0, 0.6))
    assert (d.tier, d.strategy) == ("hard", "big")


def test_decision_carries_what_callers_need():
    p = policy()
    d = decide(p, out(0.1, 0.8, 0.1))
    assert isinstance(d, Decision)
    assert (d.policy, d.policy_version, d.probe_version, d.rule) == ("p", "3", "t1", "thresholds")
    assert d.model == "openai/gpt-4o-mini" and d.max_tokens == 256
    # expected cost = tokens x the strategy's price override
    assert d.expected_cost_usd == pytest.approx((100 * 1.0 + 200 * 2.0) / 1e6)
    # serialisable for the sidecar's /v1/route and round-trips
    assert Decision.model_validate_json(d.model_dump_json()) == d


def test_tier_budget_tightens_strategy_budget_and_expected_cost():
    p = policy(budgets={"normal": {"max_tokens": 50, "reasoning_effort": "low"}})
    d = decide(p, out(0.1, 0.8, 0.1))
    assert d.max_tokens == 50 and d.reasoning_effort == "low"
    assert d.expected_cost_usd == pytest.approx((100 * 1.0 + 50 * 2.0) / 1e6)  # completion capped at 50
    # a looser tier budget does not raise the strategy's own cap
    p2 = policy(budgets={"easy": {"max_tokens": 4096}})
    assert decide(p2, out(0.9, 0.05, 0.05)).max_tokens == 64


def test_invalid_probe_output_is_refused_clearly():
    p = policy()
    with pytest.raises(DecisionError, match="invalid probability"):
        decide(p, out(math.nan, 0.5, 0.5))
    with pytest.raises(DecisionError, match="no tier probabilities"):
        decide(p, ProbeOutput(tier_probs={}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda v: sum(v) > 0),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_thresholds_rule_semantics_and_determinism(v, tn, th):
    e, n, h = v
    p = policy(rule={"type": "thresholds", "thresholds": {"normal": tn, "hard": th}})
    o = out(e, n, h)
    d1, d2 = decide(p, o), decide(p, out(e, n, h))
    assert d1 == d2  # same input, same output
    expected = "hard" if h >= th else ("normal" if n + h >= tn else "easy")
    assert d1.tier == expected
    assert d1.strategy == p.tiers.get(expected)


# -- expected utility --------------------------------------------------------------------------


def eu_policy(lam: float, **extra):
    return policy(rule={"type": "expected_utility", "lambda": lam, **extra})


def test_expected_utility_trades_success_against_cost():
    o = out(0.3, 0.4, 0.3, small=0.55, medium=0.80, large=0.90)
    # lambda 0: the most likely to succeed
    assert decide(eu_policy(0.0), o).strategy == "big"
    # costs: cheap 2.28e-5 (its 100 expected completion tokens capped at its max_tokens 64),
    # mid 5e-4, big 1e-2 USD. lambda 20/USD: big gives up 0.2, mid 0.01
    d = decide(eu_policy(20.0), o)
    assert d.strategy == "mid"
    assert d.utilities == pytest.approx({"cheap": 0.55 - 20 * 2.28e-5, "mid": 0.80 - 20 * 5e-4, "big": 0.90 - 20 * 0.01})
    # very expensive tokens: the cheap one
    assert decide(eu_policy(2000.0), o).strategy == "cheap"


def test_expected_utility_ties_break_by_candidate_order():
    o = out(0.3, 0.4, 0.3, small=0.7, medium=0.7, large=0.7)
    assert decide(eu_policy(0.0), o).strategy == "cheap"
    assert decide(eu_policy(0.0, candidates=["big", "mid", "cheap"]), o).strategy == "big"


def test_expected_utility_needs_the_probe_label():
    with pytest.raises(DecisionError, match="success label 'large'"):
        decide(eu_policy(1.0), out(0.3, 0.4, 0.3, small=0.5, medium=0.6))


# -- cascade -----------------------------------------------------------------------------------


def cascade_policy(**rule):
    return policy(rule={"type": "cascade", "start": "cheap", "escalate_to": "big", "max_mean_entropy": 1.0, **rule})


def test_cascade_plans_cheap_first_and_skips_when_probe_finds_it_hard():
    p = cascade_policy(skip_threshold=0.7, min_token_logprob=-5.0, first_k_tokens=8)
    d = decide(p, out(0.6, 0.3, 0.1))
    assert d.strategy == "cheap"
    assert d.cascade == CascadePlan(escalate_to="big", max_mean_entropy=1.0, min_token_logprob=-5.0,
                                    first_k_tokens=8, top_logprobs=5, escalate_on_truncation=True)
    skipped = decide(p, out(0.1, 0.1, 0.8))
    assert skipped.strategy == "big" and skipped.cascade is None


def test_token_uncertainty_entropy_is_exact_when_alternatives_cover_the_mass():
    half = math.log(0.5)
    u = token_uncertainty([(half, [half, half]), (0.0, [0.0])])
    assert u.tokens == 2
    assert u.mean_entropy == pytest.approx((math.log(2) + 0.0) / 2)
    assert u.min_logprob == pytest.approx(half)
    # the mass the alternatives leave out counts as one more outcome (a lower bound)
    lp = math.log(0.6)
    u2 = token_uncertainty([(lp, [lp])])
    assert u2.mean_entropy == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)))
    assert token_uncertainty([(0.0, [0.0])] * 3 + [(-9.0, [-0.1])] * 3, first_k=3).min_logprob == 0.0


def test_should_escalate_on_each_signal():
    plan = CascadePlan(escalate_to="big", max_mean_entropy=1.0, min_token_logprob=-5.0)
    calm = Uncertainty(tokens=4, mean_entropy=0.2, min_logprob=-1.0)
    assert should_escalate(plan, calm, truncated=False) is None
    assert should_escalate(plan, calm, truncated=True) == "truncated"
    assert should_escalate(plan, Uncertainty(tokens=4, mean_entropy=1.5, min_logprob=-1.0), False) == "entropy"
    assert should_escalate(plan, Uncertainty(tokens=4, mean_entropy=0.1, min_logprob=-7.0), False) == "logprob"
    assert should_escalate(plan, Uncertainty(tokens=0), False) == "empty"
    no_trunc = plan.model_copy(update={"escalate_on_truncation": False})
    assert should_escalate(no_trunc, calm, truncated=True) is None


# -- truncation ----------------------------------------------------------------------------------


def test_truncation_actions():
    p = policy(strategies={
        **BASE["strategies"],
        "cheap": {**BASE["strategies"]["cheap"], "on_truncation": "retry", "retry_max_tokens": 256},
    })
    assert truncation_action(p, "cheap") == ("retry", "cheap", 256)
    assert truncation_action(p, "mid") == ("escalate", "big", 1024)  # next harder tier's strategy
    assert truncation_action(p, "big") == ("accept", None, None)
    # escalate with nowhere harder to go degrades to accept
    top = policy(strategies={**BASE["strategies"], "big": {**BASE["strategies"]["big"], "on_truncation": "escalate"}})
    assert truncation_action(top, "big") == ("accept", None, None)


# -- the shipped examples ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_policies_decide_for_every_tier(path):
    p = load_policy(path)
    labels = {p.strategies[n].candidate: 0.5 for n in p.strategies}
    for probs in ((0.8, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.1, 0.8)):
        d = decide(p, out(*probs, **labels))
        assert d.strategy in p.strategies
        assert d.model == p.strategies[d.strategy].model


def test_local_example_is_offline_and_diffadapt_shaped():
    p = load_policy(EXAMPLES_DIR / "local.yaml")
    assert p.probe == "default"
    assert all(s.is_local for s in p.strategies.values()), "the default policy must need no API key"
    easy, hard = p.strategies[p.tiers.easy], p.strategies[p.tiers.hard]
    assert easy.max_tokens < p.strategies[p.tiers.normal].max_tokens < hard.max_tokens
    assert easy.temperature == 0.0 and "step by step" in (hard.template or "") + (hard.system_prompt or "")


def test_pricing_reversal_example_covers_the_eight_models():
    raw = yaml.safe_load((EXAMPLES_DIR / "pricing_reversal.yaml").read_text())
    p = load_policy(EXAMPLES_DIR / "pricing_reversal.yaml")
    assert p.rule.type == "expected_utility" and len(p.candidates()) == 8
    assert {p.strategies[n].candidate for n in p.candidates()} == {
        "gpt-5.2-high", "gpt-5-mini", "gemini-3.1-pro-preview", "gemini-3-flash-preview",
        "claude-opus-4.6-thinking", "claude-haiku-4.5", "kimi-k2.5", "MiniMax-M2.5"}
    assert set(raw["expected_cost"]) == set(p.candidates())


def test_token_uncertainty_prefers_exact_entropy_when_reported():
    u = token_uncertainty([(-0.1, [-0.1], 2.5), (-0.2, [-0.2], None)])
    lp = -0.2
    p = math.exp(lp)
    approx = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert u.mean_entropy == pytest.approx((2.5 + approx) / 2)
