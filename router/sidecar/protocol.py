"""uvicorn's httptools protocol with two limits on a request's head (request line + headers).

uvicorn bounds neither: httptools keeps appending to a header value for as long as bytes arrive,
and once the first byte of a request is in, no timer runs until the app answers. So a 1 MB
``Authorization`` header was read and handed to the app, and a client sending headers one byte at a
time could hold a connection for ever. Here

* a head over ``max_header_bytes`` is answered with 431 ``request_header_too_large``, counted as
  the bytes arrive (memory stays bounded by the limit plus one read);
* a head not complete ``header_timeout_s`` after its first byte is answered with 408
  ``request_timeout``;

both as OpenAI-style JSON, and the connection is closed. Bytes that are not HTTP at all (a bad
request line, broken chunked framing) get uvicorn's 400 with the same JSON shape, code ``invalid_http``,
instead of its plain-text one. The body's own deadline is the
middleware's (:mod:`triage.router.sidecar.middleware`). The limits are class attributes set by
:func:`configure` before the server starts (in each worker process: ``app_from_env``), so uvicorn
can name this class by its import string.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from triage.logging import get_logger
from triage.router.sidecar.errors import error_body

IMPORT_PATH = "triage.router.sidecar.protocol:GuardedHttpToolsProtocol"
_HEAD_END = b"\r\n\r\n"
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def configure(*, max_header_bytes: int, header_timeout_s: float) -> None:
    GuardedHttpToolsProtocol.max_header_bytes = max_header_bytes
    GuardedHttpToolsProtocol.header_timeout_s = header_timeout_s


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes: int = 32768
    header_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request's head
        self._head_bytes = 0
        self._tail = b""  # the last bytes seen, to find a head's end split across reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
            window = self._tail + data
            end = window.find(_HEAD_END)
            if end < 0:
                if self._head_bytes + len(data) > self.max_header_bytes:
                    self._refuse(431, f"request headers larger than {self.max_header_bytes} bytes",
                                 "request_header_too_large")
                    return
                self._head_bytes += len(data)
                self._tail = window[-3:]
            else:
                head = self._head_bytes + end - len(self._tail) + len(_HEAD_END)
                if head > self.max_header_bytes:
                    self._refuse(431, f"request headers larger than {self.max_header_bytes} bytes",
                                 "request_header_too_large")
                    return
                self._end_head()  # before feeding: a body-less request completes during the feed
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _end_head(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self._refused:
            self._refuse(408, f"the request headers did not arrive within {self.header_timeout_s:g} s",
                         "request_timeout")

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to bytes httptools cannot parse (it closes the connection too)
        self._refuse(400, f"malformed HTTP request ({msg.rstrip('.')})", "invalid_http")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer with an OpenAI-style error and close; the app never sees this request."""
        self._refused = True
        self._cancel_timer()
        request_id = uuid.uuid4().hex
        get_logger("triage.sidecar").warning("request_refused", request_id=request_id, status=status, code=code,
                                             client=str(self.client[0]) if self.client else None)
        body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
        head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"content-type: application/json",
                b"content-length: %d" % len(body), b"connection: close",
                b"x-triage-request-id: " + request_id.encode(), b"x-triage-tier: none", b"x-triage-strategy: none"]
        if not self.transport.is_closing():
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self.transport.close()
