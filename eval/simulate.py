"""A bandit simulator: replay full-information data as live traffic into a real ledger.

``triage replay simulate FILE --policy P --ledger URL`` takes replay records where every candidate's
outcome is known and sends them, in file order (or by their ``time`` field when every record has
one), through what a live request goes through up to the model call: the policy's probe, then
:func:`triage.policies.decide.decide` *with a request id*, so the policy's exploration draws and the
logged propensity is the one production would log. No model is called: the chosen strategy's
recorded outcome stands in for the answer (tokens, cost, latency, truncation), the record is built
by the router's own :func:`triage.router.core.receipt.ledger_record` and written by a real
:class:`~triage.router.ledger.LedgerWriter` with prompts stored (unless the policy's
``ledger.store_prompts`` is false), and the chosen strategy's score -
and only that one - is attached as an outcome with source ``simulated``. A ledger export of the
result is therefore exactly the logged bandit data production would give (issue #15).

Because every outcome is known, the simulator also reports what exploration cost: the chosen
strategies' cost and accuracy against the greedy choice's on the same queries.

A policy's ``shadow:`` block is honoured as the router honours it (:mod:`triage.router.core.shadow`):
the same seeded choice of which requests are shadowed and by which strategy, the same linked record
(``<request id>:shadow``, ``metadata.shadow_of``, the observed-strategy propensity), with that
strategy's recorded outcome attached. The per-day spend cap applies per simulated UTC day of this
run (the router's is per process and day): a shadow starts only while the day's shadow spend is
under it. Shadow spend is reported apart from the traffic's (``shadow_cost_usd``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from triage.errors import ConfigError
from triage.logging import get_logger
from triage.policies.decide import Decision, decide
from triage.policies.exploration import Exploration, check_exploration
from triage.policies.loader import load_policy
from triage.policies.policy import CascadeRule, Policy
from triage.policies.pricing import token_price
from triage.policies.shadow import choose_shadow
from triage.replay.schema import Outcome, ReplayRecord

log = get_logger("triage.eval.simulate")

#: Outcome source of the simulator's outcomes (what `triage ledger report` shows).
SOURCE = "simulated"
BATCH = 64


@dataclass
class SimulationResult:
    """What one simulated run wrote and what its exploration cost (full information: exact)."""

    ledger: str
    policy: str
    policy_version: str
    queries: int = 0
    explored: int = 0
    accuracy: float = 0.0  # mean score of the chosen strategies
    greedy_accuracy: float = 0.0  # mean score the greedy choice would have had
    cost_usd: float = 0.0  # total cost of the chosen strategies
    greedy_cost_usd: float = 0.0  # total cost of the greedy choices
    chosen: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    shadows: int = 0  # shadow records written (the policy's `shadow:` block)
    shadows_dropped_budget: int = 0  # sampled, but the simulated day's shadow spend had reached the cap
    shadow_cost_usd: float = 0.0
    shadow_chosen: dict[str, int] = field(default_factory=dict)

    @property
    def exploration_cost_usd(self) -> float:
        """Extra cost of exploring over routing greedily (negative: exploring was cheaper)."""
        return self.cost_usd - self.greedy_cost_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger, "policy": self.policy, "policy_version": self.policy_version,
            "queries": self.queries, "explored": self.explored, "accuracy": self.accuracy,
            "greedy_accuracy": self.greedy_accuracy, "cost_usd": self.cost_usd,
            "greedy_cost_usd": self.greedy_cost_usd, "exploration_cost_usd": self.exploration_cost_usd,
            "chosen": dict(self.chosen), "shadows": self.shadows,
            "shadows_dropped_budget": self.shadows_dropped_budget, "shadow_cost_usd": self.shadow_cost_usd,
            "shadow_chosen": dict(self.shadow_chosen),
        }


def in_order(records: Sequence[ReplayRecord]) -> list[ReplayRecord]:
    """Time order when every record has a ``time`` field, else file order (sorted() is stable)."""
    times = [(r.model_extra or {}).get("time") for r in records]
    if records and all(isinstance(t, str) and t for t in times):
        return [r for _, r in sorted(zip(times, records, strict=True), key=lambda tr: tr[0])]
    return list(records)


def with_exploration(policy: Policy, exploration: Exploration | None) -> Policy:
    """``policy`` with its ``exploration:`` block replaced (checked against the policy as a loaded
    file's block is: a ConfigError names what does not fit)."""
    changed = policy.model_copy(update={"exploration": exploration})
    try:
        check_exploration(changed)
    except ValueError as exc:
        raise ConfigError(f"--explore does not fit policy {policy.name!r}: {exc}") from None
    return changed


def _check(policy: Policy, records: Sequence[ReplayRecord]) -> None:
    if isinstance(policy.rule, CascadeRule):
        raise ConfigError("simulate replays the first call only; a cascade's escalation needs token "
                          "logprobs the replay data does not have")
    for r in records:
        missing = [f"{name} ('{s.candidate}')" for name, s in policy.strategies.items() if s.candidate not in r.outcomes]
        if missing:
            raise ConfigError(f"record {r.id!r} has no outcome for strategy {', '.join(missing)}: simulate needs "
                              "full-information data (every strategy's replay_candidate outcome on every query)")


def _cost(policy: Policy, strategy: str, o: Outcome) -> float | None:
    if o.cost_usd is not None:
        return float(o.cost_usd)
    price = token_price(policy.strategies[strategy])
    if price.known and o.prompt_tokens is not None and o.completion_tokens is not None:
        return o.prompt_tokens * price.input + o.completion_tokens * price.output
    return None


def _shadow(policy: Policy, routed: Any, rid: str, r: ReplayRecord, meta: dict[str, Any], when: datetime,
            keep: bool, spent: dict[str, float], result: SimulationResult) -> tuple[Any, Any] | None:
    """The shadow record and outcome of one routed request, or None (not sampled, or over the day's cap)."""
    from triage.router.core.receipt import ledger_record
    from triage.router.core.shadow import SHADOW_SUFFIX, shadow_ledger_fields, shadow_routed
    from triage.router.ledger.records import OutcomeRecord

    d = routed.decision
    chosen = choose_shadow(policy, rid, d.strategy)
    if chosen is None:
        return None
    name, q = chosen
    assert policy.shadow is not None
    day = when.strftime("%Y-%m-%d")
    if spent.get(day, 0.0) >= policy.shadow.max_cost_usd_per_day:
        result.shadows_dropped_budget += 1
        return None
    s_routed = shadow_routed(policy, routed, name)
    o = r.outcomes[policy.strategies[name].candidate]
    cost = _cost(policy, name, o) or 0.0
    spent[day] = spent.get(day, 0.0) + cost
    result.shadows += 1
    result.shadow_cost_usd += cost
    result.shadow_chosen[name] = result.shadow_chosen.get(name, 0) + 1
    sid = rid + SHADOW_SUFFIX
    fields = shadow_ledger_fields(policy, rid, {"metadata": meta, "time": when}, q, d.strategy)
    fields["metadata"]["simulated"] = True
    fields["metadata"]["replay_id"] = r.id
    rec = ledger_record(s_routed, [_attempt(policy, s_routed.decision, o)], request_id=sid,
                        latency_s=float(o.latency_s or 0.0), store_prompts=keep, ledger_fields=fields)
    out = OutcomeRecord(request_id=sid, score=o.score, source=SOURCE, time=when + timedelta(microseconds=500),
                        detail={"replay_id": r.id, "shadow_of": rid})
    return rec, out


def _attempt(policy: Policy, d: Decision, o: Outcome) -> Any:
    from triage.router.core.calls import Attempt

    return Attempt(strategy=d.strategy, model=d.model, reason="primary", max_tokens=d.max_tokens,
                   prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens,
                   reasoning_tokens=o.reasoning_tokens, cost_usd=_cost(policy, d.strategy, o),
                   latency_s=float(o.latency_s or 0.0), finish_reason="length" if o.truncated else "stop",
                   truncated=bool(o.truncated))


def simulate(records: Sequence[ReplayRecord], policy_path: str | Path, ledger: str, *, n: int | None = None,
             seed: int = 0, start: datetime | None = None, probe: Any = None,
             exploration: Exploration | None | Literal["policy"] = "policy") -> SimulationResult:
    """Route ``records`` (the first ``n``) with the policy at ``policy_path`` into ``ledger``.

    ``seed`` goes into every request id (``sim<seed>:<record id>``), so another seed gives other
    exploration draws and ids that do not collide with an earlier run's in the same ledger.
    ``probe``: a loaded probe object to use instead of the one the policy names (tests, benchmarks).
    ``exploration``: route with this block instead of the policy's (None: no exploration); the
    logged propensities are this block's, the policy file is not changed.
    """
    from triage.router.core.messages import probe_text
    from triage.router.core.probing import ProbeRunner
    from triage.router.core.receipt import ledger_record
    from triage.router.core.routed import Routed
    from triage.router.ledger import LedgerWriter, open_ledger
    from triage.router.ledger.records import OutcomeRecord

    policy = load_policy(policy_path)
    if exploration != "policy":
        policy = with_exploration(policy, exploration)
    rows = in_order(records)[: n if n is not None else None]
    if not rows:
        raise ConfigError("no records to simulate")
    _check(policy, rows)
    runner = ProbeRunner(policy, str(policy_path), probe)
    t0 = start or datetime.now(timezone.utc)
    result = SimulationResult(ledger=ledger, policy=policy.name, policy_version=policy.version)
    scores = greedy_scores = 0.0
    store = open_ledger(ledger)
    # Prompts are stored (training needs them) unless the policy's `ledger.store_prompts` says no,
    # as it would for a live router.
    keep = policy.ledger.store_prompts is not False
    writer = LedgerWriter(store, store_prompts=keep, spool=None).start()
    shadow_spent: dict[str, float] = {}  # simulated UTC day -> shadow spend (the `shadow:` block's cap)
    try:
        for lo in range(0, len(rows), BATCH):
            batch = rows[lo:lo + BATCH]
            msgs = [r.messages() for r in batch]
            outs = runner.predict_many([probe_text(m) for m in msgs])
            records_out, outcomes = [], []
            for k, (r, m, out) in enumerate(zip(batch, msgs, outs, strict=True)):
                rid = f"sim{seed}:{r.id}"
                d = decide(policy, out, request_id=rid)
                o = r.outcomes[policy.strategies[d.strategy].candidate]
                g = r.outcomes[policy.strategies[d.greedy_strategy or d.strategy].candidate]
                routed = Routed(d, out, m, 0.0, False, None)
                meta = {"replay_id": r.id, "simulated": True}
                if r.task:
                    meta["task"] = r.task
                rec = ledger_record(routed, [_attempt(policy, d, o)], request_id=rid,
                                    latency_s=float(o.latency_s or 0.0), store_prompts=keep,
                                    ledger_fields={"metadata": meta,
                                                   "time": t0 + timedelta(milliseconds=lo + k)})
                records_out.append(rec)
                outcomes.append(OutcomeRecord(request_id=rid, score=o.score, source=SOURCE,
                                              time=t0 + timedelta(milliseconds=lo + k, microseconds=500),
                                              detail={"replay_id": r.id}))
                if policy.shadow is not None:
                    shadowed = _shadow(policy, routed, rid, r, meta,
                                       t0 + timedelta(milliseconds=lo + k, microseconds=250),
                                       keep, shadow_spent, result)
                    if shadowed is not None:  # after its primary, as the router writes it
                        records_out.append(shadowed[0])
                        outcomes.append(shadowed[1])
                result.queries += 1
                result.explored += int(d.explored)
                result.chosen[d.strategy] = result.chosen.get(d.strategy, 0) + 1
                result.request_ids.append(rid)
                scores += o.score
                greedy_scores += g.score
                result.cost_usd += _cost(policy, d.strategy, o) or 0.0
                result.greedy_cost_usd += _cost(policy, d.greedy_strategy or d.strategy, g) or 0.0
            futures = [writer.submit(rec) for rec in records_out]
            for f in futures:
                f.result()  # durable before its outcome is attached, as feedback after an answer
            store.add_outcomes(outcomes)
    finally:
        writer.close()
        store.close()
    result.accuracy = scores / result.queries
    result.greedy_accuracy = greedy_scores / result.queries
    log.debug("simulated", policy=policy.name, version=policy.version, queries=result.queries,
              explored=result.explored, shadows=result.shadows, ledger=ledger)
    return result
