"""One request from decision to ledger record: everything but the I/O.

An :class:`Execution` holds the call plan, builds each call's keyword arguments, turns what a call
returned (a response, a stream's chunks, or an exception) into an attempt, advances the plan, and
at the end fills the receipt and builds the ledger record. The four drivers - sync and async,
streamed and not (:mod:`triage.router.core.drivers`) - only make the calls and write the record, so the
receipt and the record are the same whichever way a request was made.

How the plan applies to a stream:

* a provider failure before the first chunk with an answer -> another deployment, or the next
  strategy of the fallback chain, streams instead
  (a failure after text has reached the caller raises :class:`TriageProviderError` mid-stream);
* the cheap step of a cascade runs without streaming (its whole answer is needed to judge its
  uncertainty); an accepted answer is replayed as chunks, an escalation is streamed;
* truncation -> recorded, and the streamed answer is kept (``on_truncation`` retry/escalate apply to
  non-streaming calls only: the truncated text has already been delivered).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from triage.policies.policy import Policy
from triage.router.core.calls import (
    Attempt,
    Step,
    build_kwargs,
    classify,
    cost_of,
    finish_reason_of,
    is_provider_error,
    provider_error,
    usage_of,
)
from triage.router.core.deployments import DeploymentPool, host_of
from triage.router.core.errors import EmptyUpstreamStreamError, TriageProviderError
from triage.router.core.grading import answer_text
from triage.router.core.plan import CallPlan
from triage.router.core.receipt import ledger_record, triage_info
from triage.router.core.routed import Routed
from triage.router.providers.openai_direct import uses_direct


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def chunk_choices(chunk: Any) -> list[Any]:
    return list(_get(chunk, "choices") or [])


def _provider_fields(chunk: Any) -> dict[str, Any]:
    """litellm puts a custom provider's ``provider_specific_fields`` on the chunk or on its delta."""
    found: dict[str, Any] = {}
    for holder in [chunk, *[_get(c, "delta") for c in chunk_choices(chunk)]]:
        fields = _get(holder, "provider_specific_fields")
        if isinstance(fields, dict):
            found.update(fields)
    return found


@dataclass
class StreamTally:
    """What one streamed call has delivered so far."""

    usage: Any = None
    finish_reason: str | None = None
    pieces: list[str] = field(default_factory=list)
    content_chunks: int = 0
    hidden: dict[str, Any] = field(default_factory=dict)

    def add(self, chunk: Any) -> None:
        usage = _get(chunk, "usage")
        if usage is not None:
            self.usage = usage
        for choice in chunk_choices(chunk):
            content = _get(_get(choice, "delta"), "content")
            if content:
                self.pieces.append(content)
                self.content_chunks += 1
            if _get(choice, "finish_reason"):
                self.finish_reason = _get(choice, "finish_reason")
        # A custom provider's per-call report (e.g. ``token_routing``): its strategy kind reads it.
        for key, value in _provider_fields(chunk).items():
            if isinstance(value, dict) and key != "response_cost":
                self.hidden[key] = value


