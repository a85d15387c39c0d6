"""Offline token counting with OpenAI's own BPE tables (tiktoken), verified by hash.

No network at run time: the BPE files are looked up where they already are on disk. litellm (a
core dependency) ships tiktoken's cache files for ``cl100k_base`` and ``p50k_base`` so that tiktoken
works offline; a ``TIKTOKEN_CACHE_DIR`` set by the user is searched first.

* ``cl100k_base`` is the tokenizer of gpt-4 / gpt-3.5-turbo, and the one RouterBench used (through
  ``tokencost``) to price every model's responses. For other vendors' models it is a stand-in.
* ``r50k_base`` is GPT-3's tokenizer. When its file is absent it is rebuilt from ``p50k_base``, which is
  ``r50k_base`` plus 24 tokens for runs of spaces (ranks 50257..50280): dropping those ranks gives a file
  whose SHA-256 equals OpenAI's published hash for ``r50k_base.tiktoken``, so the result is exact.

Every file is checked against the SHA-256 that tiktoken itself pins before it is used.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken

from triage.errors import TriageError

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# SHA-256 of the published BPE files, as pinned in tiktoken_ext/openai_public.py.
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
}

_PATTERNS = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "r50k_base": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
}
_SPECIAL = {
    "cl100k_base": {"<|endoftext|>": 100257},
    "r50k_base": {"<|endoftext|>": 50256},
}
_R50K_VOCAB = 50257  # p50k_base ranks >= this are the whitespace-run tokens r50k_base lacks

SUPPORTED = tuple(_PATTERNS)


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of plain text (special-token strings are counted as ordinary text)."""

    name: str  # e.g. "tiktoken/cl100k_base": recorded in replay records as ``token_counter``
    encoding: tiktoken.Encoding

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(self.encoding.encode_ordinary(t)) for t in texts]


def get_counter(encoding: str = "cl100k_base") -> TokenCounter:
    """The counter for ``encoding`` (``cl100k_base`` or ``r50k_base``), loaded once per process."""
    if encoding not in _PATTERNS:
        raise ValueError(f"unknown encoding {encoding!r}; supported: {', '.join(SUPPORTED)}")
    return _load_counter(encoding)


@lru_cache(maxsize=None)
def _load_counter(encoding: str) -> TokenCounter:
    # Memoised: building the rank table takes ~0.3 s and the result is immutable.
    ranks = _mergeable_ranks(encoding)
    enc = tiktoken.Encoding(
        name=encoding, pat_str=_PATTERNS[encoding], mergeable_ranks=ranks, special_tokens=_SPECIAL[encoding]
    )
    return TokenCounter(name=f"tiktoken/{encoding}", encoding=enc)


def _search_dirs() -> list[Path]:
    dirs: list[Path] = []
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    # Locate litellm's bundled files without importing it (its import fetches a price map online).
    spec = importlib.util.find_spec("litellm")
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs += [Path(root) / "litellm_core_utils" / "tokenizers", Path(root) / "llms" / "tokenizers"]
    dirs.append(Path(tempfile.gettempdir()) / "data-gym-cache")
    return dirs


def _find_verified(name: str) -> bytes | None:
    """Bytes of tiktoken's cached ``name`` file if one on disk has the pinned hash."""
    key = hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()  # tiktoken's cache file name
    for d in _search_dirs():
        path = d / key
        if path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == _SHA256[name]:
                return data
    return None


def _mergeable_ranks(encoding: str) -> dict[bytes, int]:
    data = _find_verified(encoding)
    if data is None and encoding == "r50k_base":
        p50k = _find_verified("p50k_base")
        if p50k is not None:
            lines = [ln for ln in p50k.splitlines() if ln and int(ln.split()[1]) < _R50K_VOCAB]
            derived = b"\n".join(lines) + b"\n"
            if hashlib.sha256(derived).hexdigest() == _SHA256["r50k_base"]:
                data = derived
    if data is None:
        raise TriageError(
            f"no verified {encoding} BPE file on disk (looked in "
            f"{', '.join(str(d) for d in _search_dirs())}); set TIKTOKEN_CACHE_DIR to a folder holding it"
        )
    return {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in data.splitlines() if ln)}
