"""Run the exported MiniLM encoder with onnxruntime + tokenizers (request path: no torch).

Session settings (measured in eval/bench/probe_latency.py): graph optimisation ALL, sequential
execution, ``intra_op_threads`` 1 by default - on the 2-core target a second thread buys little
for one short query and competes with the server's own thread.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from triage.text import valid_unicode

ENCODER_CARD = "encoder.json"
DEFAULT_ENCODER_NAME = "minilm-l6-v2"
VARIANT_FILES = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "int8-l3": "model.l3.int8.onnx",
    "int8-l2": "model.l2.int8.onnx",
    "l0": "model.l0.onnx",
}
#: Variants that keep only the first N transformer layers of the same weights. For routing, depth
#: buys little here: cross-fitted APGR on RouteLLM GSM8K (MiniLM + lexical, logistic heads, 3 seeds)
#: is 0.619 with all 6 layers, 0.639 with 3 and 0.637 with 2, at p50 8.3 / 4.4 / 2.5 ms for a
#: 64-token query on one thread. The 2-layer int8 encoder is the default.
#: ``l0`` keeps no layer: the token embeddings (+ position, LayerNorm) mean-pooled, fp32 (it has no
#: MatMul to quantise), ~0.2 ms instead of ~2 ms. Against ``int8-l2`` in the default probe's set-up
#: (text + aux, C=0.05; eval/bench/results/probe_signals_l0.json, paired 95% intervals): GSM8K APGR
#: -0.002 [-0.033, +0.027], MMLU (5k) +0.014 [-0.014, +0.040], RouterBench AIQ -0.006 [-0.012, +0.001],
#: SimpleQA AIQ -0.005 [-0.013, +0.002], and very short queries fool its tiers ("What is 2 + 2?":
#: P(hard) 0.17, a long proof 0.06). Two sets lean against it, so it is an option (the fast
#: probe: ``triage probe build-default --features text:variant=l0``), not the default.
VARIANT_LAYERS = {"int8-l3": 3, "int8-l2": 2, "l0": 0}
DEFAULT_VARIANT = "int8-l2"


class EncoderError(ValueError):
    """The exported encoder is missing, corrupted or does not match its card."""


# (path, device, inode, size, mtime_ns) -> sha256: a probe load opens several encoder sessions over
# the same files; each file is hashed once per process (~0.19 s of every CLI `route` before), and a
# file rewritten since (its size, mtime or inode change) is hashed again, so corruption is still caught.
_SHA256_MEMO: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if (known := _SHA256_MEMO.get(key)) is not None:
        return known
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    _SHA256_MEMO[key] = digest = h.hexdigest()
    return digest


def make_session(path: Path | str, *, intra_op_threads: int = 1) -> Any:
    """An onnxruntime CPU session with the project's settings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def read_encoder_card(model_dir: Path | str) -> dict[str, Any]:
    path = Path(model_dir) / ENCODER_CARD
    if not path.is_file():
        raise EncoderError(f"no exported encoder at {model_dir} ({ENCODER_CARD} missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EncoderError(f"{path}: not valid JSON ({exc.msg})") from None


class TextEncoder:
    """Sentence embeddings (L2-normalised, ``dim`` wide) from an exported encoder folder.

    Parameters are stored only; the tokenizer and session load (and file hashes are checked) on
    first use.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        variant: str = "int8",
        max_tokens: int = 128,
        intra_op_threads: int = 1,
        workers: int = 2,
        verify: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.variant = variant
        self.max_tokens = max_tokens
        self.intra_op_threads = intra_op_threads
        self.workers = workers
        self.verify = verify
        self._session: Any = None
        self._tokenizer: Any = None
        self._card: dict[str, Any] | None = None

    @property
    def card(self) -> dict[str, Any]:
        if self._card is None:
            self._card = read_encoder_card(self.model_dir)
        return self._card

    @property
    def dim(self) -> int:
        return int(self.card["dim"])

    @property
    def model_file(self) -> str:
        """The ONNX file of this variant (EncoderError, one line, for an unknown variant)."""
        if self.variant not in VARIANT_FILES:
            raise EncoderError(f"unknown encoder variant {self.variant!r}; use one of {', '.join(sorted(VARIANT_FILES))}")
        return VARIANT_FILES[self.variant]

    def file_hashes(self) -> dict[str, str]:
        """sha256 of the files this variant uses, as the encoder card records them."""
        names = [self.model_file, "tokenizer.json"]
        return {n: self.card["files"][n] for n in names}

    def _load(self) -> None:
        model_file = self.model_file
        if model_file not in self.card.get("files", {}):
            raise EncoderError(f"encoder at {self.model_dir} has no {self.variant} variant ({model_file})")
        if self.verify:
            for name, expected in self.file_hashes().items():
                path = self.model_dir / name
                if not path.is_file():
                    raise EncoderError(f"encoder file missing: {path}")
                if file_sha256(path) != expected:
                    raise EncoderError(f"encoder file {path} does not match the sha256 in {ENCODER_CARD}")
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_tokens)
        self._tokenizer = tok
        self._session = make_session(self.model_dir / model_file, intra_op_threads=self.intra_op_threads)

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``input_ids`` and ``attention_mask`` (int64) for a batch."""
        if self._tokenizer is None:
            self._load()
        # encode_batch for one text too: the same ids as encode, but it releases the GIL while it
        # works (up to 32 KiB of probe text: tens of ms that would stall the sidecar's event loop).
        texts = [valid_unicode(t) for t in texts]  # the Rust tokenizer raises TypeError on lone surrogates
        encs = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            k = len(e.ids)
            ids[i, :k] = e.ids
            mask[i, :k] = 1
        return ids, mask

    def _embed_one(self, text: str) -> np.ndarray:
        ids, mask = self.tokenize([text])
        (emb,) = self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return emb[0]

    def encode(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, one text per ``session.run``.

        Why not padded batches: dynamic int8 quantisation picks one activation scale per tensor,
        so a padded batch would make a text's embedding depend on its batch-mates (cosine drift
        ~0.01). One text per run keeps ``encode([t])`` identical at training and at request time;
        throughput comes from ``workers`` concurrent runs instead (onnxruntime releases the GIL).
        """
        if self._session is None:
            self._load()
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if len(texts) <= 1 or self.workers <= 1:
            for i, t in enumerate(texts):
                out[i] = self._embed_one(t)
            return out
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for i, emb in enumerate(pool.map(self._embed_one, texts)):
                out[i] = emb
        return out


def default_encoder_dir(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is None:
        from triage.probes.features.cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "encoders" / DEFAULT_ENCODER_NAME


def require_encoder(cache_dir: Path | str | None = None) -> Path:
    """The exported encoder folder; serving never exports it (that needs torch): a missing or
    outdated export is an :class:`EncoderError` naming the command that makes it."""
    path = default_encoder_dir(cache_dir)
    card = path / ENCODER_CARD
    if not card.is_file():
        raise EncoderError(f"the MiniLM encoder is not exported at {path}: run `triage probe export` "
                           "(or `triage probe build-default`) first")
    if not set(VARIANT_FILES.values()) <= set(read_encoder_card(path).get("files", {})):
        raise EncoderError(f"the MiniLM encoder at {path} was exported by an older Triage: run "
                           "`triage probe export` to add the variants this version reads")
    return path
