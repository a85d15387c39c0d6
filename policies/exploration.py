"""Exploration: the policy's ``exploration:`` block, its validation and the seeded sampling.

Learning from one outcome per query (a contextual bandit) needs the logged choice to be random
with a *known* probability; otherwise strategies the policy never picks are never observed and an
off-policy estimate of another policy has no support. Off by default.

``epsilon``
    With probability ``epsilon`` the first call goes to a strategy drawn uniformly from the
    explorable ones (those within ``max_cost_per_query``); otherwise to the greedy choice. The
    greedy choice keeps ``1 - epsilon`` plus its share of the uniform part when it is explorable.
``softmax``
    ``P(s) ∝ exp(score(s) / temperature)`` over the explorable strategies and the greedy one:
    *expected_utility* scores are the rule's utilities (P(success) - lambda * E[cost]), so a
    temperature of 0.05 means "a strategy 0.05 less useful is e times less likely"; *thresholds*
    scores are ``-(tier steps between the decided tier and the nearest tier the strategy serves)``,
    so the greedy strategy scores 0 and temperature is in tier steps (0.5 gives one tier away
    weight e^-2). Both tend to the greedy choice as the temperature goes to 0. A cascade has no
    per-strategy score, so softmax is refused there; epsilon explores its first call (start vs
    going straight to escalate_to).

The cost cap limits *exploration* only: the greedy choice keeps its mass whatever it costs.

The draw is ``u = sha256(request id, policy name, policy version) -> [0, 1)``, inverted through the
distribution's CDF in the policy's strategy order, so the same request id under the same policy
version always gets the same strategy (replay is exact) and ``decide`` stays pure.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# ``Policy`` below is triage.policies.policy.Policy, typed Any: policy.py imports this module for
# its field type, and the import floors allow no circle.
Policy = Any


class Exploration(BaseModel):
    """``exploration: {type: epsilon, epsilon: 0.1}`` or ``{type: softmax, temperature: 0.05}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["epsilon", "softmax"]
    epsilon: float | None = Field(default=None, gt=0.0, le=1.0,
                                  description="epsilon: share of requests sent to a uniformly drawn strategy.")
    temperature: float | None = Field(default=None, gt=0.0,
                                      description="softmax: temperature over the scores (see docs/sdk.md).")
    strategies: list[str] | None = Field(
        default=None, min_length=1,
        description="Strategies that may be explored; default: those the rule chooses between.")
    max_cost_per_query: float | None = Field(
        default=None, ge=0.0, description="Never explore a strategy whose expected cost (USD) exceeds this.")

    @field_validator("temperature")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("temperature must be a finite number > 0")
        return value

    @model_validator(mode="after")
    def _knob_of_its_type(self) -> Exploration:
        if self.type == "epsilon":
            if self.epsilon is None:
                raise ValueError("epsilon exploration needs `epsilon` in (0, 1]")
            if self.temperature is not None:
                raise ValueError("`temperature` belongs to softmax exploration, not epsilon")
        else:
            if self.temperature is None:
                raise ValueError("softmax exploration needs `temperature` > 0")
            if self.epsilon is not None:
                raise ValueError("`epsilon` belongs to epsilon exploration, not softmax")
        if self.strategies is not None and len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies: a strategy is listed twice")
        return self


def parse_exploration(spec: str) -> Exploration | None:
    """``epsilon:E``, ``softmax:T`` or ``none`` (a command-line override of the policy's block) as
    the block it stands for; ``none`` is no exploration. ValueError, in one line, for anything else."""
    text = spec.strip().lower()
    if text == "none":
        return None
    kind, sep, value = text.partition(":")
    try:
        knob = float(value) if sep else None
    except ValueError:
        knob = None
    if kind not in ("epsilon", "softmax") or knob is None:
        raise ValueError(f"--explore must be epsilon:E (0 < E <= 1), softmax:T (T > 0) or none, got {spec[:40]!r}")
    try:
        return Exploration(type=kind, **{"epsilon" if kind == "epsilon" else "temperature": knob})  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"--explore must be epsilon:E (0 < E <= 1), softmax:T (T > 0) or none, got {spec[:40]!r}") from None


def default_explorable(policy: Policy) -> list[str]:
    """What the rule itself chooses between: the tiers' strategies, the utility candidates, or a
    cascade's start and escalate_to."""
    if policy.rule.type == "cascade":
        return [policy.cascade_start(), policy.cascade_target()]
    return policy.candidates()


