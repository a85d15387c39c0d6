"""The direct path: OpenAI-compatible upstreams called with pooled HTTP clients, without litellm.

litellm costs ~8 ms of CPU per call (its dispatch, response handling, logging and cost
calculation); a pooled aiohttp call to the same upstream ~0.2 ms. For a strategy whose upstream
speaks the OpenAI wire format (``openai/...`` with an ``api_base``, or ``api: openai``), this module
makes the call itself:

* the body holds the model (its provider prefix dropped, as litellm does) and the OpenAI
  chat-completions fields of :mod:`triage.router.core.fields` only (the one allowlist), plus the
  strategy's ``extra_body``; the destination and key come from the keyword arguments
  :func:`~triage.router.core.calls.build_kwargs` built from the policy;
* the answer is parsed once into litellm's ``ModelResponse`` / ``ModelResponseStream`` (what every
  consumer - receipts, the sidecar, the SDK, LangChain - already reads), nothing else;
* an HTTP error becomes the ``openai`` exception litellm would have raised for that status, and a
  transport error an ``httpx`` error, so :func:`~triage.router.core.calls.classify` gives the
  same kind, and the plan the same fallback, on both paths;
* no retries (the policy's fallback is the retry); the timeout is the one build_kwargs computed.

The clients (aiohttp for async calls, httpx for sync ones and for HTTP/2) are pooled, kept alive and
sized for well over 64 concurrent calls: :mod:`triage.router.providers.http_clients`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import openai
from triage.policies.kinds.base import DEFAULT_KIND
from triage.policies.strategy import Strategy
from triage.router.core.errors import UpstreamProtocolError
from triage.router.core.fields import CHAT_FIELDS, DROPPED_FIELDS
from triage.router.providers.http_clients import (
    MAX_LINE_BYTES,
    async_httpx_client,
    async_session,
    async_timeout,
    http2,
    sync_client,
    transport_error,
)

# Body fields taken from the call's keyword arguments (model and messages are set explicitly).
_BODY_FIELDS = CHAT_FIELDS - DROPPED_FIELDS - {"model", "messages"}
# Strategy ``extra`` keys the direct path understands besides chat fields; any other key (a litellm
# option) keeps the strategy on litellm, which knows what to do with it.
_DIRECT_EXTRA = frozenset({"extra_body", "extra_headers"})
# litellm's bookkeeping keys build_kwargs always sets (no retries: the policy's fallback retries).
_CALL_KEYS = frozenset({"num_retries", "max_retries", "api_base", "api_key", "timeout", "model", "messages"})
# Status -> the exception litellm raises for it (classify() reads the class names).
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
    404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}
_CONTEXT_HINTS = ("context length", "context window", "maximum context", "too many tokens", "prompt is too long")


class ContextWindowExceededError(openai.BadRequestError):
    """A 400 that says the prompt does not fit (litellm's class of the same name: kind context_window)."""


# -- which strategies go direct ------------------------------------------------------------------


def uses_direct(strategy: Strategy) -> bool:
    """Whether calls of ``strategy`` take the direct path (decided per strategy, from the policy)."""
    api = getattr(strategy, "api", None)
    if api == "litellm" or strategy.kind.name != DEFAULT_KIND:
        return False
    if strategy.api_base is None and not strategy.deployments:
        return False  # the provider's own endpoint: litellm knows its URL and quirks
    if any(k not in CHAT_FIELDS and k not in _DIRECT_EXTRA for k in strategy.extra):
        return False
    return api == "openai" or strategy.model.startswith("openai/")


def upstream_model(model: str) -> str:
    """The model name the upstream is sent: without the provider prefix (``openai/gpt-4o`` -> ``gpt-4o``)."""
    return model.split("/", 1)[1] if "/" in model else model


def request_parts(kwargs: dict[str, Any]) -> tuple[str, str, dict[str, str], dict[str, Any], float]:
    """(base URL, path, headers, JSON body, timeout) of one call from build_kwargs' arguments."""
    base = str(kwargs["api_base"]).rstrip("/")
    body: dict[str, Any] = {"model": upstream_model(str(kwargs["model"])), "messages": kwargs["messages"]}
    for key, value in kwargs.items():
        if key in _BODY_FIELDS and value is not None:
            body[key] = value
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, dict):
        body.update(extra_body)
    headers = {"content-type": "application/json"}
    extra_headers = kwargs.get("extra_headers")
    if isinstance(extra_headers, dict):
        headers.update({str(k): str(v) for k, v in extra_headers.items()})
    if kwargs.get("api_key"):
        headers["authorization"] = f"Bearer {kwargs['api_key']}"
    return base, "/chat/completions", headers, body, float(kwargs.get("timeout") or 600.0)