class Execution:
    """The state of one routed request; drivers feed it what their calls return."""

    def __init__(self, policy: Policy, routed: Routed, *, request_id: str, started: float,
                 caller: dict[str, Any], ledger_fields: dict[str, Any] | None = None,
                 store_prompts: bool = False, stream: bool = False,
                 deployments: DeploymentPool | None = None) -> None:
        self.policy = policy
        self.routed = routed
        self.request_id = request_id
        self.started = started
        self.caller = caller
        self.ledger_fields = ledger_fields
        self.store_prompts = store_prompts
        self.stream = stream
        # The usage-only final chunk (no choices) goes to callers who asked for it, as OpenAI does.
        self.include_usage = bool(_get(caller.get("stream_options"), "include_usage"))
        self.plan = CallPlan(policy, routed.decision, request_id, deployments)
        self.step: Step | None = self.plan.first()
        self._streaming = routed.decision.cascade is None
        self._t0 = time.perf_counter()
        # The step begun last and the max_tokens its call was sent (the budget, or the caller's tighter cap).
        self._sent: tuple[Step | None, int | None] = (None, None)
        self.tally = StreamTally()
        self.direct = False  # whether the call begun last goes the direct path (set by begin())
        self.final_response: Any = None
        self.error: BaseException | None = None
        self.done = False
        # One dict for the whole request: a stream's chunks carry it before it is complete.
        self.receipt: dict[str, Any] = triage_info(routed, self.plan.attempts, request_id, 0.0)

    # -- what to call -----------------------------------------------------------------------------

    @property
    def attempts(self) -> list[Attempt]:
        return self.plan.attempts

    @property
    def strategy(self) -> str:
        """The strategy answering now (or that answered, once done)."""
        if self.done:
            return str(self.receipt.get("strategy") or self.routed.decision.strategy)
        return self.step.strategy if self.step is not None else self.routed.decision.strategy

    def streams_this_step(self) -> bool:
        """Whether the next call streams (a cascade's cheap step never does)."""
        assert self.step is not None
        return self.stream and (self._streaming or self.step.reason == "escalation")

    def begin(self) -> dict[str, Any]:
        """Start the next call: its keyword arguments."""
        assert self.step is not None and not self.done
        self._t0 = time.perf_counter()
        self.tally = StreamTally()
        strategy = self.policy.strategies[self.step.strategy]
        kwargs = build_kwargs(strategy, self.step, self.routed.messages, self.caller)
        self.direct = uses_direct(strategy)  # which path makes this call (triage.router.providers.openai_direct)
        self._sent = (self.step, kwargs.get("max_tokens"))
        if self.streams_this_step():
            self._streaming = True
            kwargs["stream"] = True
            # Triage always asks for usage (the ledger needs it); the caller sees it only on request.
            kwargs["stream_options"] = {**dict(kwargs.get("stream_options") or {}), "include_usage": True}
        else:
            kwargs.pop("stream_options", None)
        return kwargs

    # -- what came back ---------------------------------------------------------------------------

    def answered(self, response: Any) -> bool:
        """A non-streamed call answered; True when its answer is the final one."""
        assert self.step is not None
        attempt = self._attempt(usage=_get(response, "usage"), finish_reason=finish_reason_of(response),
                                hidden=getattr(response, "_hidden_params", None))
        self.plan.attempts.append(attempt)
        nxt = self.plan.succeeded(self.step, attempt, response)
        if self.stream and nxt is not None and nxt.reason != "escalation":
            nxt = None  # a streamed cascade's accepted cheap answer: a retry is not worth a second wait
        if nxt is None:
            self.final_response = response
            self._close()
            return True
        self.step = nxt
        return False

    def failed(self, exc: BaseException) -> BaseException | None:
        """A call raised before answering: None when the plan has another step, else what to raise
        (after the driver has written the record)."""
        assert self.step is not None
        attempt = self._attempt(error=exc)
        self.plan.attempts.append(attempt)
        if not is_provider_error(exc):
            return self._close(exc)
        try:
            self.step = self.plan.failed(self.step, attempt, exc)
        except TriageProviderError as err:
            return self._close(err)
        return None

    def see(self, chunk: Any) -> bool:
        """A streamed chunk: tally it, attach the receipt; whether the caller should get it."""
        self.tally.add(chunk)
        hidden = getattr(chunk, "_hidden_params", None)
        if isinstance(hidden, dict):
            hidden["triage"] = self.receipt
        return bool(chunk_choices(chunk)) or self.include_usage

    @staticmethod
    def has_answer(chunk: Any) -> bool:
        return bool(chunk_choices(chunk))

    @staticmethod
    def empty_stream() -> EmptyUpstreamStreamError:
        return EmptyUpstreamStreamError("the upstream stream ended without any choices")

    def stream_ended(self, error: BaseException | None = None) -> BaseException | None:
        """A stream finished, failed mid-way or was closed by the caller; returns what to raise."""
        if self.done:
            return None
        assert self.step is not None
        t = self.tally
        attempt = self._attempt(usage=t.usage, finish_reason=t.finish_reason, hidden=t.hidden, error=error,
                                sent_chunks=t.content_chunks)
        self.plan.attempts.append(attempt)
        raised: BaseException | None = None
        if error is None or is_provider_error(error):  # what the stream says about its deployment
            self.plan.deployment_outcome(self.step, None if error is None else classify(error)[0])
        if error is not None and is_provider_error(error):
            raised = provider_error(error, self.policy.strategies[self.step.strategy], self.plan.attempts,
                                    " (mid-stream)", self.request_id)
        elif error is not None:
            raised = error
        return self._close(raised)

    @property
    def text(self) -> str:
        return "".join(self.tally.pieces)

    # -- the books --------------------------------------------------------------------------------

    def _attempt(self, *, usage: Any = None, finish_reason: str | None = None, hidden: dict[str, Any] | None = None,
                 error: BaseException | None = None, sent_chunks: int = 0) -> Attempt:
        """The one place an attempt is built, whatever kind of call it was."""
        assert self.step is not None
        strategy = self.policy.strategies[self.step.strategy]
        a = Attempt(strategy=self.step.strategy, model=strategy.model, reason=self.step.reason,
                    max_tokens=self._sent[1] if self._sent[0] is self.step else self.step.max_tokens,
                    latency_s=time.perf_counter() - self._t0)
        if self.step.deployment is not None and strategy.deployments is not None:
            # Which endpoint was called: its index and host, never its URL's path or its key.
            dep = strategy.deployments[self.step.deployment]
            a.model = dep.model or strategy.model
            a.extra.update({"deployment": self.step.deployment, "api_base_host": host_of(dep)})
        a.prompt_tokens, a.completion_tokens, a.reasoning_tokens = usage_of(usage)
        if usage is None and sent_chunks:
            # A stream cut before its usage chunk: count what reached the caller (one token per
            # content chunk, as OpenAI-compatible servers stream) and say it is an estimate.
            a.completion_tokens = sent_chunks
            a.extra["usage_estimated"] = True
        a.finish_reason = finish_reason
        a.truncated = finish_reason == "length"
        a.cost_usd = cost_of(strategy, a.prompt_tokens, a.completion_tokens, hidden)
        a.extra.update(strategy.kind.attempt_extra(hidden or {}))  # per-attempt metadata of the kind
        if error is not None:
            text = str(error).strip()
            a.error = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        return a

    def _close(self, error: BaseException | None = None) -> BaseException | None:
        self.done = True
        self.error = error
        self.receipt.clear()
        self.receipt.update(triage_info(self.routed, self.plan.attempts, self.request_id,
                                        time.perf_counter() - self.started))
        if self.final_response is not None and isinstance(getattr(self.final_response, "_hidden_params", None), dict):
            self.final_response._hidden_params["triage"] = self.receipt
        return error

    def record(self) -> Any:
        """The ledger record of this request (call once it is done)."""
        fields = self.ledger_fields
        answer = answer_text(self) if self.store_prompts else None
        if answer is not None:  # kept with the prompt, for graders (triage.router.core.grading)
            fields = {**(fields or {}), "metadata": {**dict((fields or {}).get("metadata") or {}), "answer": answer}}
        return ledger_record(self.routed, self.plan.attempts, request_id=self.request_id,
                             latency_s=time.perf_counter() - self.started, ledger_fields=fields,
                             store_prompts=self.store_prompts, error=self.error)
