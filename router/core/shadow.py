"""Shadow calls: run another strategy in the background after the caller's answer, record, never return.

The policy's ``shadow:`` block (:mod:`triage.policies.shadow`) says which requests are shadowed and
by which strategy. The router hands each answered request to :meth:`ShadowRunner.submit` (sync
drivers) or :meth:`ShadowRunner.asubmit` (async drivers, the sidecar) right after the request's own
ledger record is committed; submitting only enqueues, so the caller's answer never waits for a
shadow. Sync requests run their shadow on a small thread pool; async requests in an asyncio task
on the caller's event loop. Both are bounded (``max_concurrency`` running, ``max_queue`` waiting);
a request over the bound, or over the day's budget, is dropped and counted (:attr:`ShadowRunner.counts`).

A shadow call is one call of the shadow strategy with the same messages and caller fields: no
retry, escalation or fallback (its outcome must be that strategy's). Its record is a normal ledger
record with ``metadata.shadow_of`` = the original request id, ``metadata.shadow = true``, request id
``<original>:shadow``, and the propensity of :func:`triage.policies.shadow.observed_propensity`. The
policy's grader grades it when the request had a gold. Failures are recorded (and counted), never raised.

Budget: the spend of finished shadow calls, per UTC day, **in this process** (several workers or
sidecar replicas each spend up to the cap). A call is started only while the day's spend is under
the cap, so the cap can be passed by the calls already running (at most ``max_concurrency``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from triage.logging import get_logger
from triage.policies.decide import action_distribution
from triage.policies.policy import Policy
from triage.policies.pricing import import_litellm
from triage.policies.shadow import choose_shadow, observed_propensity, shadow_pool
from triage.router.core.calls import Attempt, Step, build_kwargs, cost_of, finish_reason_of, usage_of
from triage.router.core.grading import answer_text
from triage.router.core.receipt import awrite_record, ledger_record, write_record
from triage.router.core.routed import Routed
from triage.router.providers import openai_direct
from triage.router.providers.openai_direct import uses_direct

log = get_logger("triage.shadow")

SHADOW_SUFFIX = ":shadow"
_NOT_FORWARDED = ("stream", "stream_options", "metadata")  # a shadow is one non-streamed call; gold is in the record


@dataclass
class ShadowJob:
    """What one shadow call needs (copied from the primary request before it is handed over)."""

    policy: Policy
    routed: Routed  # the primary's, with the shadow strategy's decision
    request_id: str  # the shadow record's id
    shadow_of: str
    strategy: str
    choice_propensity: float
    caller: dict[str, Any]
    ledger_fields: dict[str, Any]
    store_prompts: bool
    grading: Any


@dataclass
class _Answered:
    """Enough of an execution for :func:`answer_text` and the grader."""

    routed: Routed
    final_response: Any
    error: BaseException | None = None
    text: str = ""


def shadow_routed(policy: Policy, primary: Routed, strategy: str) -> Routed:
    """The primary request's routing with the decision of its shadow ``strategy``.

    The shadow is one call of that strategy at the primary's tier (no cascade); ``propensity`` is
    ``P(strategy observed | x)`` (:func:`triage.policies.shadow.observed_propensity`) and
    ``candidates`` the strategies that could have shadowed. Shared by the router's shadow calls and
    the bandit simulator (:mod:`triage.eval.simulate`), so both log the same record."""
    d = primary.decision
    s = policy.strategies[strategy]
    observed = observed_propensity(policy, action_distribution(policy, primary.probe_output), strategy)
    decision = d.model_copy(update={
        "strategy": strategy, "model": s.model, "candidate": s.candidate, "cascade": None,
        "max_tokens": policy.max_tokens_for(strategy, d.tier), "temperature": s.temperature,
        "reasoning_effort": policy.reasoning_effort_for(strategy, d.tier),
        "expected_cost_usd": policy.expected_cost_usd(strategy, d.tier), "explored": True,
        "propensity": observed, "observed_propensity": observed,
        "candidates": [n for n in shadow_pool(policy) if n != d.strategy]})
    return dataclasses.replace(primary, decision=decision)


def shadow_ledger_fields(policy: Policy, shadow_of: str, primary_fields: dict[str, Any] | None,
                         choice_propensity: float, primary_strategy: str) -> dict[str, Any]:
    """Ledger fields of a shadow record: the primary's (tenant, time...), its metadata cut to what
    grading and reports read (gold, task), and the link to the primary."""
    assert policy.shadow is not None
    fields = {k: v for k, v in (primary_fields or {}).items() if k != "metadata"}
    meta = {k: v for k, v in dict((primary_fields or {}).get("metadata") or {}).items() if k in ("gold", "task")}
    fields["metadata"] = {**meta, "shadow": True, "shadow_of": shadow_of, "shadow_choice_propensity": choice_propensity,
                          "shadow_rate": policy.shadow.rate, "primary_strategy": primary_strategy}
    return fields


class DailyBudget:
    """USD spent per UTC day in this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._day = ""
        self.spent = 0.0

    def _today(self) -> None:
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        if day != self._day:  # UTC midnight: a new day's budget
            self._day, self.spent = day, 0.0

    def has_room(self, cap: float) -> bool:
        with self._lock:
            self._today()
            return self.spent < cap

    def add(self, usd: float | None) -> None:
        with self._lock:
            self._today()
            self.spent += usd or 0.0


