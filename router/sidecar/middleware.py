"""The one ASGI middleware of the sidecar (plain ASGI: no per-request task or thread).

For every HTTP request it

* assigns the request id and puts ``x-triage-request-id``, ``x-triage-tier`` and
  ``x-triage-strategy`` on the response, whatever produced it (routes set tier and strategy in
  ``request.state``; responses without a decision say ``none``), and ``x-triage-alias`` /
  ``x-triage-alias-target`` when the request named a model alias;
* enforces the body size limit (413 before the body is read when Content-Length says so; chunked
  bodies are counted as they arrive) and the body read time (408 when a body has not fully arrived
  ``body_timeout_s`` after the headers: a client that sends half a body cannot hold a connection);
  both answers close the connection, since the rest of the body is never read;
* turns an exception that escaped everything else into a 500 with an OpenAI-style body;
* writes one access-log line (ids, route, status, milliseconds; never headers or bodies) and
  counts responses by route and status for ``/metrics``;
* counts the request as in flight until its response has fully ended (the shutdown drain waits for
  those), so there is no second layer for it.

Request ids are a per-process random prefix and a counter (32 hex characters, like a uuid4's hex):
unique without a system call per request. Header names and the metric children are made once.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triage.ids import REQUEST_IDS, RequestIds  # noqa: F401  (RequestIds: re-exported)
from triage.scrub import scrub_text
from triage.logging import get_logger
from triage.router.sidecar.errors import error_body

REQUEST_ID = "x-triage-request-id"
TIER = "x-triage-tier"
STRATEGY = "x-triage-strategy"
ALIAS = "x-triage-alias"  # the alias a request named ...
ALIAS_TARGET = "x-triage-alias-target"  # ... and the policy or model it resolved to
NONE = "none"
_REQUEST_ID_B, _TIER_B, _STRATEGY_B = REQUEST_ID.encode(), TIER.encode(), STRATEGY.encode()
_ALIAS_B, _ALIAS_TARGET_B = ALIAS.encode(), ALIAS_TARGET.encode()


# Request ids: :mod:`triage.ids` (the SDK's Router uses the same generator).


def _json_response(status: int, body: dict[str, Any], close: bool = False) -> tuple[Message, Message]:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:  # uvicorn closes the connection after this response instead of reading on
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": data, "more_body": False}


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class SidecarMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool = True,
                 registry: CollectorRegistry | None = None, body_timeout_s: float = 30.0,
                 inflight: Any = None) -> None:
        self.app = app
        self.inflight = inflight  # InFlight (app.py): its ``tasks`` are the requests being answered
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.access_log = access_log
        self.log = get_logger("triage.sidecar")
        self.responses = Counter("http_responses", "HTTP responses of the sidecar by route and status.",
                                 ("route", "status"), namespace="triage", registry=registry) if registry else None
        self._children: dict[tuple[str, int], Any] = {}  # labels() looks up and locks on every call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        task = asyncio.current_task() if self.inflight is not None else None
        if task is not None:
            self.inflight.tasks.add(task)
        request_id = REQUEST_IDS.next()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_box = [0]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((_REQUEST_ID_B, request_id.encode()))
                headers.append((_TIER_B, str(state.get("triage_tier") or NONE).encode("latin-1", "replace")))
                headers.append((_STRATEGY_B, str(state.get("triage_strategy") or NONE).encode("latin-1", "replace")))
                if state.get("triage_alias"):  # only when the caller used an alias (ASCII: settings check it)
                    headers.append((_ALIAS_B, str(state["triage_alias"]).encode("latin-1", "replace")))
                    headers.append((_ALIAS_TARGET_B,
                                    str(state.get("triage_alias_target")).encode("latin-1", "replace")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            too_large = self._declared_too_large(scope)
            if too_large:
                await self._send_413(send_with_headers)
            else:
                if scope.get("method") in ("POST", "PUT", "PATCH"):
                    # The whole body is read here, against the size limit and the deadline, before any
                    # route sees it (FastAPI would read it all anyway).
                    receive = await self._buffered(receive)
                await self.app(scope, receive, send_with_headers)
        except _BodyTooLarge:
            if status_box[0] == 0:
                await self._send_413(send_with_headers)
        except _BodyTimeout:
            if status_box[0] == 0:
                start, body = _json_response(408, error_body(
                    f"the request body did not arrive within {self.body_timeout_s:g} s", "invalid_request_error",
                    "request_timeout"), close=True)
                await send_with_headers(start)
                await send_with_headers(body)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, not bad input
            self.log.error("internal_error", request_id=request_id, path=scope.get("path"),
                           error_type=type(exc).__name__, error=scrub_text(str(exc))[:500])
            if status_box[0] == 0:
                start, body = _json_response(500, error_body(
                    "internal error in the Triage sidecar (see its log)", "server_error", "internal_error"))
                await send_with_headers(start)
                await send_with_headers(body)
        finally:
            self._observe(scope, state, request_id, status_box[0], t0)
            if task is not None:
                self.inflight.tasks.discard(task)

    # -- body limit ---------------------------------------------------------------------------------

    def _declared_too_large(self, scope: Scope) -> bool:
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    return int(v) > self.max_body_bytes
                except ValueError:
                    return False
        return False

    async def _buffered(self, receive: Receive) -> Receive:
        """Read the body up to the size limit and the deadline, then replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] != "http.request":
                replay_disconnect = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                replay_disconnect = None
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if replay_disconnect is not None:
                return replay_disconnect
            return await receive()

        return replay

    async def _send_413(self, send: Send) -> None:
        start, body = _json_response(413, error_body(
            f"request body too large (limit {self.max_body_bytes} bytes)", "invalid_request_error",
            "request_too_large"), close=True)
        await send(start)
        await send(body)

    # -- logging and metrics ------------------------------------------------------------------------

    def _observe(self, scope: Scope, state: dict[str, Any], request_id: str, status: int, t0: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        if self.responses is not None:
            child = self._children.get((path, status))
            if child is None:
                child = self._children[(path, status)] = self.responses.labels(path, str(status))
            child.inc()
        if self.access_log:
            self.log.info("request", request_id=request_id, method=scope.get("method"), route=path,
                          status=status, ms=round((time.perf_counter() - t0) * 1000.0, 2),
                          key_id=state.get("key_id"), tier=state.get("triage_tier"),
                          strategy=state.get("triage_strategy"))
