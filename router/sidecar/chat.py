"""Answering ``POST /v1/chat/completions``: route, call through the router, stream or not.

The router does the policy's work (escalation, retry, the fallback strategy on a provider failure)
and writes the ledger record before returning, so by the time a response body leaves here its
record is committed. What is left to the sidecar: which caller fields may reach the upstream,
turning litellm objects into OpenAI JSON / SSE, and stopping the upstream when a streaming
client goes away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from triage.router.core.errors import TriageProviderError
from triage.router.core.fields import UnsupportedFieldError, caller_fields
from triage.router.core.grading import gold_of
from triage.router.sidecar.errors import SidecarError, error_body, upstream_error
from triage.router.sidecar.openai_schema import ChatCompletionRequest


def upstream_kwargs(body: ChatCompletionRequest, timeout_s: float) -> dict[str, Any]:
    """The caller's fields to pass to the upstream call, or 400 naming one that is not accepted.

    Only OpenAI chat-completions fields (:mod:`triage.router.core.fields`, shared with the SDK) get through;
    ``store``/``metadata`` are dropped (``metadata.gold`` goes to the ledger record only, see
    :mod:`triage.router.core.grading`). Checked before routing, so a refused request calls nothing
    and records nothing.
    """
    try:
        passed = body.passthrough()
        kwargs = caller_fields(passed, internal=())
        if gold_of(passed.get("metadata")) is not None:  # metadata.gold: recorded, never forwarded
            kwargs["metadata"] = {"gold": passed["metadata"]["gold"]}
    except UnsupportedFieldError as exc:
        raise SidecarError(400, str(exc), code="unsupported_field", param=exc.field) from None
    kwargs["timeout"] = timeout_s  # the router takes the smaller of this and the strategy's
    return kwargs


def _strip_provider_fields(value: Any) -> Any:
    """Drop litellm's ``provider_specific_fields`` bookkeeping; OpenAI bodies do not have it."""
    if isinstance(value, dict):
        return {k: _strip_provider_fields(v) for k, v in value.items() if k != "provider_specific_fields"}
    if isinstance(value, list):
        return [_strip_provider_fields(v) for v in value]
    return value


def _dump(obj: Any) -> dict[str, Any]:
    data = obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else dict(obj)
    return _strip_provider_fields(data)


def completion_body(response: Any) -> bytes:
    """An OpenAI chat.completion JSON body from a litellm ModelResponse."""
    data = _dump(response)
    data.pop("_hidden_params", None)
    data.pop("_response_headers", None)
    data["object"] = "chat.completion"
    return json.dumps(data, default=str).encode()


def _chunk_bytes(chunk: Any, include_usage: bool) -> bytes:
    data = _dump(chunk)
    data.pop("_hidden_params", None)
    data["object"] = "chat.completion.chunk"
    if not include_usage:
        data.pop("usage", None)
    return b"data: " + json.dumps(data, default=str).encode() + b"\n\n"


class SSEResponse(StreamingResponse):
    """A streaming response that always closes its body iterator, even when the client vanished.

    Starlette cancels the response when the client disconnects; closing the generator here (shielded
    from that cancellation) runs its ``finally``, which closes the upstream stream.
    """

    media_type = "text/event-stream"
    # Awaited after the body iterator is closed: an iterator that never started (the client left
    # before the first chunk was asked for) has run no ``finally`` of its own.
    on_close: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            with anyio.CancelScope(shield=True):
                if closer is not None:
                    await closer()
                if self.on_close is not None:
                    await self.on_close()


async def _sse_events(stream: Any, include_usage: bool,
                      ledger_fields: dict[str, Any], on_done: Any) -> AsyncIterator[bytes]:
    completed = False
    try:
        async for chunk in stream:
            yield _chunk_bytes(chunk, include_usage)
        completed = True
        on_done(stream)
        yield b"data: [DONE]\n\n"
    except TriageProviderError as exc:
        # Text already reached the client, so no fallback can take over: say what happened in-band.
        completed = True
        on_done(stream)
        err = upstream_error(exc)
        yield b"data: " + json.dumps(error_body(err.message, err.type, err.code)).encode() + b"\n\n"
    finally:
        if not completed:
            # The client went away (or the server is stopping): stop the upstream generation and
            # record the partial answer as such.
            ledger_fields.setdefault("metadata", {})["client_disconnected"] = True
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        on_done(stream)  # closed: the receipt holds what the (partial) answer cost


async def stream_completion(target: Any, routed: Any, *, request_id: str, ledger_fields: dict[str, Any],
                            started: float, kwargs: dict[str, Any], include_usage: bool,
                            state: Any, on_done: Any) -> Response:
    """Open the upstream stream (fallback happens before the first chunk), then answer with SSE."""
    if include_usage:  # the router passes the usage-only final chunk on only when asked for
        kwargs = {**kwargs, "stream_options": {"include_usage": True}}
    try:
        stream = await target.router.aexecute(routed, request_id=request_id, ledger_fields=ledger_fields,
                                              started=started, stream=True, **kwargs)
    except TriageProviderError as exc:
        raise upstream_error(exc) from exc  # kept: its attempts say what was spent
    state.triage_strategy = stream.strategy
    settled = False

    def done(ended: Any) -> None:  # once, whichever end of the stream comes first
        nonlocal settled
        if not settled:
            settled = True
            on_done(ended)

    async def on_close() -> None:
        if not settled:  # the events never ran: close (and so record) the stream here
            ledger_fields.setdefault("metadata", {})["client_disconnected"] = True
            await stream.aclose()
            done(stream)

    response = SSEResponse(_sse_events(stream, include_usage, ledger_fields, done),
                           headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
    response.on_close = on_close
    return response


async def complete(target: Any, routed: Any, *, request_id: str, ledger_fields: dict[str, Any],
                   started: float, kwargs: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Non-streaming call; returns the JSON body and the router's receipt."""
    try:
        response = await target.router.aexecute(routed, request_id=request_id, ledger_fields=ledger_fields,
                                                started=started, **kwargs)
    except TriageProviderError as exc:
        raise upstream_error(exc) from exc  # kept: its attempts say what was spent
    info = dict((getattr(response, "_hidden_params", None) or {}).get("triage") or {})
    return completion_body(response), info
