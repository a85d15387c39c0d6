"""The FastAPI application factory of the sidecar.

``create_app(settings)`` builds an app whose lifespan opens everything the process serves with
(``app.state.services``: routers, ledger store and writer, keys, limits, metrics) and closes it
on shutdown, committing queued ledger records. Nothing lives at module level; several apps can
run in one process (tests do).

``app_from_env()`` is the factory uvicorn's worker processes call (``--workers N``): the parent
puts the validated settings into ``TRIAGE_SIDECAR_RESOLVED`` as JSON.

Shutdown order matters for the ledger: uvicorn waits ``shutdown_grace_s`` for responses, cancels
the ones still running (long streams), and runs the lifespan's shutdown at once. A cancelled
stream records its partial answer while it unwinds, so the lifespan first waits for every
in-flight request (:class:`InFlight`) to finish, and only then closes the writer and the
worker threads that record.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from triage.router.ledger.metrics import LedgerMetrics
from triage.router.providers.http_clients import aclose_async_session, async_session
from triage.logging import get_logger
from triage.router.sidecar.errors import install_error_handlers
from triage.router.sidecar.middleware import SidecarMiddleware
from triage.router.sidecar.reload import ReloadTriggers, ignore_sighup
from triage.router.sidecar.routes import api
from triage.router.sidecar.services import Services
from triage.router.sidecar.settings import SidecarSettings

RESOLVED_ENV = "TRIAGE_SIDECAR_RESOLVED"
# After uvicorn's grace period: how long cancelled responses get to write their ledger records.
RECORD_DRAIN_S = 60.0
# Worker threads run probes and wait on ledger commits; asyncio's default (cores + 4) would make
# concurrent requests queue behind each other's commits on a 2-core machine.
WORKER_THREADS = 64

DESCRIPTION = """OpenAI-compatible router. Point any OpenAI client at this server's `/v1` and use
`model="triage/<policy>"`: a difficulty probe picks the strategy (model, prompt, token budget),
the call goes to the upstream (directly for OpenAI-compatible ones, else through litellm), and every
request is recorded in the ledger. Responses carry
`x-triage-request-id`, `x-triage-tier` and `x-triage-strategy`; post outcomes to `/v1/feedback`."""


class InFlight:
    """The tasks of the HTTP requests still running (filled by :class:`~triage.router.sidecar.middleware.SidecarMiddleware`)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def drain(self, timeout: float) -> int:
        """Wait until every running request has finished (recorded); returns how many did not."""
        me = asyncio.current_task()
        waiting = {t for t in self.tasks if t is not me and not t.done()}
        if not waiting:
            return 0
        get_logger("triage.sidecar").info("sidecar_draining", requests=len(waiting))
        _, pending = await asyncio.wait(waiting, timeout=timeout)
        return len(pending)


def create_app(settings: SidecarSettings, services: Services | None = None) -> FastAPI:
    """The sidecar app. ``services`` (already opened) is used instead of opening new ones."""
    metrics = services.metrics if services is not None else LedgerMetrics()
    inflight = InFlight()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log = get_logger("triage.sidecar")
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="triage-sidecar")
        loop.set_default_executor(executor)
        opened = services if services is not None else await asyncio.to_thread(Services.open, settings, metrics)
        app.state.services = opened
        await opened.warm_up()
        await async_session()  # the direct path's pool (and aiohttp's import) now, not on the first request
        triggers = ReloadTriggers(opened, settings.watch_policies_s)  # SIGHUP and the optional file watch
        triggers.start()
        log.info("sidecar_started", policies=list(opened.routers), ledger=opened.store.where,
                 keys=len(opened.keyring), anonymous=opened.keyring.allow_anonymous)
        try:
            yield
        finally:
            triggers.stop()
            # Cancelled streams record their partial answers as they unwind: let them, with the
            # writer and the worker threads still open.
            left = await inflight.drain(RECORD_DRAIN_S)
            if left:
                log.error("sidecar_drain_timeout", requests=left, waited_s=RECORD_DRAIN_S)
            if services is None:  # services handed in are closed by whoever opened them
                await asyncio.to_thread(opened.close)
            await aclose_async_session()  # the direct path's pooled upstream connections
            executor.shutdown(wait=False)
            log.info("sidecar_stopped")

    # The API document and its viewers are served by routes.py, behind a key unless `public_docs`.
    app = FastAPI(title="Triage sidecar", version="1", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    if services is not None:  # usable in-process without running the lifespan (ASGI test clients)
        app.state.services = services
    install_error_handlers(app)
    app.include_router(api)
    # One layer of our own: request id, limits, in-flight count, access log and metrics.
    app.add_middleware(SidecarMiddleware, max_body_bytes=settings.max_body_bytes,
                       access_log=settings.access_log, registry=metrics.registry,
                       body_timeout_s=settings.request_read_timeout_s, inflight=inflight)
    app.state.inflight = inflight
    return app


def configure_protocol(settings: SidecarSettings) -> None:
    """Head limits (size, read time) of :class:`triage.router.sidecar.protocol.GuardedHttpToolsProtocol`."""
    from triage.router.sidecar.protocol import configure

    configure(max_header_bytes=settings.max_header_bytes, header_timeout_s=settings.request_read_timeout_s)


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings from ``TRIAGE_SIDECAR_RESOLVED``."""
    from triage.logging import configure_logging

    # The supervisor only signals started workers; this covers a SIGHUP sent to the whole group.
    ignore_sighup()
    raw = os.environ.get(RESOLVED_ENV)
    if not raw:
        raise RuntimeError(f"{RESOLVED_ENV} is not set; start the server with `triage serve`")
    settings = SidecarSettings.model_validate_json(raw)
    configure_logging(json=settings.log_json, level=settings.log_level)
    configure_protocol(settings)  # this worker's connections get the head limits too
    return create_app(settings)