# -- errors --------------------------------------------------------------------------------------


def _error_message(data: Any, text: str) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
    return text[:500] or "upstream error"


def status_error(resp: httpx.Response) -> Exception:
    """The exception litellm raises for an HTTP error answer (so classify() agrees on both paths)."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    message = _error_message(data, resp.text)
    status = resp.status_code
    if status == 408:
        return openai.APITimeoutError(request=resp.request)
    cls: type[openai.APIStatusError]
    if status == 400 and any(h in message.lower() for h in _CONTEXT_HINTS):
        cls = ContextWindowExceededError
    elif status >= 500:
        cls = openai.InternalServerError
    else:
        cls = _STATUS_ERRORS.get(status, openai.APIStatusError)
    return cls(f"Error code: {status} - {message}", response=resp, body=data)


# -- answers -------------------------------------------------------------------------------------


def _model_response(data: Any) -> Any:
    from litellm.types.utils import ModelResponse

    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise UpstreamProtocolError("the upstream answered 200 without a chat.completion body")
    return ModelResponse(**data)


def _chunk(payload: str) -> Any | None:
    """One SSE ``data:`` payload as a litellm chunk; None at ``[DONE]``."""
    from litellm.types.utils import ModelResponseStream

    if payload == "[DONE]":
        return None
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise UpstreamProtocolError(f"the upstream streamed a chunk that is not JSON: {payload[:100]!r}") from exc
    if not isinstance(data, dict):
        raise UpstreamProtocolError("the upstream streamed a chunk that is not a JSON object")
    if "error" in data and "choices" not in data:  # an error reported in-band, mid-stream
        raise openai.APIError(_error_message(data, payload), request=httpx.Request("POST", "/"), body=data)
    return ModelResponseStream(**data)


def _payload(line: str) -> str | None:
    if line.startswith("data:"):
        return line[5:].strip()
    return None  # comments (": keep-alive"), event names, blank separators


class _Tally:
    """What a stream needs to stand in for a usage chunk the upstream never sent.

    litellm estimates the usage of such a stream with its token counter (prompt messages, streamed
    text) and sends it as the final chunk; the direct path does the same, so the record of an
    answer does not depend on the client that fetched it. Only streams without usage pay for it.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.pieces: list[str] = []
        self.usage_seen = False
        self.last: Any = None
        self.finished = False

    def see(self, chunk: Any) -> Any:
        self.last = chunk
        if getattr(chunk, "usage", None) is not None:
            self.usage_seen = True
        for choice in chunk.choices or []:
            content = getattr(choice.delta, "content", None)
            if content:
                self.pieces.append(content)
        return chunk

    def final(self) -> Any | None:
        """The estimated usage chunk, once, when the caller asked for usage and none came."""
        if self.finished:
            return None
        self.finished = True
        wants = isinstance(self.body.get("stream_options"), dict) and self.body["stream_options"].get("include_usage")
        if self.usage_seen or not wants or self.last is None:
            return None
        from litellm import token_counter
        from litellm.types.utils import ModelResponseStream

        model = str(self.body.get("model"))
        try:
            prompt = token_counter(model=model, messages=self.body.get("messages"))
        except Exception:  # noqa: BLE001 - litellm assumes 0 when its counter fails, so does this
            prompt = 0
        completion = token_counter(model=model, text="".join(self.pieces), count_response_tokens=True)
        return ModelResponseStream(id=self.last.id, created=self.last.created, model=self.last.model, choices=[],
                                   usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                          "total_tokens": prompt + completion})


class DirectStream(Iterator[Any]):
    """A sync SSE stream of litellm chunks over an open ``httpx`` response."""

    def __init__(self, resp: httpx.Response, body: dict[str, Any]) -> None:
        self._resp = resp
        self._lines = resp.iter_lines()
        self._tally = _Tally(body)

    def __iter__(self) -> DirectStream:
        return self

    def __next__(self) -> Any:
        if not self._tally.finished:
            for line in self._lines:
                payload = _payload(line)
                if payload is None:
                    continue
                chunk = _chunk(payload)
                if chunk is None:
                    break
                return self._tally.see(chunk)
            last = self._tally.final()
            if last is not None:
                return last
        self.close()
        raise StopIteration

    def close(self) -> None:
        self._resp.close()


