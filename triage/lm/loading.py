"""Load a local causal LM with transformers: fp32 on CPU, offline, with a safetensors cache.

Loading a GGUF file makes transformers dequantise every tensor (about 20 s for SmolLM2-135M on
two cores). The dequantised weights are therefore saved once as safetensors under
``<cache_dir>/models/<name>-<sha12>/`` (sha of the GGUF file) and later loads read that folder
(well under a second). transformers refuses to ``save_pretrained`` a GGUF-loaded model until its
``hf_quantizer`` and ``config.quantization_config`` are removed - the weights are plain floats by
then, so nothing is lost.

The folder stores float16, the precision checkpoints ship in: half the disk of fp32 (3.4 instead of
6.7 GB for Qwen2.5-Coder-1.5B, which is what a fresh clone's test run has room for), and a relative
rounding of at most 2**-11, far below the GGUF's own 4-8-bit quantization step. Loads upcast to
fp32, and the model that wrote the folder is rounded the same way, so the first load and every later
one compute the same thing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.lm.specs import (
    InsufficientDiskError,
    ModelLoadError,
    ResolvedModel,
    models_cache_dir,
    require_free_space,
)

# No model hub here: anything that tries to download must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_MARKER = "triage-model.json"

#: Used when a model ships without a chat template (base models): plain role-prefixed turns.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel (causal LM), eval mode, fp32, CPU
    tokenizer: Any
    sha256: str
    source: str  # "gguf", "safetensors-cache" or "transformers"
    seconds: float
    cache_error: str | None = None  # why the safetensors cache was not written (load still fine)


def cache_folder(resolved: ResolvedModel, sha256: str) -> Path:
    return models_cache_dir() / f"{resolved.name}-{sha256[:12]}"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_model(resolved: ResolvedModel, *, use_cache: bool = True) -> LoadedModel:
    """Load tokenizer and model; GGUF files go through (and fill) the safetensors cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    t0 = time.perf_counter()
    sha = resolved.sha256()
    try:
        if resolved.kind == "transformers":
            src, kwargs, source = resolved.path, {}, "transformers"
        else:
            folder = cache_folder(resolved, sha)
            if use_cache and (folder / _MARKER).is_file():
                src, kwargs, source = folder, {}, "safetensors-cache"
            else:
                src, kwargs, source = resolved.path.parent, {"gguf_file": resolved.path.name}, "gguf"
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(src), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError):
            if source != "safetensors-cache":
                raise
            # A damaged cache folder: drop it and go back to the GGUF file.
            shutil.rmtree(src, ignore_errors=True)
            return load_model(resolved, use_cache=use_cache)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load local model {resolved.name!r} from {resolved.path}: {exc}") from exc
    model.eval()
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    cache_error = None
    if source == "gguf" and use_cache:
        cache_error = _save_cache(model, tokenizer, cache_folder(resolved, sha), resolved, sha)
    return LoadedModel(model=model, tokenizer=tokenizer, sha256=sha, source=source,
                       seconds=time.perf_counter() - t0, cache_error=cache_error)


def _save_cache(model: Any, tokenizer: Any, folder: Path, resolved: ResolvedModel, sha: str) -> str | None:
    """Write the dequantised model as safetensors: temp folder, marker last, then rename.
    Returns why it could not (a full disk or a read-only cache only costs the next load its speed)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    import torch

    n_bytes = 2 * sum(p.numel() for p in model.state_dict().values())
    try:
        require_free_space(folder.parent, int(n_bytes * 1.05), f"saving the de-quantized {resolved.name} (float16)")
    except InsufficientDiskError as exc:
        return str(exc)
    try:
        tmp.mkdir(parents=True)
        # Round in place, save, upcast back: the caller's model equals what later loads read.
        model.to(torch.float16)
        try:
            model.save_pretrained(str(tmp))
        finally:
            model.to(torch.float32)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps(
            {"name": resolved.name, "source": str(resolved.path), "sha256": sha, "dtype": "float16"},
            indent=2,
        ))
        if (folder / _MARKER).is_file():  # another process got there first; its copy is as good
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if folder.exists():  # a folder without its marker is a leftover: replace it
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return f"writing {folder} failed: {exc}"
    return None