class ShadowRunner:
    """The shadow calls of one router (see the module docstring)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.budget = DailyBudget()
        self._lock = threading.Lock()
        self._pending = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = threading.Condition(self._lock)
        self._sems: weakref.WeakKeyDictionary[Any, tuple[int, asyncio.Semaphore]] = weakref.WeakKeyDictionary()

    # -- choosing and admitting -----------------------------------------------------------------

    def job(self, ex: Any, record: Any, grading: Any) -> ShadowJob | None:
        """The shadow job of an answered request, or None (not sampled, no budget, queue full)."""
        policy: Policy = ex.policy
        sh = policy.shadow
        if sh is None or record.error is not None or record.metadata.get("client_disconnected"):
            return None
        chosen = choose_shadow(policy, ex.request_id, ex.routed.decision.strategy)
        if chosen is None:
            return None
        name, q = chosen
        self.counts["sampled"] += 1
        if not self.budget.has_room(sh.max_cost_usd_per_day):
            self._drop("dropped_budget", ex.request_id)
            return None
        with self._lock:
            if self._pending >= sh.max_concurrency + sh.max_queue:
                self._drop("dropped_queue_full", ex.request_id)
                return None
            self._pending += 1
        routed = shadow_routed(policy, ex.routed, name)
        fields = shadow_ledger_fields(policy, ex.request_id, ex.ledger_fields, q, record.strategy)
        return ShadowJob(policy=policy, routed=routed,
                         request_id=ex.request_id + SHADOW_SUFFIX, shadow_of=ex.request_id, strategy=name,
                         choice_propensity=q, caller={k: v for k, v in ex.caller.items() if k not in _NOT_FORWARDED},
                         ledger_fields=fields, store_prompts=ex.store_prompts, grading=grading)

    def _drop(self, why: str, request_id: str) -> None:
        self.counts[why] += 1
        log.info("shadow_dropped", request_id=request_id, reason=why)

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1
            self._idle.notify_all()

    # -- sync: a thread pool --------------------------------------------------------------------

    def submit(self, ex: Any, record: Any, ledger: Any, grading: Any = None) -> None:
        """Enqueue the shadow of an answered request (returns at once; never raises)."""
        try:
            job = self.job(ex, record, grading)
        except Exception as exc:  # noqa: BLE001 - a shadow never fails the caller's request
            self._failed(ex.request_id, exc)
            return
        if job is None:
            return
        size = job.policy.shadow.max_concurrency if job.policy.shadow else 1
        with self._lock:
            if self._pool is None or self._pool_size != size:
                old, self._pool, self._pool_size = self._pool, ThreadPoolExecutor(size, "triage-shadow"), size
                if old is not None:
                    old.shutdown(wait=False)
            pool = self._pool
        pool.submit(self._run, job, ledger)

    def _run(self, job: ShadowJob, ledger: Any) -> None:
        try:
            t0 = time.perf_counter()
            kwargs, api = self._kwargs(job)
            try:
                response, error = api.completion(**kwargs), None
            except Exception as exc:  # noqa: BLE001 - recorded as the shadow's failure
                response, error = None, exc
            record, answered = self._record(job, response, error, t0)
            if ledger is not None:
                write_record(ledger, record)
                if job.grading is not None and error is None:
                    job.grading._grade(answered, record, ledger)
        except Exception as exc:  # noqa: BLE001
            self._failed(job.shadow_of, exc)
        finally:
            self._done()

    # -- async: tasks on the caller's loop ------------------------------------------------------

    def asubmit(self, ex: Any, record: Any, ledger: Any, grading: Any = None) -> None:
        """Async :meth:`submit`: the shadow runs as a task on the running event loop."""
        try:
            job = self.job(ex, record, grading)
        except Exception as exc:  # noqa: BLE001
            self._failed(ex.request_id, exc)
            return
        if job is None:
            return
        sh = job.policy.shadow
        task = asyncio.get_running_loop().create_task(self._arun(job, ledger, sh.max_concurrency if sh else 1))
        self._tasks.add(task)  # a reference, or the task may be collected mid-call
        task.add_done_callback(self._tasks.discard)

    async def _arun(self, job: ShadowJob, ledger: Any, limit: int) -> None:
        try:
            async with self._limit(limit):
                t0 = time.perf_counter()
                kwargs, api = self._kwargs(job)
                try:
                    response, error = await api.acompletion(**kwargs), None
                except Exception as exc:  # noqa: BLE001
                    response, error = None, exc
                record, answered = self._record(job, response, error, t0)
                if ledger is not None:
                    await awrite_record(ledger, record)
                    if job.grading is not None and error is None:
                        await asyncio.to_thread(job.grading._grade, answered, record, ledger)
        except Exception as exc:  # noqa: BLE001
            self._failed(job.shadow_of, exc)
        finally:
            self._done()

    # -- the call and its record ----------------------------------------------------------------

    @staticmethod
    def _kwargs(job: ShadowJob) -> tuple[dict[str, Any], Any]:
        strategy = job.policy.strategies[job.strategy]
        d = job.routed.decision
        step = Step(job.strategy, "primary", d.max_tokens, d.reasoning_effort,
                    deployment=0 if strategy.deployments else None)
        kwargs = build_kwargs(strategy, step, job.routed.messages, job.caller)
        return kwargs, (openai_direct if uses_direct(strategy) else import_litellm())

    def _record(self, job: ShadowJob, response: Any, error: BaseException | None, t0: float) -> tuple[Any, _Answered]:
        strategy = job.policy.strategies[job.strategy]
        usage = getattr(response, "usage", None) if response is not None else None
        a = Attempt(strategy=job.strategy, model=strategy.model, reason="primary",
                    max_tokens=job.routed.decision.max_tokens, latency_s=time.perf_counter() - t0)
        a.prompt_tokens, a.completion_tokens, a.reasoning_tokens = usage_of(usage)
        a.finish_reason = finish_reason_of(response) if response is not None else None
        a.truncated = a.finish_reason == "length"
        a.cost_usd = cost_of(strategy, a.prompt_tokens, a.completion_tokens, None)
        if error is not None:
            text = str(error).strip()
            a.error = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        self.budget.add(a.cost_usd)
        answered = _Answered(job.routed, response, error)
        fields = job.ledger_fields
        answer = answer_text(answered) if job.store_prompts else None
        if answer is not None:  # kept with the prompt, for graders, as a primary record keeps it
            fields = {**fields, "metadata": {**fields["metadata"], "answer": answer}}
        record = ledger_record(job.routed, [a], request_id=job.request_id, latency_s=a.latency_s,
                               ledger_fields=fields, store_prompts=job.store_prompts, error=error)
        self.counts["failed" if error is not None else "recorded"] += 1
        log.info("shadow_recorded", request_id=job.request_id, shadow_of=job.shadow_of, strategy=job.strategy,
                 cost_usd=a.cost_usd, error=a.error)
        return record, answered

    def _failed(self, request_id: str, exc: BaseException) -> None:
        self.counts["failed"] += 1
        text = str(exc).strip()
        log.warning("shadow_failed", request_id=request_id,
                    error=f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")

    def _limit(self, n: int) -> asyncio.Semaphore:
        """One semaphore per event loop: at most ``n`` shadow calls run at once on a loop."""
        loop = asyncio.get_running_loop()
        held = self._sems.get(loop)
        if held is None or held[0] != n:  # first use on this loop, or max_concurrency changed by a reload
            held = self._sems[loop] = (n, asyncio.Semaphore(n))
        return held[1]

    # -- waiting ----------------------------------------------------------------------------------

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until no shadow call is pending (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    async def adrain(self, timeout: float = 30.0) -> bool:
        """Async :meth:`drain` (lets this loop's shadow tasks run while waiting)."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return await asyncio.to_thread(self.drain, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Let running shadow calls finish (up to ``timeout``), then stop the pool."""
        self.drain(timeout)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


