"""The routing core: probe -> decide -> call through litellm -> record.

>>> router = Router.from_file("policies/examples/local.yaml")
>>> router.route([{"role": "user", "content": "What is 2 + 2?"}]).strategy
'terse'
>>> response = router.completion(messages=[{"role": "user", "content": "What is 2 + 2?"}])
>>> response._hidden_params["triage"]["decision"]["tier"]
'easy'

``completion`` / ``acompletion`` return litellm's ``ModelResponse`` (or, with ``stream=True``, an
iterator of litellm chunks); what Triage did is attached as ``response._hidden_params["triage"]``
(see :func:`router.core.receipt.triage_info` for the keys).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.decide import Decision, decide
from policies.loader import load_policy
from policies.policy import Policy
from policies.pricing import import_litellm
from probes.types import ProbeOutput
from router.core.calls import (
    Attempt,
    Step,
    build_kwargs,
    cost_of,
    finish_reason_of,
    is_provider_error,
    usage_of,
)
from router.core.messages import normalize_messages, probe_text
from router.core.plan import CallPlan
from router.core.probing import ProbeLike, ProbeRunner
from router.core.receipt import LedgerLike, record_call, triage_info
from router.logging import get_logger

log = get_logger("triage.router")


@dataclass(frozen=True)
class Routed:
    """A decision with what produced it (kept for the ledger)."""

    decision: Decision
    probe_output: ProbeOutput
    messages: list[dict[str, Any]]
    decision_latency_s: float
    self_probe: bool = False


class Router:
    """Routes chat requests with one policy. Thread-safe; one instance serves many requests.

    The probe is loaded on first use (or by :meth:`warm`). ``ledger``, when given, receives one
    record per routed call, committed before the answer is returned: a ledger URL or path (opened
    with :func:`router.ledger.open_ledger` behind a :class:`~router.ledger.LedgerWriter`, closed by
    :meth:`close`), a ``LedgerWriter``, or a ``LedgerStore``.
    """

    def __init__(self, policy: Policy, *, probe: ProbeLike | None = None,
                 ledger: LedgerLike | str | Path | None = None, policy_path: str | Path | None = None,
                 store_prompts: bool = False) -> None:
        self.policy = policy
        self.policy_path = str(policy_path) if policy_path is not None else None
        self.store_prompts = store_prompts
        self._owned_ledger: Any = None
        if isinstance(ledger, str | Path):
            from router.ledger import LedgerWriter, open_ledger

            self._owned_ledger = open_ledger(str(ledger))
            ledger = LedgerWriter(self._owned_ledger, store_prompts=store_prompts)
        self.ledger = ledger
        self._probe = ProbeRunner(policy, self.policy_path, probe)
        self._providers_ready = False

    @classmethod
    def from_file(cls, path: str | Path | None = None, **kwargs: Any) -> "Router":
        """A router for the policy file at ``path`` (default: ``policies/examples/local.yaml``)."""
        from policies.loader import DEFAULT_POLICY

        p = Path(path) if path is not None else DEFAULT_POLICY
        return cls(load_policy(p), policy_path=p, **kwargs)

    # -- deciding ---------------------------------------------------------------------------------

    @property
    def probe(self) -> ProbeLike:
        return self._probe.probe

    def warm(self) -> "Router":
        """Load the probe (and register the local provider) now rather than on the first request."""
        _ = self.probe
        self._ensure_providers()
        return self

    def route_detailed(self, messages: Any) -> Routed:
        msgs = normalize_messages(messages)
        t0 = time.perf_counter()
        out = self._probe.predict(probe_text(msgs))
        decision = decide(self.policy, out)
        return Routed(decision, out, msgs, time.perf_counter() - t0, self._probe.is_self_probe())

    def route(self, messages: Any) -> Decision:
        """The decision for ``messages`` without calling any model."""
        return self.route_detailed(messages).decision

    # -- calling ----------------------------------------------------------------------------------

    def _ensure_providers(self) -> None:
        if self._providers_ready:
            return
        import_litellm()
        if self.policy.local_models():
            from router.providers.local import register_local_provider

            register_local_provider()
        if any(s.is_token_routed for s in self.policy.strategies.values()):
            from router.providers.token_routed import register_token_routed_provider

            register_token_routed_provider()
        self._providers_ready = True

    def _kwargs(self, step: Step, routed: Routed, caller: dict[str, Any]) -> dict[str, Any]:
        return build_kwargs(self.policy.strategies[step.strategy], step, routed.messages, caller)

    def _attempt(self, step: Step, response: Any, exc: BaseException | None, latency: float) -> Attempt:
        strategy = self.policy.strategies[step.strategy]
        attempt = Attempt(strategy=step.strategy, model=strategy.model, reason=step.reason,
                          max_tokens=step.max_tokens, latency_s=latency)
        if exc is not None:
            attempt.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            return attempt
        pt, ct, rt = usage_of(getattr(response, "usage", None))
        attempt.prompt_tokens, attempt.completion_tokens, attempt.reasoning_tokens = pt, ct, rt
        attempt.finish_reason = finish_reason_of(response)
        attempt.truncated = attempt.finish_reason == "length"
        hidden = getattr(response, "_hidden_params", None) or {}
        attempt.cost_usd = cost_of(strategy, pt, ct, hidden)
        if "token_routing" in hidden:  # tokens written by each model of a token-routed pair
            tr = hidden["token_routing"]
            attempt.extra["token_routing"] = {k: tr[k] for k in ("small_model", "large_model", "small_tokens",
                                                                 "large_tokens")}
        return attempt

    def execute(self, routed: Routed, *, request_id: str | None = None,
                ledger_fields: dict[str, Any] | None = None, started: float | None = None,
                **kwargs: Any) -> Any:
        """Run a decided request (non-streaming): calls, escalations, retries, fallback, record."""
        self._ensure_providers()
        litellm = import_litellm()
        request_id = request_id or uuid.uuid4().hex
        started = time.perf_counter() if started is None else started
        plan = CallPlan(self.policy, routed.decision, request_id)
        step: Step | None = plan.first()
        response = None
        try:
            while step is not None:
                t0 = time.perf_counter()
                try:
                    response = litellm.completion(**self._kwargs(step, routed, kwargs))
                    exc = None
                except Exception as e:  # noqa: BLE001 - classified just below
                    if not is_provider_error(e):
                        raise
                    response, exc = None, e
                attempt = self._attempt(step, response, exc, time.perf_counter() - t0)
                plan.attempts.append(attempt)
                step = plan.failed(step, attempt, exc) if exc is not None else plan.succeeded(step, attempt, response)
        except Exception as exc:
            self._record(routed, plan.attempts, request_id, started, ledger_fields, error=exc)
            raise
        info = triage_info(routed, plan.attempts, request_id, time.perf_counter() - started)
        response._hidden_params["triage"] = info
        self._record(routed, plan.attempts, request_id, started, ledger_fields)
        return response

    async def aexecute(self, routed: Routed, *, request_id: str | None = None,
                       ledger_fields: dict[str, Any] | None = None, started: float | None = None,
                       **kwargs: Any) -> Any:
        """Async :meth:`execute`."""
        self._ensure_providers()
        litellm = import_litellm()
        request_id = request_id or uuid.uuid4().hex
        started = time.perf_counter() if started is None else started
        plan = CallPlan(self.policy, routed.decision, request_id)
        step: Step | None = plan.first()
        response = None
        try:
            while step is not None:
                t0 = time.perf_counter()
                try:
                    response = await litellm.acompletion(**self._kwargs(step, routed, kwargs))
                    exc = None
                except Exception as e:  # noqa: BLE001
                    if not is_provider_error(e):
                        raise
                    response, exc = None, e
                attempt = self._attempt(step, response, exc, time.perf_counter() - t0)
                plan.attempts.append(attempt)
                step = plan.failed(step, attempt, exc) if exc is not None else plan.succeeded(step, attempt, response)
        except Exception as exc:
            await asyncio.to_thread(self._record, routed, plan.attempts, request_id, started, ledger_fields, exc)
            raise
        info = triage_info(routed, plan.attempts, request_id, time.perf_counter() - started)
        response._hidden_params["triage"] = info
        await asyncio.to_thread(self._record, routed, plan.attempts, request_id, started, ledger_fields)
        return response

    def completion(self, messages: Any = None, *, stream: bool = False, request_id: str | None = None,
                   ledger_fields: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Route and answer ``messages``; litellm-style (extra keyword arguments go to litellm).

        ``stream=True`` returns a :class:`router.core.streaming.TriageStream` (an iterator of litellm
        chunks). ``ledger_fields`` (tenant, api_key_id, metadata) go into the ledger record.
        """
        kwargs.pop("model", None)  # the policy picks the model
        started = time.perf_counter()
        routed = self.route_detailed(messages)
        if stream:
            from router.core.streaming import open_stream

            return open_stream(self, routed, request_id=request_id or uuid.uuid4().hex,
                               ledger_fields=ledger_fields, started=started, caller=kwargs)
        return self.execute(routed, request_id=request_id, ledger_fields=ledger_fields, started=started, **kwargs)

    async def acompletion(self, messages: Any = None, *, stream: bool = False, request_id: str | None = None,
                          ledger_fields: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Async :meth:`completion`; ``stream=True`` returns an async iterator of litellm chunks."""
        kwargs.pop("model", None)
        started = time.perf_counter()
        routed = await asyncio.to_thread(self.route_detailed, messages)
        if stream:
            from router.core.streaming import aopen_stream

            return await aopen_stream(self, routed, request_id=request_id or uuid.uuid4().hex,
                                      ledger_fields=ledger_fields, started=started, caller=kwargs)
        return await self.aexecute(routed, request_id=request_id, ledger_fields=ledger_fields,
                                   started=started, **kwargs)

    # -- recording --------------------------------------------------------------------------------

    def feedback(self, request_id: str, score: float, *, source: str = "user") -> Any:
        """Attach an outcome (score in 0..1) to a routed request in the ledger."""
        if self.ledger is None or not hasattr(self.ledger, "feedback"):
            from router.errors import TriageError

            raise TriageError("this router has no ledger writer to attach feedback to (pass ledger=URL)")
        return self.ledger.feedback(request_id, score, source=source)

    def close(self) -> None:
        """Flush and close a ledger this router opened itself."""
        if self._owned_ledger is not None:
            self.ledger.close()
            self._owned_ledger.close()
            self._owned_ledger = None

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, routed: Routed, attempts: list[Attempt], request_id: str, started: float,
                ledger_fields: dict[str, Any] | None, error: BaseException | None = None) -> None:
        log.debug("routed", request_id=request_id, policy=self.policy.name, tier=routed.decision.tier,
                 strategy=attempts[-1].strategy if attempts else routed.decision.strategy,
                 attempts=len(attempts), error=type(error).__name__ if error else None)
        if self.ledger is None:
            return
        record_call(self.ledger, routed, attempts, request_id=request_id,
                    latency_s=time.perf_counter() - started, ledger_fields=ledger_fields,
                    store_prompts=self.store_prompts, error=error)
