"""Local causal LMs (transformers over PyPI-shipped GGUF files): specs, loading, runtime.

Importing this package does not import torch; the runtime (and torch) load on first use of
:func:`get_local_lm` / :class:`LocalLM`.

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
    from triage.lm.runtime import (
        GenerationStream,
        LocalLM,
        get_local_lm,
        loaded_local_models,
        release_local_model,
    )

_LAZY = {
    "LocalLM",
    "GenerationStream",
    "get_local_lm",
    "loaded_local_models",
    "release_local_model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from triage.lm import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'triage.lm' has no attribute {name!r}")


__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "MODEL_SPECS",
    "GenerationResult",
    "GenerationStream",
    "GenerationTimeoutError",
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