def explorable(policy: Policy) -> list[str]:
    exp = policy.exploration
    assert exp is not None
    return list(exp.strategies) if exp.strategies is not None else default_explorable(policy)


def check_strategy_names(policy: Policy, names: list[str] | None, field: str) -> None:
    """Raise ValueError naming ``field.<i>`` for the first of ``names`` the policy does not define."""
    for i, name in enumerate(names or []):
        if name not in policy.strategies:
            raise ValueError(f"{field}.{i}: unknown strategy '{name}' (defined: {', '.join(policy.strategies)})")


def check_exploration(policy: Policy, *, expected_cost_optional: bool = False) -> None:
    """Raise ValueError (with the field path) when the block cannot work with this policy."""
    exp = policy.exploration
    if exp is None:
        return
    check_strategy_names(policy, exp.strategies, "exploration.strategies")
    names = explorable(policy)
    if policy.rule.type == "cascade":
        if exp.type == "softmax":
            raise ValueError("exploration: a cascade has no per-strategy scores for softmax; use type: epsilon")
        allowed = {policy.cascade_start(), policy.cascade_target()}
        for i, name in enumerate(names):
            if name not in allowed:
                raise ValueError(f"exploration.strategies.{i}: a cascade's first call is its start or "
                                 f"escalate_to ({', '.join(sorted(allowed))}), not '{name}'")
    if policy.rule.type == "thresholds" and exp.type == "softmax":
        served = {policy.tiers.get(t) for t in ("easy", "normal", "hard")}
        for i, name in enumerate(names):
            if name not in served:
                raise ValueError(f"exploration.strategies.{i}: softmax over a thresholds rule scores a strategy "
                                 f"by the tiers it serves; '{name}' serves none")
    if exp.max_cost_per_query is not None and not expected_cost_optional:
        missing = [n for n in names if n not in policy.expected_cost]
        if missing:
            raise ValueError(f"exploration.max_cost_per_query: needs expected_cost of {', '.join(missing)} "
                             "(`triage policy calibrate` fills it from replay data)")


def uniform_draw(request_id: str, policy_name: str, policy_version: str) -> float:
    """A number in [0, 1) fixed by the request id and the policy version (53 bits of a SHA-256)."""
    digest = hashlib.sha256(f"{request_id}\x1f{policy_name}\x1f{policy_version}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def _softmax(scores: dict[str, float], temperature: float) -> dict[str, float]:
    top = max(scores.values())
    weights = {n: math.exp((s - top) / temperature) for n, s in scores.items()}  # shifted: no overflow
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items()}


def explore(policy: Policy, greedy: str, tier: str, scores: dict[str, float] | None) -> dict[str, float]:
    """The first-call distribution: ``greedy`` with the policy's exploration applied.

    ``scores``: the softmax score of every explorable strategy (None for epsilon). The result is in
    the policy's strategy order (the order the draw walks) and holds strategies with mass > 0 only.
    """
    exp = policy.exploration
    if exp is None:
        return {greedy: 1.0}
    cap = exp.max_cost_per_query
    pool = []
    for name in explorable(policy):
        cost = policy.expected_cost_usd(name, tier)
        if cap is not None and (cost is None or cost > cap):
            continue  # over the cap, or no estimate to check it against: never explored
        pool.append(name)
    if exp.type == "epsilon":
        assert exp.epsilon is not None
        if not pool:
            return {greedy: 1.0}
        mass = {name: exp.epsilon / len(pool) for name in pool}
        mass[greedy] = mass.get(greedy, 0.0) + (1.0 - exp.epsilon)
    else:
        assert exp.temperature is not None and scores is not None
        arms = list(dict.fromkeys([*pool, greedy]))
        mass = _softmax({n: scores[n] for n in arms}, exp.temperature)
    order = list(policy.strategies)
    return {n: mass[n] for n in sorted(mass, key=order.index) if mass[n] > 0.0}


def sample(distribution: dict[str, float], u: float) -> str:
    """The strategy whose CDF interval holds ``u`` (walked in the distribution's order)."""
    total = sum(distribution.values())
    acc = 0.0
    last = ""
    for name, p in distribution.items():
        acc += p / total
        last = name
        if u < acc:
            return name
    return last  # u within rounding of 1
