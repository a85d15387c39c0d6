"""What Triage did for one request: the ``_hidden_params["triage"]`` dict and the ledger record.

``response._hidden_params["triage"]`` holds (all JSON-serialisable):

``request_id``        id of the request (the ledger's key; pass it to feedback)
``decision``          the :class:`triage.policies.decide.Decision` as a dict (tier, tier_probs, success,
                      strategy, model, max_tokens, expected_cost_usd, probe_version, policy, ...)
``strategy``/``model`` the strategy and model whose answer is returned (differs from the decision's
                      after an escalation or a fallback)
``attempts``          every call made, in order: strategy, model, reason (primary, retry, escalation,
                      fallback), max_tokens (the cap the call was sent: the step's budget, or the
                      caller's tighter max_tokens), tokens, cost_usd, latency_s, finish_reason,
                      truncated, error, escalated_because, uncertainty
``prompt_tokens``, ``completion_tokens``, ``reasoning_tokens``, ``cost_usd``  sums over attempts
``truncated``         whether the returned answer was cut by its token budget
``escalated``, ``retried``, ``fell_back``   whether an escalation, a retry or the fallback happened
``self_probe``        the probe's LM features came from a model this policy serves (its own prefill)
``latency_s``, ``decision_latency_s``  wall time of the request and of probe + policy
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from triage.policies.kinds.base import StrategyKind, kind_of
from triage.router.core.calls import Attempt
from triage.router.core.routed import Routed


class LedgerLike(Protocol):
    """A ledger writer (``write``) or store (``write_records``)."""


def _sum(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def triage_info(routed: Routed, attempts: list[Attempt], request_id: str, latency_s: float) -> dict[str, Any]:
    answered = [a for a in attempts if a.error is None]
    final = answered[-1] if answered else (attempts[-1] if attempts else None)
    return {
        "request_id": request_id,
        "decision": routed.decision.model_dump(mode="json"),
        "strategy": final.strategy if final else routed.decision.strategy,
        "model": final.model if final else routed.decision.model,
        "attempts": [a.as_dict() for a in attempts],
        "prompt_tokens": _sum([a.prompt_tokens for a in attempts]),
        "completion_tokens": _sum([a.completion_tokens for a in attempts]),
        "reasoning_tokens": _sum([a.reasoning_tokens for a in attempts]),
        "cost_usd": _sum([a.cost_usd for a in attempts]),
        "truncated": bool(final.truncated) if final else False,
        "escalated": any(a.reason == "escalation" for a in attempts),
        "retried": any(a.reason == "retry" for a in attempts),
        "fell_back": any(a.reason == "fallback" for a in attempts),
        "latency_s": latency_s,
        "decision_latency_s": routed.decision_latency_s,
        "self_probe": routed.self_probe,
    }


def _kind_metadata(attempts: list[Attempt]) -> dict[str, Any]:
    """What each strategy kind folds from the extras of its attempts into the record's metadata."""
    by_kind: dict[str, tuple[StrategyKind, list[dict[str, Any]]]] = {}
    for a in attempts:
        kind = kind_of(a.model)
        by_kind.setdefault(kind.name, (kind, []))[1].append(a.extra)
    out: dict[str, Any] = {}
    for kind, extras in by_kind.values():
        out.update(kind.ledger_metadata(extras))
    return out


def ledger_record(routed: Routed, attempts: list[Attempt], *, request_id: str, latency_s: float,
                  ledger_fields: dict[str, Any] | None = None, store_prompts: bool = False,
                  error: BaseException | None = None) -> Any:
    """The :class:`triage.router.ledger.records.LedgerRecord` of one routed request."""
    from triage.router.ledger.records import Attempt as LedgerAttempt
    from triage.router.ledger.records import LedgerRecord, ProbeRecord, prompt_sha256

    d = routed.decision
    answered = [a for a in attempts if a.error is None]
    final = answered[-1] if answered else None
    fields = dict(ledger_fields or {})
    metadata = dict(fields.pop("metadata", {}) or {})
    metadata.setdefault("rule", d.rule)
    metadata.setdefault("decided_strategy", d.strategy)
    metadata.setdefault("self_probe", routed.self_probe)
    if d.expected_cost_usd is not None:
        metadata.setdefault("expected_cost_usd", d.expected_cost_usd)
    if d.observed_propensity is not None:  # a `shadow:` policy: what training weights this outcome by
        metadata.setdefault("observed_propensity", d.observed_propensity)
    for key, value in _kind_metadata(attempts).items():  # e.g. a token-routed pair's token split
        metadata.setdefault(key, value)
    if any("deployment" in a.extra for a in attempts):
        # Which deployment each attempt called (index and host; None: a strategy without deployments).
        metadata.setdefault("deployments", [
            {"deployment": a.extra["deployment"], "host": a.extra.get("api_base_host")} if "deployment" in a.extra
            else None for a in attempts])
    return LedgerRecord(
        request_id=request_id,
        policy_name=d.policy,
        policy_version=d.policy_version,
        probe=ProbeRecord.from_output(routed.probe_output, routed.features),
        tier=d.tier,
        strategy=final.strategy if final else d.strategy,
        model=final.model if final else d.model,
        attempts=[
            LedgerAttempt(
                model=a.model, kind=a.reason, strategy=a.strategy,  # type: ignore[arg-type]
                prompt_tokens=a.prompt_tokens or 0, completion_tokens=a.completion_tokens or 0,
                reasoning_tokens=a.reasoning_tokens or 0, cost_usd=a.cost_usd, latency_s=a.latency_s,
                finish_reason=a.finish_reason, truncated=a.truncated, error=a.error,
            )
            for a in attempts
        ],
        latency_s=latency_s,
        decision_latency_s=routed.decision_latency_s,
        truncated=bool(final.truncated) if final else False,
        error=f"{type(error).__name__}: {error}" if error is not None else None,
        prompt_sha256=prompt_sha256(routed.messages),
        prompt=routed.messages if store_prompts else None,
        metadata=metadata,
        decided_strategy=d.strategy,
        decided_candidate=d.candidate,
        propensity=d.propensity,
        greedy_strategy=d.greedy_strategy,
        explored=d.explored,
        candidates=list(d.candidates),
        **fields,
    )


def write_record(ledger: Any, record: Any) -> Any:
    """Hand ``record`` to ``ledger`` (a writer's ``write`` or a store's ``write_records``); returns
    once the ledger says it is durable."""
    if hasattr(ledger, "write"):
        return ledger.write(record)
    if hasattr(ledger, "write_records"):
        return ledger.write_records([record])
    raise TypeError(f"{type(ledger).__name__} is not a ledger (needs write() or write_records())")


async def awrite_record(ledger: Any, record: Any) -> Any:
    """Async :func:`write_record`: a writer's ``arecord`` is awaited on the event loop (no thread
    hop); anything else runs in a worker thread."""
    arecord = getattr(ledger, "arecord", None)
    if arecord is not None:
        return await arecord(record)
    return await asyncio.to_thread(write_record, ledger, record)
