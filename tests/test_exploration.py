"""Exploration in a policy: the first-call distribution, its seeded draw and its validation.

ProbeOutput values are built directly: they are the real input type of decide(), not a mock.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import pytest

from triage.errors import ConfigError
from triage.policies.decide import action_distribution, decide
from triage.policies.exploration import uniform_draw
from triage.policies.loader import policy_from_dict
from triage.probes.types import ProbeOutput

N_DRAWS = 4000


def out(easy: float, normal: float, hard: float, **success: float) -> ProbeOutput:
    return ProbeOutput(tier_probs={"easy": easy, "normal": normal, "hard": hard}, success=success, probe_version="t1")


BASE = {
    "name": "p",
    "version": 3,
    "strategies": {
        "cheap": {"model": "local/smollm2-135m", "max_tokens": 64, "replay_candidate": "small",
                  "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}},
        "mid": {"model": "openai/gpt-4o-mini", "max_tokens": 256, "replay_candidate": "medium",
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "big": {"model": "openai/gpt-4o", "max_tokens": 1024, "replay_candidate": "large",
                "price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
    },
    "tiers": {"easy": "cheap", "normal": "mid", "hard": "big"},
    "rule": {"type": "thresholds", "thresholds": {"normal": 0.4, "hard": 0.6}},
    "expected_cost": {"cheap": {"usd": 0.0001}, "mid": {"usd": 0.001}, "big": {"usd": 0.01}},
}
EU_RULE = {"type": "expected_utility", "lambda": 10.0}
CASCADE_RULE = {"type": "cascade", "max_mean_entropy": 1.0, "skip_threshold": 0.8}
OUTPUTS = [out(0.7, 0.2, 0.1, small=0.5, medium=0.7, large=0.9), out(0.2, 0.5, 0.3, small=0.2, medium=0.6, large=0.62),
           out(0.05, 0.05, 0.9, small=0.1, medium=0.3, large=0.8)]
EXPLORATIONS = [{"type": "epsilon", "epsilon": 0.3}, {"type": "epsilon", "epsilon": 1.0},
                {"type": "softmax", "temperature": 0.05}, {"type": "softmax", "temperature": 0.7}]


def policy(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return policy_from_dict(raw, "test.yaml")


def binomial_ok(count: int, n: int, p: float) -> bool:
    """Within 4.5 standard deviations (a false alarm about once in 300,000 checks)."""
    return abs(count / n - p) <= 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


ALL_POLICIES = [
    *[dict(exploration=e) for e in EXPLORATIONS],
    *[dict(rule=EU_RULE, exploration=e) for e in EXPLORATIONS],
    dict(rule=CASCADE_RULE, exploration={"type": "epsilon", "epsilon": 0.4}),
    dict(exploration={"type": "epsilon", "epsilon": 0.5, "max_cost_per_query": 0.002}),
    dict(rule=EU_RULE, exploration={"type": "softmax", "temperature": 0.1, "strategies": ["cheap", "mid"]}),
]


@pytest.mark.parametrize("changes", ALL_POLICIES, ids=lambda c: f"{c.get('rule', {}).get('type', 'thresholds')}-"
                         f"{c['exploration']['type']}-{c['exploration'].get('epsilon', c['exploration'].get('temperature'))}")
def test_propensities_sum_to_one_and_match_the_draws(changes):
    p = policy(**changes)
    for o in OUTPUTS:
        dist = action_distribution(p, o)
        assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-9) and all(v > 0 for v in dist.values())
        picks = Counter()
        for i in range(N_DRAWS):
            d = decide(p, o, request_id=f"req-{i}")
            picks[d.strategy] += 1
            assert d.propensity == dist[d.strategy] and d.candidates == list(dist)
            assert d.explored == (d.strategy != d.greedy_strategy)
        assert set(picks) <= set(dist)
        for name, prob in dist.items():
            assert binomial_ok(picks[name], N_DRAWS, prob), (name, picks[name], prob, dist)


def test_same_request_id_same_choice_and_the_version_reseeds():
    p = policy(exploration={"type": "epsilon", "epsilon": 1.0})
    o = OUTPUTS[0]
    first = [decide(p, o, request_id=f"r{i}").strategy for i in range(200)]
    assert first == [decide(p, o, request_id=f"r{i}").strategy for i in range(200)]
    assert len(set(first)) == 3  # epsilon 1: all three strategies come up in 200 draws
    p4 = policy(version=4, exploration={"type": "epsilon", "epsilon": 1.0})
    assert first != [decide(p4, o, request_id=f"r{i}").strategy for i in range(200)]
    u = uniform_draw("r1", "p", "3")
    assert 0.0 <= u < 1.0 and u == uniform_draw("r1", "p", "3") != uniform_draw("r1", "p", "4")


def test_without_request_id_the_greedy_choice():
    p = policy(exploration={"type": "epsilon", "epsilon": 0.9})
    for o in OUTPUTS:
        d = decide(p, o)
        assert d.strategy == d.greedy_strategy == decide(policy(), o).strategy and not d.explored
        assert d.propensity == pytest.approx(0.1 + 0.9 / 3)


@pytest.mark.parametrize("rule", [None, EU_RULE, CASCADE_RULE])
def test_exploration_off_changes_nothing(rule):
    p = policy(**({"rule": rule} if rule else {}))
    for o in OUTPUTS:
        plain = decide(p, o)
        for rid in ("a", "b", "c"):
            d = decide(p, o, request_id=rid)
            assert d == plain
            assert (d.propensity, d.explored, d.candidates, d.greedy_strategy) == (1.0, False, [d.strategy], d.strategy)
        assert action_distribution(p, o) == {plain.strategy: 1.0}


def test_cost_cap_is_never_explored_but_keeps_its_greedy_mass():
    p = policy(exploration={"type": "epsilon", "epsilon": 0.5, "max_cost_per_query": 0.002})
    cheap_query, hard_query = OUTPUTS[0], OUTPUTS[2]
    assert action_distribution(p, cheap_query) == pytest.approx({"cheap": 0.75, "mid": 0.25})  # big: over the cap
    assert all(decide(p, cheap_query, request_id=str(i)).strategy != "big" for i in range(2000))
    # big is the greedy choice for a hard query: the cap limits exploration, not the policy's own pick
    assert action_distribution(p, hard_query) == pytest.approx({"cheap": 0.25, "mid": 0.25, "big": 0.5})


def test_softmax_weights_are_the_documented_scores():
    eu = policy(rule=EU_RULE, exploration={"type": "softmax", "temperature": 0.05})
    o = OUTPUTS[1]
    util = decide(eu, o).utilities
    dist = action_distribution(eu, o)
    z = sum(math.exp(u / 0.05) for u in util.values())
    assert dist == pytest.approx({n: math.exp(u / 0.05) / z for n, u in util.items()})
    th = policy(exploration={"type": "softmax", "temperature": 0.5})
    dist = action_distribution(th, OUTPUTS[0])  # tier easy: cheap 0 steps, mid 1, big 2
    w = [1.0, math.exp(-2.0), math.exp(-4.0)]
    assert dist == pytest.approx({n: x / sum(w) for n, x in zip(("cheap", "mid", "big"), w)})


def test_an_explored_choice_is_decided_in_full():
    p = policy(rule=CASCADE_RULE, exploration={"type": "epsilon", "epsilon": 1.0})
    o = OUTPUTS[0]  # P(hard) below skip_threshold: greedy = the cascade's cheap start
    by = {decide(p, o, request_id=str(i)).strategy: decide(p, o, request_id=str(i)) for i in range(50)}
    assert set(by) == {"cheap", "big"}
    assert by["cheap"].cascade is not None and by["cheap"].cascade.escalate_to == "big"
    skipped = by["big"]  # explored: straight to the escalation target, no cascade plan
    assert skipped.cascade is None and skipped.explored and skipped.greedy_strategy == "cheap"
    assert (skipped.model, skipped.max_tokens, skipped.expected_cost_usd) == ("openai/gpt-4o", 1024, 0.01)
    assert skipped.candidate == "large" and skipped.propensity == pytest.approx(0.5)


@pytest.mark.parametrize("changes, words", [
    (dict(exploration={"type": "epsilon", "epsilon": 0}), "exploration.epsilon"),
    (dict(exploration={"type": "epsilon", "epsilon": 1.5}), "exploration.epsilon"),
    (dict(exploration={"type": "epsilon"}), "needs `epsilon`"),
    (dict(exploration={"type": "softmax", "temperature": 0}), "exploration.temperature"),
    (dict(exploration={"type": "softmax", "temperature": float("inf")}), "finite"),
    (dict(exploration={"type": "softmax", "temperature": 1, "epsilon": 0.1}), "belongs to epsilon"),
    (dict(exploration={"type": "thompson", "epsilon": 0.1}), "exploration.type"),
    (dict(exploration={"type": "epsilon", "epsilon": 0.1, "strategies": ["cheap", "ghost"]}),
     "exploration.strategies.1': unknown strategy 'ghost'"),
    (dict(exploration={"type": "epsilon", "epsilon": 0.1, "strategies": ["cheap", "cheap"]}), "listed twice"),
    (dict(rule=CASCADE_RULE, exploration={"type": "softmax", "temperature": 1}), "use type: epsilon"),
    (dict(rule=CASCADE_RULE, exploration={"type": "epsilon", "epsilon": 0.1, "strategies": ["mid"]}),
     "cascade's first call"),
    (dict(tiers={"easy": "cheap", "normal": "big", "hard": "big"},
          exploration={"type": "softmax", "temperature": 1, "strategies": ["mid", "big"]}), "serves none"),
    (dict(expected_cost={"cheap": {"usd": 0.1}},
          exploration={"type": "epsilon", "epsilon": 0.1, "max_cost_per_query": 0.01}), "needs expected_cost of mid, big"),
    (dict(ledger={"store_prompts": "sometimes"}), "ledger.store_prompts"),
])
def test_bad_exploration_is_refused_with_its_field(changes, words):
    with pytest.raises(ConfigError) as exc:
        policy(**changes)
    assert words in str(exc.value) and str(exc.value).startswith("test.yaml: field '")


def test_epsilon_over_a_strategy_outside_the_rule_and_the_ledger_block():
    p = policy(exploration={"type": "epsilon", "epsilon": 0.2, "strategies": ["big"]},
               ledger={"store_prompts": True, "store_features": True})
    assert action_distribution(p, OUTPUTS[0]) == pytest.approx({"cheap": 0.8, "big": 0.2})
    assert p.ledger.store_prompts is True and p.ledger.store_features is True
    assert policy().ledger.store_prompts is None and policy().ledger.store_features is False