class AsyncDirectStream(AsyncIterator[Any]):
    """An async SSE stream of litellm chunks over the lines of an open response (either client)."""

    def __init__(self, lines: AsyncIterator[str], close: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        self._lines = lines
        self._close = close
        self._tally = _Tally(body)

    def __aiter__(self) -> AsyncDirectStream:
        return self

    async def __anext__(self) -> Any:
        if not self._tally.finished:
            async for line in self._lines:
                payload = _payload(line)
                if payload is None:
                    continue
                chunk = _chunk(payload)
                if chunk is None:
                    break
                return self._tally.see(chunk)
            last = self._tally.final()
            if last is not None:
                return last
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        await self._close()


# -- calls (litellm's signature: the keyword arguments of build_kwargs) ---------------------------


def completion(**kwargs: Any) -> Any:
    """``litellm.completion`` for an OpenAI-compatible upstream."""
    base, path, headers, body, timeout = request_parts(kwargs)
    client = sync_client(base)
    request = client.build_request("POST", path, content=json.dumps(body).encode(), headers=headers,
                                   timeout=timeout)
    if not body.get("stream"):
        resp = client.send(request)
        if resp.status_code >= 400:
            raise status_error(resp)
        return _model_response(_json(resp))
    resp = client.send(request, stream=True)
    if resp.status_code >= 400:
        try:
            resp.read()
        finally:
            resp.close()
        raise status_error(resp)
    return DirectStream(resp, body)


async def acompletion(**kwargs: Any) -> Any:
    """``litellm.acompletion`` for an OpenAI-compatible upstream."""
    base, path, headers, body, timeout = request_parts(kwargs)
    if http2(base):
        return await _acompletion_httpx(base, path, headers, body, timeout)
    import aiohttp

    url = base + path
    session = await async_session()
    try:
        resp = await session.post(url, data=json.dumps(body).encode(), headers=headers,
                                  timeout=async_timeout(timeout), allow_redirects=False)
        if not body.get("stream") or resp.status >= 400:
            try:
                raw = await resp.read()
            finally:
                resp.release()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc, url) from exc
    if resp.status >= 400:
        raise status_error(httpx.Response(resp.status, headers=list(resp.headers.items()), content=raw,
                                          request=httpx.Request("POST", url)))
    if not body.get("stream"):
        return _model_response(_loads(raw))

    async def close() -> None:
        await lines.aclose()
        resp.release()  # back to the pool when the body was read to its end, else closed

    lines = _aiohttp_lines(resp, url)
    return AsyncDirectStream(lines, close, body)


async def _aiohttp_lines(resp: Any, url: str) -> AsyncIterator[str]:
    import aiohttp

    try:
        async for raw in resp.content:
            yield raw.decode("utf-8", "replace").rstrip("\r\n")
    except ValueError as exc:  # aiohttp buffers a line whole, up to its read buffer
        raise UpstreamProtocolError(f"the upstream streamed a line over {MAX_LINE_BYTES >> 20} MiB") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc, url) from exc


async def _acompletion_httpx(base: str, path: str, headers: dict[str, str], body: dict[str, Any],
                             timeout: float) -> Any:
    """The HTTP/2 call of an ``https`` upstream (``h2`` installed)."""
    client = async_httpx_client(base)
    request = client.build_request("POST", path, content=json.dumps(body).encode(), headers=headers,
                                   timeout=timeout)
    if not body.get("stream"):
        resp = await client.send(request)
        if resp.status_code >= 400:
            raise status_error(resp)
        return _model_response(_json(resp))
    resp = await client.send(request, stream=True)
    if resp.status_code >= 400:
        try:
            await resp.aread()
        finally:
            await resp.aclose()
        raise status_error(resp)
    return AsyncDirectStream(resp.aiter_lines(), resp.aclose, body)


def _json(resp: httpx.Response) -> Any:
    return _loads(resp.content)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UpstreamProtocolError("the upstream answered 200 with a body that is not JSON") from exc
