"""The most one request can cost: what a spend budget reserves before the call.

A key's budget admits a request against ``spent + reserved`` (see :class:`triage.router.sidecar.limits.
SpendTracker`); for that to bound the overshoot the reservation must be an *upper bound* on what the
router can spend for the request, not the decision's ``expected_cost_usd`` (an average, often
unset). The bound is the sum, over every call the router's plan can make for this decision, of
``prompt tokens x input price + completion budget x output price``:

* the calls: the chosen strategy; the cascade's ``escalate_to``; each strategy a truncated answer
  escalates to (``on_truncation: escalate``, transitively); a retry with ``retry_max_tokens``
  (``on_truncation: retry``); every strategy of the fallback chains (once more when it can also run otherwise);
* completion budget: the larger of the strategy's ``max_tokens`` and its tier budget, tightened by
  the caller's ``max_tokens``; no budget at all makes the bound infinite (when output costs money);
* prompt tokens: the request body's UTF-8 bytes plus the strategy's system prompt and template
  bytes, plus a fixed allowance for the chat template and one per image part. A token is at least
  one byte for byte-level BPE and SentencePiece tokenizers, so bytes bound tokens from above;
* prices: the strategy's ``price`` override, 0 for local models, else litellm's cost map. A model
  with no known price reserves nothing (its calls are not priced in the ledger either).
"""

from __future__ import annotations

import math

from triage.policies.decide import Decision
from triage.policies.policy import Policy
from triage.policies.pricing import token_price

# Chat-template tokens around the messages (role markers, the assistant prefix); generous.
TEMPLATE_ALLOWANCE_TOKENS = 256
# An image part is billed by its size, not its URL's length: providers bill about 1.1k-1.6k tokens
# for the largest image they accept at high detail.
IMAGE_ALLOWANCE_TOKENS = 2048


def prompt_tokens_bound(body: bytes) -> int:
    """Tokens the request's own prompt can use at most (messages, tools and all), from its raw body."""
    return len(body) + TEMPLATE_ALLOWANCE_TOKENS + body.count(b'"image_url"') * IMAGE_ALLOWANCE_TOKENS


def _reachable(policy: Policy, start: list[str]) -> list[str]:
    """Strategies reachable from ``start`` by truncation escalation (each once, in visit order)."""
    seen: dict[str, None] = {}
    todo = list(start)
    while todo:
        name = todo.pop(0)
        if name in seen or name not in policy.strategies:
            continue
        seen[name] = None
        if policy.strategies[name].on_truncation == "escalate":
            target = policy.escalation_target(name)
            if target is not None:
                todo.append(target)
    return list(seen)


def _cap(*values: int | None) -> float:
    """The largest completion budget among ``values``; None (no budget) is unbounded."""
    return math.inf if any(v is None for v in values) else float(max(v for v in values if v is not None))


def _call_bound(policy: Policy, name: str, tier: str, prompt_tokens: int, caller_max: int | None,
                retry: bool = False) -> float:
    strategy = policy.strategies[name]
    price = token_price(strategy)
    if not price.known or (price.input == 0.0 and price.output == 0.0):
        return 0.0
    budget = (float(strategy.retry_max_tokens) if retry and strategy.retry_max_tokens
              else _cap(strategy.max_tokens, policy.max_tokens_for(name, tier)))
    if caller_max is not None:
        budget = min(budget, float(caller_max))
    extra = len((strategy.system_prompt or "").encode()) + len((strategy.template or "").encode())
    completion = budget * price.output if price.output > 0.0 else 0.0  # inf * 0 would be NaN
    return (prompt_tokens + extra) * price.input + completion


def _strategy_bound(policy: Policy, name: str, tier: str, prompt_tokens: int, caller_max: int | None) -> float:
    """One run of ``name`` (plus its retry when a truncated answer is retried)."""
    total = _call_bound(policy, name, tier, prompt_tokens, caller_max)
    if policy.strategies[name].on_truncation == "retry":
        total += _call_bound(policy, name, tier, prompt_tokens, caller_max, retry=True)
    return total


def request_cost_bound(policy: Policy, decision: Decision, *, prompt_tokens: int,
                       caller_max_tokens: int | None = None) -> float:
    """Upper bound in USD on what answering one request decided as ``decision`` can cost (may be inf)."""
    start = [decision.strategy] + ([decision.cascade.escalate_to] if decision.cascade is not None else [])
    names = _reachable(policy, start)
    total = sum(_strategy_bound(policy, n, decision.tier, prompt_tokens, caller_max_tokens) for n in names)
    # Each strategy of any fallback chain runs at most once as a fallback, and may also have run
    # before as an ordinary step. (Failed calls on other deployments answer nothing and bill nothing.)
    seen = set(names)
    for fallback in policy.fallback_names():
        again = [fallback] if fallback in seen else []
        fresh = [m for m in _reachable(policy, [fallback]) if m not in seen]
        seen.update(fresh)
        for n in again + fresh:
            total += _strategy_bound(policy, n, decision.tier, prompt_tokens, caller_max_tokens)
    return total


def cost_before_failure(exc: BaseException) -> float | None:
    """USD the router's calls spent before a request failed (a provider error lists its attempts,
    also when the sidecar re-raised it as its own error); None when nothing says."""
    for err in (exc, exc.__cause__):
        attempts = getattr(err, "attempts", None)
        if isinstance(attempts, list) and attempts:
            costs = [a.get("cost_usd") for a in attempts if isinstance(a, dict)]
            return sum(float(c) for c in costs if isinstance(c, int | float) and math.isfinite(c))
    return None
