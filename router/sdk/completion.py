"""litellm-style functions: ``triage_completion(messages=..., policy=...)``.

A router per policy file is kept for the life of the process (loading a probe or a local model is
the expensive part, so it happens once); pass ``router=`` to use one you built yourself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from triage.policies.decide import Decision
from triage.router.core.router import Router

_routers: dict[str, Router] = {}
_lock = threading.Lock()


def get_router(policy: str | Path | None = None) -> Router:
    """The process's router for ``policy`` (default: ``policies/examples/local.yaml``)."""
    from triage.policies.loader import DEFAULT_POLICY

    key = str(Path(policy).resolve()) if policy is not None else str(DEFAULT_POLICY)
    router = _routers.get(key)
    if router is None:
        with _lock:
            router = _routers.get(key)
            if router is None:
                router = _routers[key] = Router.from_file(key)
    return router


def triage_completion(messages: Any = None, *, policy: str | Path | None = None, router: Router | None = None,
                      **kwargs: Any) -> Any:
    """Like ``litellm.completion``, but the policy picks the model, prompt and budget.

    Returns litellm's ``ModelResponse`` (or, with ``stream=True``, an iterator of chunks) with the
    decision and attempts in ``response._hidden_params["triage"]``. A ``model`` argument is ignored.
    """
    return (router or get_router(policy)).completion(messages=messages, **kwargs)


async def atriage_completion(messages: Any = None, *, policy: str | Path | None = None,
                             router: Router | None = None, **kwargs: Any) -> Any:
    """Async :func:`triage_completion` (``stream=True`` gives an async iterator of chunks)."""
    return await (router or get_router(policy)).acompletion(messages=messages, **kwargs)


def triage_route(messages: Any, *, policy: str | Path | None = None, router: Router | None = None) -> Decision:
    """The decision only; no model is called."""
    return (router or get_router(policy)).route(messages)
