"""Pooled HTTP clients of the direct path (:mod:`triage.router.providers.openai_direct`).

* **async** (the sidecar, ``Router.acompletion``): one ``aiohttp.ClientSession`` per event loop - its
  connections belong to the loop that opened them - shared by every upstream on that loop, with
  keep-alive pools per host. Why aiohttp and not httpx: side by side on the benchmark's stub, a
  pooled ``httpx.AsyncClient`` call costs ~1 ms of CPU and its pool polls every idle connection's
  socket on each request (O(connections) at 32 concurrent calls); the sidecar on aiohttp answered one
  client 1.8 ms sooner (p50) and served 1.6x the requests at saturation
  (``eval/bench/sidecar_overhead.py``). An ``https`` upstream goes through ``httpx`` with HTTP/2
  when the ``h2`` package is installed (aiohttp speaks HTTP/1.1 only).
* **sync** (``Router.completion``): one ``httpx.Client`` per base URL (HTTP/2 likewise).

Transport failures of either client are raised as ``httpx`` errors (:func:`transport_error`), so
:func:`~triage.router.core.calls.classify` gives the same kind - and the plan the same fallback -
whichever client made the call.

Lifetime: the sidecar closes its loop's session on shutdown (:func:`aclose_async_session`). A loop
run by ``asyncio.run`` closes it too, through a parked async generator: ``asyncio.run`` finalises
every async generator of its loop before closing it, which runs the generator's ``finally`` - so an
SDK script does not end with aiohttp's "Unclosed client session" error.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import httpx


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"triage-router/{version('triage-router')}"
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "triage-router"


USER_AGENT = _user_agent()
#: Connections per process (all upstreams together); keep-alive long enough to span traffic gaps.
MAX_CONNECTIONS = 512
KEEPALIVE_S = 30.0
#: The longest SSE line an async stream accepts (aiohttp buffers a line whole, up to twice its read
#: buffer; httpx has no cap). Far above any real chunk; a line past it fails the call as a protocol error.
MAX_LINE_BYTES = 8 << 20
_LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=128, keepalive_expiry=KEEPALIVE_S)


def _has_h2() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


_HTTP2 = _has_h2()


def http2(base: str) -> bool:
    """Whether calls to ``base`` use HTTP/2 (``https`` and the ``h2`` package installed)."""
    return _HTTP2 and base.startswith("https://")


# -- sync: httpx ---------------------------------------------------------------------------------

_sync_clients: dict[str, httpx.Client] = {}
_async_httpx: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def sync_client(base: str) -> httpx.Client:
    client = _sync_clients.get(base)
    if client is None:
        with _lock:
            client = _sync_clients.get(base)
            if client is None:
                client = httpx.Client(base_url=base, limits=_LIMITS, http2=http2(base), trust_env=False,
                                      headers={"user-agent": USER_AGENT})
                _sync_clients[base] = client
    return client


def async_httpx_client(base: str) -> httpx.AsyncClient:
    """The HTTP/2 client of an ``https`` upstream on this loop (see :func:`http2`)."""
    loop = asyncio.get_running_loop()
    per_loop = _async_httpx.setdefault(loop, {})
    client = per_loop.get(base)
    if client is None:
        client = per_loop[base] = httpx.AsyncClient(base_url=base, limits=_LIMITS, http2=True, trust_env=False,
                                                    headers={"user-agent": USER_AGENT})
    return client


def close_clients() -> None:
    """Close the sync clients (async ones close with their loop, or :func:`aclose_async_session`)."""
    with _lock:
        for client in _sync_clients.values():
            client.close()
        _sync_clients.clear()


# -- async: aiohttp ------------------------------------------------------------------------------


class _LoopSession:
    """The aiohttp session of one loop and the parked generator that closes it with the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, session: Any) -> None:
        self.loop = loop
        self.session = session
        self.keeper = self._keep()

    async def _keep(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # The session refers to its loop, so the weak-keyed entry would outlive the loop: drop it.
            if _async_sessions.get(self.loop) is self:
                del _async_sessions[self.loop]
            if not self.session.closed:
                await self.session.close()


_async_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = weakref.WeakKeyDictionary()


async def async_session() -> Any:
    """This loop's ``aiohttp.ClientSession`` (opened on first use; the sidecar opens it at start-up)."""
    loop = asyncio.get_running_loop()
    entry = _async_sessions.get(loop)
    if entry is not None and not entry.session.closed:
        return entry.session
    import aiohttp

    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_S,
                                     ssl=_tls_context())
    session = aiohttp.ClientSession(connector=connector, headers={"user-agent": USER_AGENT},
                                    read_bufsize=MAX_LINE_BYTES // 2, trust_env=False, auto_decompress=True)
    entry = _async_sessions[loop] = _LoopSession(loop, session)
    await entry.keeper.__anext__()  # parked: the loop's async-generator shutdown closes the session
    return session


@functools.cache
def _tls_context() -> Any:
    """Certificates verified against certifi's bundle, as httpx does: the same upstreams are trusted
    whichever client calls them (a slim image without system CA certificates included). Built once
    (loading the bundle takes milliseconds) and shared by every loop's session."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=certifi.where())


async def aclose_async_session() -> None:
    """Close this loop's session and HTTP/2 clients (the sidecar's shutdown)."""
    loop = asyncio.get_running_loop()
    entry = _async_sessions.get(loop)
    if entry is not None:
        await entry.keeper.aclose()  # its ``finally`` closes the session and drops the entry
    for client in _async_httpx.pop(loop, {}).values():
        await client.aclose()


def async_timeout(seconds: float) -> Any:
    """httpx's ``Timeout(seconds)`` in aiohttp's terms: waiting for a pooled connection (``connect``
    includes it, as httpx's pool timeout), connecting, and each read - not the whole answer (a long
    stream is not cut while tokens keep coming)."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_connect=seconds, sock_read=seconds)


def transport_error(exc: BaseException, url: str) -> httpx.TransportError:
    """The ``httpx`` error for an aiohttp transport failure (same classification on every client)."""
    import aiohttp

    request = httpx.Request("POST", url)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text, request=request)
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts are asyncio.TimeoutError subclasses
        return httpx.ReadTimeout(text, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(text, request=request)
    return httpx.ReadError(text, request=request)
