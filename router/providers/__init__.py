"""The litellm providers Triage adds, by their old import path.

They belong to the strategy kinds now (:mod:`triage.policies.kinds`): ``local`` in
:mod:`triage.policies.kinds.providers.local`, ``token-routed`` in
:mod:`triage.policies.kinds.providers.token_routed`, on one base
(:mod:`triage.policies.kinds.providers.base`). A Router registers the providers its policy's kinds
need; :func:`register_local_provider` is for driving ``local/<name>`` through litellm directly.

Importing this package imports neither litellm nor torch; :func:`register_local_provider`
imports litellm, and torch loads with the first request to a local model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from triage.policies.kinds.providers.local import LocalProvider


def register_local_provider() -> LocalProvider:
    """Register the ``local`` provider with litellm (idempotent); returns its handler."""
    from triage.policies.kinds.providers.local import register_local_provider as _register

    return _register()


def __getattr__(name: str) -> Any:
    if name in {"LocalProvider", "PROVIDER"}:
        from triage.policies.kinds.providers import local

        return getattr(local, name)
    raise AttributeError(f"module 'triage.router.providers' has no attribute {name!r}")


__all__ = ["LocalProvider", "register_local_provider"]
