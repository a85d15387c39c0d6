"""Streaming: ``router.completion(..., stream=True)`` returns an iterator of litellm chunks.

How the call plan applies to a stream:

* provider failure before the first chunk -> the policy's fallback streams instead (a failure after
  text has reached the caller raises :class:`TriageProviderError`: the text cannot be taken back);
* cascade -> the cheap step runs without streaming (its whole answer is needed to judge its
  uncertainty); an accepted answer is then replayed as chunks, an escalation is streamed;
* truncation -> recorded, and the streamed answer is kept (``on_truncation`` retry/escalate apply to
  non-streaming calls only, since the truncated text has already been delivered).

The receipt (``stream.triage``, also set as ``chunk._hidden_params["triage"]`` on every chunk) is
filled in when the stream ends; the ledger record is written then.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from policies.pricing import import_litellm
from router.core.calls import Attempt, Step, cost_of, is_provider_error, message_text, provider_error, usage_of
from router.core.plan import CallPlan
from router.core.receipt import triage_info

if TYPE_CHECKING:
    from router.core.router import Routed, Router


def _stream_kwargs(router: "Router", step: Step, routed: "Routed", caller: dict[str, Any]) -> dict[str, Any]:
    kwargs = router._kwargs(step, routed, caller)
    kwargs["stream"] = True
    opts = dict(kwargs.get("stream_options") or {})
    opts.setdefault("include_usage", True)
    kwargs["stream_options"] = opts
    return kwargs


def _chunks_from_response(response: Any) -> list[Any]:
    """A finished answer as two litellm stream chunks (text, then finish reason and usage)."""
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

    choice = response.choices[0]
    text = message_text(response)
    first = ModelResponseStream(id=response.id, model=response.model, created=response.created,
                                choices=[StreamingChoices(index=0, delta=Delta(content=text, role="assistant"))])
    last = ModelResponseStream(id=response.id, model=response.model, created=response.created,
                               choices=[StreamingChoices(index=0, delta=Delta(), finish_reason=choice.finish_reason)])
    if getattr(response, "usage", None) is not None:
        last.usage = response.usage
    return [first, last]


class _StreamState:
    """What both stream flavours share: the plan, the chunks seen, the receipt."""

    def __init__(self, router: "Router", routed: "Routed", plan: CallPlan, step: Step, request_id: str,
                 ledger_fields: dict[str, Any] | None, started: float) -> None:
        self.router = router
        self.routed = routed
        self.plan = plan
        self.step = step
        self.request_id = request_id
        self.ledger_fields = ledger_fields
        self.started = started
        self.step_started = time.perf_counter()
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.pieces: list[str] = []
        self.finished = False
        self.triage: dict[str, Any] = triage_info(routed, plan.attempts, request_id, 0.0)

    def see(self, chunk: Any) -> Any:
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None) if delta is not None else None
            if content:
                self.pieces.append(content)
            if getattr(choice, "finish_reason", None):
                self.finish_reason = choice.finish_reason
        hidden = getattr(chunk, "_hidden_params", None)
        if isinstance(hidden, dict):
            hidden["triage"] = self.triage
        return chunk

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def attempt(self, error: BaseException | None = None) -> Attempt:
        strategy = self.router.policy.strategies[self.step.strategy]
        a = Attempt(strategy=self.step.strategy, model=strategy.model, reason=self.step.reason,
                    max_tokens=self.step.max_tokens, latency_s=time.perf_counter() - self.step_started)
        a.prompt_tokens, a.completion_tokens, a.reasoning_tokens = usage_of(self.usage)
        a.finish_reason = self.finish_reason
        a.truncated = self.finish_reason == "length"
        a.cost_usd = cost_of(strategy, a.prompt_tokens, a.completion_tokens)
        if error is not None:
            a.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return a

    def finish(self, error: BaseException | None = None) -> BaseException | None:
        """Close the books once; returns the exception to raise (a TriageProviderError) if any."""
        if self.finished:
            return None
        self.finished = True
        self.plan.attempts.append(self.attempt(error))
        raised: BaseException | None = None
        if error is not None and is_provider_error(error):
            strategy = self.router.policy.strategies[self.step.strategy]
            raised = provider_error(error, strategy, self.plan.attempts, " (mid-stream)", self.request_id)
        elif error is not None:
            raised = error
        self.triage.clear()
        self.triage.update(triage_info(self.routed, self.plan.attempts, self.request_id,
                                       time.perf_counter() - self.started))
        self.router._record(self.routed, self.plan.attempts, self.request_id, self.started,
                            self.ledger_fields, error=raised)
        return raised


class TriageStream(Iterator[Any]):
    """Iterator of litellm ``ModelResponseStream`` chunks; ``.triage`` is the receipt."""

    def __init__(self, state: _StreamState, inner: Iterator[Any], first: list[Any]) -> None:
        self._state = state
        self._inner = inner
        self._buffer = list(first)

    @property
    def triage(self) -> dict[str, Any]:
        return self._state.triage

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return self._state.text

    def __iter__(self) -> "TriageStream":
        return self

    def __next__(self) -> Any:
        if self._buffer:
            return self._state.see(self._buffer.pop(0))
        try:
            chunk = next(self._inner)
        except StopIteration:
            self._state.finish()
            raise
        except Exception as exc:  # noqa: BLE001 - classified in finish()
            raised = self._state.finish(exc)
            if raised is exc:
                raise
            raise raised from exc  # type: ignore[misc]
        return self._state.see(chunk)

    def close(self) -> None:
        """Stop early (the caller is gone): the partial answer is recorded."""
        closer = getattr(self._inner, "close", None)
        if callable(closer):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort on a stream being abandoned
                pass
        self._state.finish()


class AsyncTriageStream(AsyncIterator[Any]):
    """Async iterator of litellm chunks; ``.triage`` is the receipt."""

    def __init__(self, state: _StreamState, inner: Any, first: list[Any]) -> None:
        self._state = state
        self._inner = inner
        self._buffer = list(first)

    @property
    def triage(self) -> dict[str, Any]:
        return self._state.triage

    @property
    def text(self) -> str:
        return self._state.text

    def __aiter__(self) -> "AsyncTriageStream":
        return self

    async def __anext__(self) -> Any:
        import asyncio

        if self._buffer:
            return self._state.see(self._buffer.pop(0))
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            await asyncio.to_thread(self._state.finish)
            raise
        except Exception as exc:  # noqa: BLE001
            raised = await asyncio.to_thread(self._state.finish, exc)
            if raised is exc:
                raise
            raise raised from exc  # type: ignore[misc]
        return self._state.see(chunk)

    async def aclose(self) -> None:
        import asyncio

        closer = getattr(self._inner, "aclose", None)
        if callable(closer):
            try:
                await closer()
            except Exception:  # noqa: BLE001
                pass
        await asyncio.to_thread(self._state.finish)


class _ListIterator:
    """An exhausted-after-use iterator over ready chunks, usable sync and async."""

    def __init__(self, chunks: list[Any]) -> None:
        self._it = iter(chunks)

    def __iter__(self) -> "_ListIterator":
        return self

    def __next__(self) -> Any:
        return next(self._it)

    async def __anext__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None


def open_stream(router: "Router", routed: "Routed", *, request_id: str, ledger_fields: dict[str, Any] | None,
                started: float, caller: dict[str, Any]) -> TriageStream:
    router._ensure_providers()
    litellm = import_litellm()
    plan = CallPlan(router.policy, routed.decision, request_id)
    step: Step | None = plan.first()
    assert step is not None
    if routed.decision.cascade is not None:
        # The cheap step is judged on its whole answer, so it is not streamed.
        while step is not None and step.reason != "escalation":
            t0 = time.perf_counter()
            try:
                response = litellm.completion(**router._kwargs(step, routed, caller))
            except Exception as exc:  # noqa: BLE001
                if not is_provider_error(exc):
                    raise
                attempt = router._attempt(step, None, exc, time.perf_counter() - t0)
                plan.attempts.append(attempt)
                try:
                    step = plan.failed(step, attempt, exc)
                except Exception as err:
                    router._record(routed, plan.attempts, request_id, started, ledger_fields, error=err)
                    raise
                continue
            attempt = router._attempt(step, response, None, time.perf_counter() - t0)
            plan.attempts.append(attempt)
            nxt = plan.succeeded(step, attempt, response)
            if nxt is None or nxt.reason != "escalation":
                # Accepted (a retry of the cheap step is not worth a second wait here): replay it.
                state = _StreamState(router, routed, plan, step, request_id, ledger_fields, started)
                state.finished = True
                state.triage.update(triage_info(routed, plan.attempts, request_id, time.perf_counter() - started))
                router._record(routed, plan.attempts, request_id, started, ledger_fields)
                return TriageStream(state, _ListIterator([]), _chunks_from_response(response))
            step = nxt
    while True:
        state = _StreamState(router, routed, plan, step, request_id, ledger_fields, started)
        try:
            inner = litellm.completion(**_stream_kwargs(router, step, routed, caller))
            first = [next(inner)]
        except StopIteration:
            inner, first = _ListIterator([]), []
        except Exception as exc:  # noqa: BLE001
            if not is_provider_error(exc):
                raise
            attempt = state.attempt(exc)
            plan.attempts.append(attempt)
            try:
                step = plan.failed(step, attempt, exc)
            except Exception as err:
                router._record(routed, plan.attempts, request_id, started, ledger_fields, error=err)
                raise
            continue
        return TriageStream(state, inner, first)


async def aopen_stream(router: "Router", routed: "Routed", *, request_id: str,
                       ledger_fields: dict[str, Any] | None, started: float,
                       caller: dict[str, Any]) -> AsyncTriageStream:
    import asyncio

    router._ensure_providers()
    litellm = import_litellm()
    plan = CallPlan(router.policy, routed.decision, request_id)
    step: Step | None = plan.first()
    assert step is not None
    if routed.decision.cascade is not None:
        while step is not None and step.reason != "escalation":
            t0 = time.perf_counter()
            try:
                response = await litellm.acompletion(**router._kwargs(step, routed, caller))
            except Exception as exc:  # noqa: BLE001
                if not is_provider_error(exc):
                    raise
                attempt = router._attempt(step, None, exc, time.perf_counter() - t0)
                plan.attempts.append(attempt)
                try:
                    step = plan.failed(step, attempt, exc)
                except Exception as err:
                    await asyncio.to_thread(router._record, routed, plan.attempts, request_id, started,
                                            ledger_fields, err)
                    raise
                continue
            attempt = router._attempt(step, response, None, time.perf_counter() - t0)
            plan.attempts.append(attempt)
            nxt = plan.succeeded(step, attempt, response)
            if nxt is None or nxt.reason != "escalation":
                state = _StreamState(router, routed, plan, step, request_id, ledger_fields, started)
                state.finished = True
                state.triage.update(triage_info(routed, plan.attempts, request_id, time.perf_counter() - started))
                await asyncio.to_thread(router._record, routed, plan.attempts, request_id, started, ledger_fields)
                return AsyncTriageStream(state, _ListIterator([]), _chunks_from_response(response))
            step = nxt
    while True:
        state = _StreamState(router, routed, plan, step, request_id, ledger_fields, started)
        try:
            inner = await litellm.acompletion(**_stream_kwargs(router, step, routed, caller))
            first = [await inner.__anext__()]
        except StopAsyncIteration:
            inner, first = _ListIterator([]), []
        except Exception as exc:  # noqa: BLE001
            if not is_provider_error(exc):
                raise
            attempt = state.attempt(exc)
            plan.attempts.append(attempt)
            try:
                step = plan.failed(step, attempt, exc)
            except Exception as err:
                await asyncio.to_thread(router._record, routed, plan.attempts, request_id, started,
                                        ledger_fields, err)
                raise
            continue
        return AsyncTriageStream(state, inner, first)
