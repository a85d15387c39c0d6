"""litellm providers Triage adds. ``local``: local causal LMs (see :mod:`triage.router.providers.local`).

Importing this package imports neither litellm nor torch; :func:`register_local_provider`
imports litellm, and torch loads with the first request to a local model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from triage.router.providers.local import LocalProvider


def register_local_provider() -> LocalProvider:
    """Register the ``local`` provider with litellm (idempotent); returns its handler."""
    from triage.router.providers.local import register_local_provider as _register

    return _register()


def __getattr__(name: str) -> Any:
    if name in {"LocalProvider", "PROVIDER"}:
        from triage.router.providers import local

        return getattr(local, name)
    raise AttributeError(f"module 'triage.router.providers' has no attribute {name!r}")


__all__ = ["LocalProvider", "register_local_provider"]
