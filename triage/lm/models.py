"""One loaded instance per local model, engine and process (:func:`get_local_lm`).

The difficulty probe, the ``local`` provider and the self-probe share the instance, so a probe's
prefill is the answer's prefill. The engine is ``get_settings().lm_engine`` unless asked for:
``"onnx"`` (int4 through onnxruntime-genai, the default; needs ``triage models build NAME`` once)
or ``"transformers"`` (fp32 on torch, the build extra; the token router still decodes on it).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from triage.lm.specs import DEFAULT_LOCAL_MODEL, LocalModelError, resolve_model

ENGINES = ("onnx", "transformers")

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def default_engine() -> str:
    from triage.settings import get_settings  # settings only; probes import no routing code

    return get_settings().lm_engine


def get_local_lm(name: str | os.PathLike[str] = DEFAULT_LOCAL_MODEL, *, engine: str | None = None) -> Any:
    """The one loaded instance of a local model on ``engine`` in this process (loaded on first call).

    Raises :class:`~triage.lm.specs.UnknownLocalModelError` for a name that is neither registered
    nor a path, and :class:`~triage.lm.onnx_card.ModelNotBuiltError` (naming the command) for an
    ONNX model that was never built - before anything is loaded.
    """
    engine = engine or default_engine()
    if engine not in ENGINES:
        raise LocalModelError(f"unknown local LM engine {engine!r}; known: {', '.join(ENGINES)}")
    resolved = resolve_model(name)
    key = (engine, resolved.key)
    lm = _models.get(key)
    if lm is not None:
        return lm
    with _models_lock:
        lm = _models.get(key)
        if lm is None:
            if engine == "onnx":
                from triage.lm.onnx_engine import load_onnx_lm

                lm = load_onnx_lm(resolved)
            else:
                from triage.lm.runtime import load_transformers_lm

                lm = load_transformers_lm(resolved)
            _models[key] = lm
    return lm


def loaded_local_models() -> dict[str, Any]:
    """Models loaded so far, by ``engine:file identity``."""
    return {f"{engine}:{key}": lm for (engine, key), lm in _models.items()}


def release_local_model(name: str | os.PathLike[str], *, engine: str | None = None) -> bool:
    """Forget the loaded instance(s) of ``name`` (all engines unless one is named); memory returns
    once no caller holds them."""
    key = resolve_model(name).key
    with _models_lock:
        gone = [k for k in _models if k[1] == key and (engine is None or k[0] == engine)]
        for k in gone:
            del _models[k]
    return bool(gone)


def engine_tag(engine: str | None = None) -> str:
    """What decides a local model's numbers besides its weights: the engine and its precision
    (feature caches and probe cards key on it, so int4 and fp32 rows never mix)."""
    engine = engine or default_engine()
    if engine == "onnx":
        from triage.lm.onnx_card import DEFAULT_QUANT, quant_tag

        return f"onnx-{quant_tag(DEFAULT_QUANT)}"
    return "transformers-fp32"
