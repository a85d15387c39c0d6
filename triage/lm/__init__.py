"""Local causal LMs from PyPI-shipped GGUF files: specs, builds, engines.

Two engines share one interface (:class:`~triage.lm.base.ChatLM`): int4 ONNX decoders through
onnxruntime-genai (the default; ``triage models build NAME`` makes the build once) and transformers
fp32 (the build extra). Importing this package imports neither.

    from triage.lm import get_local_lm
    lm = get_local_lm("smollm2-135m")                 # or a path to a .gguf file / HF folder
    pre = lm.prefill([{"role": "user", "content": "What is 2+2?"}])   # features + KV cache
    out = lm.generate([{"role": "user", "content": "What is 2+2?"}], max_tokens=16, temperature=0)
    # ^ continues from the stored prefill: one prefill for probing and answering
    for event in lm.stream(messages, max_tokens=16, temperature=0): print(event.text, end="")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triage.lm.chat import normalise_messages
from triage.lm.specs import (
    DEFAULT_LOCAL_MODEL,
    MODEL_SPECS,
    GenerationTimeoutError,
    InsufficientDiskError,
    LocalModelError,
    ModelLoadError,
    ModelNotInstalledError,
    ModelShape,
    ModelSpec,
    PromptTooLongError,
    ResolvedModel,
    UnknownLocalModelError,
    known_models,
    model_shape,
    resolve_model,
)
from triage.lm.types import GenerationResult, PrefillResult, StreamEvent, TokenInfo, TopLogprob

if TYPE_CHECKING:
    from triage.lm.base import ChatLM, GenerationStream
    from triage.lm.models import get_local_lm, loaded_local_models, release_local_model
    from triage.lm.runtime import LocalLM

_LAZY = {
    "ChatLM": "triage.lm.base",
    "GenerationStream": "triage.lm.base",
    "LocalLM": "triage.lm.runtime",
    "get_local_lm": "triage.lm.models",
    "loaded_local_models": "triage.lm.models",
    "release_local_model": "triage.lm.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'triage.lm' has no attribute {name!r}")


__all__ = [
    "ChatLM",
    "DEFAULT_LOCAL_MODEL",
    "MODEL_SPECS",
    "GenerationResult",
    "GenerationStream",
    "GenerationTimeoutError",
    "InsufficientDiskError",
    "LocalLM",
    "LocalModelError",
    "ModelLoadError",
    "ModelNotInstalledError",
    "ModelShape",
    "ModelSpec",
    "PrefillResult",
    "PromptTooLongError",
    "ResolvedModel",
    "StreamEvent",
    "TokenInfo",
    "TopLogprob",
    "UnknownLocalModelError",
    "get_local_lm",
    "known_models",
    "loaded_local_models",
    "model_shape",
    "normalise_messages",
    "release_local_model",
    "resolve_model",
]
