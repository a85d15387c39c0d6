"""Load a local causal LM with transformers: fp32 on CPU, offline, with a safetensors cache.

Loading a GGUF file makes transformers dequantise every tensor (about 20 s for SmolLM2-135M on
two cores). The dequantised weights are therefore saved once as safetensors under
``<cache_dir>/models/<name>-<sha12>/`` (sha of the GGUF file) and later loads read that folder
(well under a second). transformers refuses to ``save_pretrained`` a GGUF-loaded model until its
``hf_quantizer`` and ``config.quantization_config`` are removed - the weights are plain fp32 by
then, so nothing is lost.
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

from triage.lm.specs import ModelLoadError, ResolvedModel, models_cache_dir

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
    if source == "gguf" and use_cache:
        _save_cache(model, tokenizer, cache_folder(resolved, sha), resolved, sha)
    return LoadedModel(model=model, tokenizer=tokenizer, sha256=sha, source=source, seconds=time.perf_counter() - t0)


def _save_cache(model: Any, tokenizer: Any, folder: Path, resolved: ResolvedModel, sha: str) -> None:
    """Write the dequantised model as safetensors: temp folder, marker last, then rename."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(
            json.dumps({"name": resolved.name, "source": str(resolved.path), "sha256": sha}, indent=2)
        )
        if (folder / _MARKER).is_file():  # another process got there first; its copy is as good
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if folder.exists():  # a folder without its marker is a leftover: replace it
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        # A full disk or a read-only cache only costs the next load its speed.
        shutil.rmtree(tmp, ignore_errors=True)
