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

from router.core.errors import TriageProviderError
from router.core.streaming import aopen_stream
from router.sidecar.errors import SidecarError, error_body, upstream_error
from router.sidecar.openai_schema import ChatCompletionRequest

# Caller fields that would let a request redirect the upstream call, swap credentials, fake the
# answer or change litellm's own behaviour. They are refused (400), never forwarded.
_REFUSED = frozenset({
    "api_key", "api_base", "base_url", "api_version", "custom_llm_provider", "deployment_id",
    "organization", "headers", "extra_headers", "timeout", "num_retries", "max_retries", "client",
    "callbacks", "success_callback", "failure_callback", "logger_fn", "model_list", "caching",
    "cache", "input_cost_per_token", "output_cost_per_token", "region_name", "project", "location",
    "metadata_triage", "request_id", "ledger_fields", "started",
})
_REFUSED_PREFIXES = ("litellm_", "mock_", "aws_", "vertex_", "azure_", "api_", "proxy_")
# OpenAI's stored-completions fields: they would store tenants' data under the sidecar's upstream
# account (and litellm reads `metadata` for its own bookkeeping). Dropped.
_DROPPED = frozenset({"store", "metadata"})


def upstream_kwargs(body: ChatCompletionRequest, timeout_s: float) -> dict[str, Any]:
    """The caller's fields to pass to the upstream call, or 400 naming a refused one."""
    kwargs = body.passthrough()
    for key in list(kwargs):
        low = key.lower()
        if low in _REFUSED or low.startswith(_REFUSED_PREFIXES):
            raise SidecarError(400, f"field '{key}' is not accepted by the Triage sidecar "
                               "(upstream connections and credentials are configured in the policy)",
                               code="unsupported_field", param=key)
        if low in _DROPPED:
            del kwargs[key]
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True):
                    await closer()


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
        err = upstream_error(exc.kind, str(exc), exc.status_code)
        yield b"data: " + json.dumps(error_body(err.message, err.type, err.code)).encode() + b"\n\n"
    finally:
        if not completed:
            # The client went away (or the server is stopping): stop the upstream generation and
            # record the partial answer as such.
            ledger_fields.setdefault("metadata", {})["client_disconnected"] = True
            with anyio.CancelScope(shield=True):
                await stream.aclose()


async def stream_completion(target: Any, routed: Any, *, request_id: str, ledger_fields: dict[str, Any],
                            started: float, kwargs: dict[str, Any], include_usage: bool,
                            state: Any, on_done: Any) -> Response:
    """Open the upstream stream (fallback happens before the first chunk), then answer with SSE."""
    try:
        stream = await aopen_stream(target.router, routed, request_id=request_id, ledger_fields=ledger_fields,
                                    started=started, caller=kwargs)
    except TriageProviderError as exc:
        raise upstream_error(exc.kind, str(exc), exc.status_code) from None
    step = getattr(getattr(stream, "_state", None), "step", None)
    if step is not None:
        state.triage_strategy = step.strategy
    events = _sse_events(stream, include_usage, ledger_fields, on_done)
    return SSEResponse(events, headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def complete(target: Any, routed: Any, *, request_id: str, ledger_fields: dict[str, Any],
                   started: float, kwargs: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Non-streaming call; returns the JSON body and the router's receipt."""
    try:
        response = await target.router.aexecute(routed, request_id=request_id, ledger_fields=ledger_fields,
                                                started=started, **kwargs)
    except TriageProviderError as exc:
        raise upstream_error(exc.kind, str(exc), exc.status_code) from None
    info = dict((getattr(response, "_hidden_params", None) or {}).get("triage") or {})
    return completion_body(response), info
