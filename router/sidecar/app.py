"""The FastAPI application factory of the sidecar.

``create_app(settings)`` builds an app whose lifespan opens everything the process serves with
(``app.state.services``: routers, ledger store and writer, keys, limits, metrics) and closes it
on shutdown, committing queued ledger records. Nothing lives at module level; several apps can
run in one process (tests do).

``app_from_env()`` is the factory uvicorn's worker processes call (``--workers N``): the parent
puts the validated settings into ``TRIAGE_SIDECAR_RESOLVED`` as JSON.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from router.ledger.metrics import LedgerMetrics
from router.logging import get_logger
from router.sidecar.errors import install_error_handlers
from router.sidecar.middleware import SidecarMiddleware
from router.sidecar.routes import api
from router.sidecar.services import Services
from router.sidecar.settings import SidecarSettings

RESOLVED_ENV = "TRIAGE_SIDECAR_RESOLVED"
# Worker threads run probes and wait on ledger commits; asyncio's default (cores + 4) would make
# concurrent requests queue behind each other's commits on a 2-core machine.
WORKER_THREADS = 64

DESCRIPTION = """OpenAI-compatible router. Point any OpenAI client at this server's `/v1` and use
`model="triage/<policy>"`: a difficulty probe picks the strategy (model, prompt, token budget),
the call goes through litellm, and every request is recorded in the ledger. Responses carry
`x-triage-request-id`, `x-triage-tier` and `x-triage-strategy`; post outcomes to `/v1/feedback`."""


def create_app(settings: SidecarSettings, services: Services | None = None) -> FastAPI:
    """The sidecar app. ``services`` (already opened) is used instead of opening new ones."""
    metrics = services.metrics if services is not None else LedgerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log = get_logger("triage.sidecar")
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="triage-sidecar")
        loop.set_default_executor(executor)
        opened = services if services is not None else await asyncio.to_thread(Services.open, settings, metrics)
        app.state.services = opened
        await opened.warm_up()
        log.info("sidecar_started", policies=list(opened.routers), ledger=opened.store.where,
                 keys=len(opened.keyring), anonymous=opened.keyring.allow_anonymous)
        try:
            yield
        finally:
            if services is None:  # services handed in are closed by whoever opened them
                await asyncio.to_thread(opened.close)
            executor.shutdown(wait=False)
            log.info("sidecar_stopped")

    app = FastAPI(title="Triage sidecar", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    if services is not None:  # usable in-process without running the lifespan (ASGI test clients)
        app.state.services = services
    install_error_handlers(app)
    app.include_router(api)
    app.add_middleware(SidecarMiddleware, max_body_bytes=settings.max_body_bytes,
                       access_log=settings.access_log, registry=metrics.registry)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings from ``TRIAGE_SIDECAR_RESOLVED``."""
    from router.logging import configure_logging

    raw = os.environ.get(RESOLVED_ENV)
    if not raw:
        raise RuntimeError(f"{RESOLVED_ENV} is not set; start the server with `triage serve`")
    settings = SidecarSettings.model_validate_json(raw)
    configure_logging(json=settings.log_json, level=settings.log_level)
    return create_app(settings)
