"""Where an int4 ONNX build of a local model lives, what its card says, and the check made on load.

A build is a folder ``<cache>/models/onnx/<name>-<sha12>-<tag>/`` written by
``triage models build NAME`` (:mod:`triage.lm.onnx_build`, build-time only). Its card,
``triage-onnx.json``, names the source file (sha256 of the GGUF or HF folder it came from), the
builder (onnxruntime-genai version, precision, options), the model's shape and the sha256 and size
of every file. :func:`verify_build` refuses a folder whose files differ from the card or whose
source is not the file the name resolves to today - the same rule as probe artifacts.

This module imports nothing heavy: serving verifies builds, it never makes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.lm.specs import ModelLoadError, ResolvedModel, models_cache_dir

CARD_FILE = "triage-onnx.json"
#: 2: the card also records the parameter count and where the input embedding table lies (the token
#: router reads it); a version-1 build is rebuilt by ``triage models build``.
CARD_VERSION = 2

#: The quantization this project builds with, chosen by measurement (``eval/bench/local_lm.py
#: --quant-sweep``; figures in the README): 4-bit weights in blocks of 32, int8 activations
#: (accuracy level 4) - the builder's CPU defaults, which decoded fastest with no accuracy loss
#: measured on the GSM8K slice.
DEFAULT_QUANT: dict[str, Any] = {"precision": "int4", "block_size": 32, "accuracy_level": 4}


class ModelNotBuiltError(ModelLoadError):
    """The model has no int4 ONNX build yet (serving never builds: it names the command)."""


class BuildVerificationError(ModelLoadError):
    """A build folder does not match its card, or was built from a different source file."""


@dataclass(frozen=True)
class BuildCard:
    folder: Path
    data: dict[str, Any]

    @property
    def hidden_size(self) -> int:
        return int(self.data["shape"]["hidden_size"])

    @property
    def n_layers(self) -> int:
        return int(self.data["shape"]["n_layers"])

    @property
    def middle_layer(self) -> int:
        return int(self.data["shape"]["middle_layer"])

    @property
    def context_length(self) -> int:
        return int(self.data["shape"]["context_length"])

    @property
    def eos_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.data["shape"].get("eos_token_ids", []))


def quant_tag(quant: dict[str, Any]) -> str:
    return f"{quant['precision']}-b{quant['block_size']}-a{quant['accuracy_level']}"


def build_folder(resolved: ResolvedModel, source_sha256: str, quant: dict[str, Any] | None = None,
                 layers: int | None = None) -> Path:
    """Where a build lives; ``layers`` (a build cut after its first K layers) gets its own folder."""
    q = quant or DEFAULT_QUANT
    depth = "" if layers is None else f"-L{int(layers)}"
    return models_cache_dir() / "onnx" / f"{resolved.name}-{source_sha256[:12]}-{quant_tag(q)}{depth}"


def build_command(name: str) -> str:
    return f"triage models build {name}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in ``folder`` but the card (what the card records)."""
    return {
        p.name: {"sha256": file_sha256(p), "size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != CARD_FILE
    }


def read_card(folder: Path) -> BuildCard:
    path = folder / CARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildVerificationError(f"{folder}: no {CARD_FILE}; the build did not finish") from None
    except (OSError, ValueError) as exc:
        raise BuildVerificationError(f"{path}: unreadable card ({exc})") from exc
    if not isinstance(data, dict) or data.get("card_version") != CARD_VERSION or "files" not in data:
        raise BuildVerificationError(f"{path}: not a version-{CARD_VERSION} Triage ONNX build card")
    return BuildCard(folder=folder, data=data)


def verify_build(folder: Path, *, name: str, source_sha256: str) -> BuildCard:
    """The card of a whole, matching build; :class:`BuildVerificationError` naming what differs."""
    fix = f"delete {folder} and run `{build_command(name)}`"
    try:
        card = read_card(folder)
    except BuildVerificationError as exc:
        raise BuildVerificationError(f"{exc}; run `{build_command(name)} --force`") from None
    if card.data.get("source", {}).get("sha256") != source_sha256:
        raise BuildVerificationError(
            f"{folder} was built from a different {name!r} file "
            f"(sha256 {str(card.data.get('source', {}).get('sha256'))[:12]}…, now {source_sha256[:12]}…); {fix}"
        )
    for fname, want in card.data["files"].items():
        path = folder / fname
        if not path.is_file():
            raise BuildVerificationError(f"{folder}: {fname} is missing; {fix}")
        size = path.stat().st_size
        if size != want["size"]:
            raise BuildVerificationError(f"{folder}: {fname} has {size} bytes, the card says {want['size']}; {fix}")
        if file_sha256(path) != want["sha256"]:
            raise BuildVerificationError(f"{folder}: {fname} differs from the card (sha256); {fix}")
    return card


def find_build(resolved: ResolvedModel, source_sha256: str) -> Path:
    """The build folder of ``resolved`` with the default quantization, or :class:`ModelNotBuiltError`."""
    folder = build_folder(resolved, source_sha256)
    if not (folder / CARD_FILE).is_file():
        raise ModelNotBuiltError(
            f"local model {resolved.name!r} has no int4 ONNX build in {folder.parent}; "
            f"run `{build_command(resolved.name)}` (needs the build extra: pip install 'triage-router[local]')"
        )
    return folder
