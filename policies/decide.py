"""THE decision function: ``decide(policy, probe_output) -> Decision``.

The SDK, the sidecar and replay evaluation all call this and nothing else to turn a probe output into
a choice, so one policy file gives one decision wherever it runs. It is pure: no I/O, no clock, no
hidden randomness; the same policy, probe output and request id always give the same Decision (ties
break by a fixed order: tiers easy->hard, expected-utility candidates in the order the policy lists
them; exploration draws from a hash of the request id, :mod:`triage.policies.exploration`).

What happens *after* the first call (cascade escalation on uncertainty, retry or escalation on
truncation) is decided by :func:`should_escalate` and :func:`truncation_action`, also pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from triage.policies.exploration import explorable, explore, sample, uniform_draw
from triage.policies.policy import CascadeRule, ExpectedUtilityRule, Policy, ThresholdsRule
from triage.policies.shadow import observed_propensity
from triage.probes.types import TIERS, ProbeOutput
from triage.errors import TriageError


class DecisionError(TriageError):
    """The probe output cannot drive this policy (e.g. a success label the probe does not have)."""


class CascadePlan(BaseModel):
    """What the router checks after the cheap step of a cascade."""

    model_config = ConfigDict(frozen=True)

    escalate_to: str
    max_mean_entropy: float | None = None
    min_token_logprob: float | None = None
    first_k_tokens: int | None = None
    top_logprobs: int = 5
    escalate_on_truncation: bool = True


class Decision(BaseModel):
    """The routing decision for one query. JSON-serialisable (the sidecar's /v1/route returns it)."""

    model_config = ConfigDict(frozen=True)

    policy: str
    policy_version: str
    probe_version: str
    rule: Literal["thresholds", "expected_utility", "cascade"]
    tier: Literal["easy", "normal", "hard"]
    tier_probs: dict[str, float]
    success: dict[str, float] = Field(default_factory=dict, description="The probe's P(success) per label.")
    strategy: str
    model: str
    max_tokens: int | None
    temperature: float | None
    reasoning_effort: str | None = None
    expected_cost_usd: float | None = None
    utilities: dict[str, float] | None = Field(default=None, description="expected_utility: score per candidate.")
    cascade: CascadePlan | None = None
    fallback: str | None = None
    propensity: float = Field(default=1.0, description="P(this strategy as the first call) under the "
                              "policy's exploration; 1.0 without exploration.")
    greedy_strategy: str | None = Field(default=None, description="What the rule picks without exploration.")
    explored: bool = Field(default=False, description="The draw chose another strategy than the greedy one.")
    candidates: list[str] = Field(default_factory=list, description="Strategies with probability > 0.")
    candidate: str | None = Field(default=None, description="The chosen strategy's probe success label.")
    observed_propensity: float | None = Field(
        default=None, description="With a `shadow:` block: P(this strategy's outcome is observed for the query), "
        "as the first call or as a shadow - what training weights by; `propensity` is what off-policy "
        "evaluation of the decision needs. None without a shadow block (then equal to propensity).")


def _tier_probs(out: ProbeOutput) -> dict[str, float]:
    probs = {}
    for tier in TIERS:
        p = float(out.tier_probs.get(tier, 0.0))
        if not math.isfinite(p) or p < 0.0:
            raise DecisionError(f"probe returned an invalid probability for tier '{tier}': {p!r}")
        probs[tier] = p
    if sum(probs.values()) <= 0.0:
        raise DecisionError(f"probe returned no tier probabilities (got {dict(out.tier_probs)!r})")
    return probs


def success_probability(policy: Policy, strategy_name: str, out: ProbeOutput) -> float:
    label = policy.strategies[strategy_name].candidate
    if label not in out.success:
        known = ", ".join(sorted(out.success)) or "none"
        raise DecisionError(
            f"strategy '{strategy_name}' needs the probe's success label '{label}' (set replay_candidate); "
            f"probe {out.probe_version or '?'} has: {known}"
        )
    return float(out.success[label])


@dataclass(frozen=True)
class _Greedy:
    """What the rule itself picks, before exploration."""

    probs: dict[str, float]
    tier: str
    strategy: str
    utilities: dict[str, float] | None


def _greedy(policy: Policy, out: ProbeOutput) -> _Greedy:
    probs = _tier_probs(out)
    argmax_tier = max(TIERS, key=lambda t: probs[t])  # first maximum: ties go to the easier tier
    rule = policy.rule
    utilities: dict[str, float] | None = None
    if isinstance(rule, ThresholdsRule):
        tier = rule.tier_for(probs)
        strategy = policy.tiers.get(tier)
    elif isinstance(rule, ExpectedUtilityRule):
        tier = argmax_tier
        utilities = {name: _utility(policy, rule, name, tier, out) for name in policy.candidates()}
        strategy = max(utilities, key=lambda n: utilities[n])  # first maximum in candidate order
    elif isinstance(rule, CascadeRule):
        tier = argmax_tier
        skip = rule.skip_threshold is not None and probs["hard"] >= rule.skip_threshold
        strategy = policy.cascade_target() if skip else policy.cascade_start()
    else:  # pragma: no cover - the Rule union is closed
        raise DecisionError(f"unknown rule {rule!r}")
    return _Greedy(probs, tier, strategy, utilities)


def _utility(policy: Policy, rule: ExpectedUtilityRule, name: str, tier: str, out: ProbeOutput) -> float:
    cost = policy.expected_cost_usd(name, tier) if rule.lambda_ > 0 else 0.0
    return success_probability(policy, name, out) - rule.lambda_ * (cost or 0.0)


def _softmax_scores(policy: Policy, g: _Greedy, out: ProbeOutput) -> dict[str, float] | None:
    """Scores softmax exploration weighs (see :mod:`triage.policies.exploration`); None for epsilon."""
    exp = policy.exploration
    if exp is None or exp.type != "softmax":
        return None
    names = list(dict.fromkeys([*explorable(policy), g.strategy]))
    rule = policy.rule
    if isinstance(rule, ExpectedUtilityRule):
        known = g.utilities or {}
        return {n: known[n] if n in known else _utility(policy, rule, n, g.tier, out) for n in names}
    at = TIERS.index(g.tier)  # thresholds: minus the tier steps to the nearest tier a strategy serves
    return {n: -float(min(abs(i - at) for i, t in enumerate(TIERS) if policy.tiers.get(t) == n)) for n in names}


def _distribution(policy: Policy, g: _Greedy, out: ProbeOutput) -> dict[str, float]:
    return explore(policy, g.strategy, g.tier, _softmax_scores(policy, g, out))


def action_distribution(policy: Policy, out: ProbeOutput) -> dict[str, float]:
    """The probability the policy gives each strategy as the first call for this probe output.

    Off-policy evaluation reads a new policy through this (its ``pi(a|x)``), and the ledger records
    the chosen strategy's entry as the logged propensity. Sums to 1; strategies with no mass are
    left out. A policy without exploration puts all mass on the greedy choice.
    """
    return _distribution(policy, _greedy(policy, out), out)


def decide(policy: Policy, out: ProbeOutput, *, request_id: str | None = None) -> Decision:
    """Choose the strategy for one query from its probe output.

    A policy with ``exploration`` draws the first call from :func:`action_distribution` with a
    number fixed by ``request_id`` and the policy version (no request id: the greedy choice, no
    draw). ``propensity`` is the chosen strategy's probability under that distribution.
    """
    g = _greedy(policy, out)
    dist = _distribution(policy, g, out)
    strategy = g.strategy
    if request_id is not None and len(dist) > 1:
        strategy = sample(dist, uniform_draw(request_id, policy.name, policy.version))
    rule = policy.rule
    cascade: CascadePlan | None = None
    if isinstance(rule, CascadeRule) and strategy == policy.cascade_start():
        cascade = CascadePlan(
            escalate_to=policy.cascade_target(),
            max_mean_entropy=rule.max_mean_entropy,
            min_token_logprob=rule.min_token_logprob,
            first_k_tokens=rule.first_k_tokens,
            top_logprobs=rule.top_logprobs,
            escalate_on_truncation=rule.escalate_on_truncation,
        )
    tier = g.tier
    chosen = policy.strategies[strategy]
    return Decision(
        policy=policy.name,
        policy_version=policy.version,
        probe_version=out.probe_version,
        rule=rule.type,
        tier=tier,  # type: ignore[arg-type]
        tier_probs=g.probs,
        success={k: float(v) for k, v in out.success.items()},
        strategy=strategy,
        model=chosen.model,
        max_tokens=policy.max_tokens_for(strategy, tier),
        temperature=chosen.temperature,
        reasoning_effort=policy.reasoning_effort_for(strategy, tier),
        expected_cost_usd=policy.expected_cost_usd(strategy, tier),
        utilities=g.utilities,
        cascade=cascade,
        fallback=next(iter(policy.fallback_chain(strategy)), None),
        propensity=dist.get(strategy, 0.0),
        greedy_strategy=g.strategy,
        explored=strategy != g.strategy,
        candidates=list(dist),
        candidate=chosen.candidate,
        observed_propensity=observed_propensity(policy, dist, strategy) if policy.shadow is not None else None,
    )


# -- after the first call -------------------------------------------------------------------------


class Uncertainty(BaseModel):
    """Token-level uncertainty of an answer, from its logprobs."""

    model_config = ConfigDict(frozen=True)

    tokens: int
    mean_entropy: float | None = None
    min_logprob: float | None = None
    mean_logprob: float | None = None


def token_uncertainty(token_logprobs: list[tuple[float, list[float]] | tuple[float, list[float], float | None]],
                      first_k: int | None = None) -> Uncertainty:
    """Statistics over ``(logprob of the chosen token, logprobs of the top alternatives[, entropy])``.

    When the provider reports a token's exact entropy (the local provider does) it is used as is.
    Otherwise the entropy is computed over the top alternatives plus one bucket holding the
    probability mass they leave out: a lower bound on the full-vocabulary entropy that tightens as
    more alternatives are requested.
    """
    items = token_logprobs[:first_k] if first_k else token_logprobs
    if not items:
        return Uncertainty(tokens=0)
    entropies = []
    chosen = []
    for item in items:
        lp, alternatives = item[0], item[1]
        exact = item[2] if len(item) > 2 else None
        chosen.append(lp)
        if exact is not None and math.isfinite(exact):
            entropies.append(float(exact))
            continue
        ps = [math.exp(a) for a in (alternatives or [lp])]
        rest = max(0.0, 1.0 - sum(ps))
        h = -sum(p * math.log(p) for p in ps if p > 0.0)
        if rest > 1e-12:
            h -= rest * math.log(rest)
        entropies.append(h)
    return Uncertainty(
        tokens=len(items),
        mean_entropy=sum(entropies) / len(entropies),
        min_logprob=min(chosen),
        mean_logprob=sum(chosen) / len(chosen),
    )


def should_escalate(plan: CascadePlan, uncertainty: Uncertainty, truncated: bool,
                    calls_tools: bool = False) -> str | None:
    """Why the cascade escalates (``truncated``, ``entropy``, ``logprob``), or None to keep the answer.

    ``calls_tools``: the answer is a tool call. Providers give logprobs for text only, so a tool
    call has no tokens to judge; it is an answer, not an empty one (the agent's next turn is routed
    afresh), so the token tests cannot escalate it - truncation still can."""
    if truncated and plan.escalate_on_truncation:
        return "truncated"
    if uncertainty.tokens == 0 and calls_tools:
        return None
    if uncertainty.tokens == 0:
        # An empty answer from the cheap model is no answer; escalate when an uncertainty test is set.
        return "empty" if (plan.max_mean_entropy is not None or plan.min_token_logprob is not None) else None
    if plan.max_mean_entropy is not None and (uncertainty.mean_entropy or 0.0) > plan.max_mean_entropy:
        return "entropy"
    if plan.min_token_logprob is not None and (uncertainty.min_logprob or 0.0) < plan.min_token_logprob:
        return "logprob"
    return None


def truncation_action(policy: Policy, strategy_name: str) -> tuple[str, str | None, int | None]:
    """What to do when ``strategy_name``'s answer was truncated: ``("accept"|"retry"|"escalate", strategy, max_tokens)``.

    ``escalate`` with no harder strategy left degrades to ``accept``.
    """
    strategy = policy.strategies[strategy_name]
    if strategy.on_truncation == "retry":
        return "retry", strategy_name, strategy.retry_max_tokens
    if strategy.on_truncation == "escalate":
        target = policy.escalation_target(strategy_name)
        if target is not None:
            return "escalate", target, policy.strategies[target].max_tokens
    return "accept", None, None
