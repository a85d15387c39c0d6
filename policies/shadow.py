"""Shadow sampling: the policy's ``shadow:`` block, its validation and the seeded shadow choice.

A routed request shows one strategy's outcome. For a sampled share of requests (``rate``) the
router also runs one *other* strategy in the background, after the caller's answer, and records
its outcome as a separate ledger record linked to the original (``metadata.shadow_of``); the
shadow answer is never returned (:mod:`triage.router.core.shadow` runs it). Off by default.

The choice is seeded like exploration (:func:`triage.policies.exploration.uniform_draw`): whether a
request is shadowed and which strategy shadows it are fixed by the request id and the policy
version, so replay is exact. The shadow strategy is drawn uniformly from the shadow pool less the
decided first call ``a``: ``q(s | a) = 1 / |pool - {a}|``.

Propensity of a shadow record (what keeps importance weighting right, docs/sdk.md): the
probability that strategy ``s`` is *observed* for this query at all, primary or shadow - the two
never coincide, so the events are disjoint::

    P(s observed | x) = pi(s | x) + rate * sum_{a != s} pi(a | x) * q(s | a)

with ``pi`` the policy's first-call distribution (exploration included). Weighting each observed
outcome of ``s`` by its inverse gives every query the same total weight for ``s`` whichever way it
was observed. ``q(s | a)`` is kept beside it (``shadow_choice_propensity``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from triage.policies.exploration import check_strategy_names, default_explorable, uniform_draw

# triage.policies.policy.Policy (typed Any: policy.py imports this module for its field type).
Policy = Any


class Shadow(BaseModel):
    """``shadow: {rate: 0.05, strategies: [...], max_cost_usd_per_day: 1.0}``."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(ge=0.0, le=1.0, description="Share of answered requests that also get a shadow call.")
    strategies: list[str] | None = Field(
        default=None, min_length=1,
        description="Strategies that may shadow; default: those the rule chooses between.")
    max_cost_usd_per_day: float = Field(
        default=1.0, ge=0.0, description="Shadow spend per UTC day and process; over it, shadows are dropped.")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Shadow calls running at once.")
    max_queue: int = Field(default=64, ge=0, description="Shadow calls waiting; more are dropped (counted).")


def shadow_pool(policy: Policy) -> list[str]:
    sh = policy.shadow
    assert sh is not None
    return list(sh.strategies) if sh.strategies is not None else default_explorable(policy)


def check_shadow(policy: Policy) -> None:
    """Raise ValueError (with the field path) when the block names an unknown strategy."""
    sh = policy.shadow
    if sh is None:
        return
    check_strategy_names(policy, sh.strategies, "shadow.strategies")
    if sh.strategies is not None and len(set(sh.strategies)) != len(sh.strategies):
        raise ValueError("shadow.strategies: a strategy is listed twice")


def _others(policy: Policy, decided: str) -> list[str]:
    return [n for n in shadow_pool(policy) if n != decided]


def choose_shadow(policy: Policy, request_id: str, decided: str) -> tuple[str, float] | None:
    """The shadow strategy of this request and ``q(s | decided)``; None when it is not shadowed."""
    sh = policy.shadow
    if sh is None or sh.rate <= 0.0:
        return None
    if uniform_draw(f"{request_id}\x1fshadow", policy.name, policy.version) >= sh.rate:
        return None
    others = _others(policy, decided)
    if not others:
        return None
    u = uniform_draw(f"{request_id}\x1fshadow-choice", policy.name, policy.version)
    return others[min(int(u * len(others)), len(others) - 1)], 1.0 / len(others)


def observed_propensity(policy: Policy, distribution: dict[str, float], strategy: str) -> float:
    """``P(strategy observed | x)`` under the policy's first-call ``distribution`` and its shadow."""
    sh = policy.shadow
    rate = sh.rate if sh is not None else 0.0
    total = distribution.get(strategy, 0.0)
    for a, p in distribution.items():
        others = _others(policy, a) if sh is not None else []
        if a != strategy and strategy in others:
            total += rate * p / len(others)
    return min(1.0, total)
