"""What the token router needs from a local LM engine, for both engines of :mod:`triage.lm`.

* an incremental state (:class:`TorchState`, :class:`OnnxState`): run new tokens after those it
  holds, give the final hidden state (after the final norm) and next-token logits of the last one;
  a *branch* of it holding only a prefix (label continuations);
* a teacher-forced pass over a whole sequence: every position's hidden state and logits at once;
* the input embedding of a token (router feature) and the parameter count (benchmark).

The transformers engine answers with torch tensors, the int4 ONNX engine (onnxruntime-genai, no
torch) with numpy arrays; :mod:`triage.token_router.features` takes either. On ONNX the input
embedding table is read by ``np.memmap`` from the build's external data, at the offset its build
card records (``embeddings``, :func:`triage.lm.onnx_build.embedding_location`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from triage.lm.onnx_engine import HIDDEN_FINAL  # the final hidden states output (after the final norm)
from triage.lm.specs import LocalModelError


_tables: dict[Path, np.ndarray] = {}
_tables_lock = threading.Lock()


def is_onnx(lm: Any) -> bool:
    return getattr(lm, "engine", None) == "onnx"


def engine_of(lm: Any) -> str:
    """The engine tag the features of ``lm`` come from (a head trained on one refuses the other)."""
    from triage.lm.models import engine_tag

    return engine_tag(getattr(lm, "engine", "transformers"))


class TorchState:
    """KV cache of a transformers model (fp32)."""

    def __init__(self, lm: Any, cache: Any = None) -> None:
        self.lm = lm
        model = lm.model
        self.base = getattr(model, "model", None) or model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.cache = cache

    def run(self, new: Sequence[int]) -> tuple[Any, Any]:
        import torch

        with torch.inference_mode():
            out = self.base(input_ids=torch.tensor([list(new)], dtype=torch.long), past_key_values=self.cache,
                            use_cache=True)
            self.cache = out.past_key_values
            hidden = out.last_hidden_state[0, -1]
            return hidden, self.lm_head(hidden)

    def branch(self, n_prefix: int) -> tuple[TorchState, int]:
        """A copy holding the first ``n_prefix`` tokens (and that count)."""
        import copy

        cache = copy.deepcopy(self.cache)
        drop = cache.get_seq_length() - n_prefix
        if drop > 0:
            cache.crop(-drop)  # transformers 5: a negative count removes that many trailing positions
        return TorchState(self.lm, cache), n_prefix


class OnnxState:
    """One onnxruntime-genai generator (its KV cache) of an int4 ONNX model.

    Never rewinds: onnxruntime-genai 0.18 corrupts the cache on a second ``rewind_to`` with no
    append between (:mod:`triage.lm.onnx_engine`), so a branch is a fresh generator.
    """

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.dec: Any = None

    def run(self, new: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        if self.dec is None:
            self.dec = self.lm._new_decoder()
        logits = self.lm._append(self.dec, list(new))  # counts lm.stats.forwards
        hidden = np.asarray(self.dec.generator.get_output(HIDDEN_FINAL), dtype=np.float32)[0, -1].copy()
        return hidden, logits

    def branch(self, n_prefix: int) -> tuple[OnnxState, int]:
        """A fresh generator: it holds nothing yet, its first run prefills the prefix in one append."""
        return OnnxState(self.lm), 0


def new_state(lm: Any) -> TorchState | OnnxState:
    return OnnxState(lm) if is_onnx(lm) else TorchState(lm)


def teacher_forced(lm: Any, ids: Sequence[int], start: int) -> tuple[Any, Any]:
    """One forward over ``ids``: final hidden states (n, H) and logits (n, V) of positions ``start..``."""
    if is_onnx(lm):
        dec = lm._new_decoder()
        lm._append(dec, list(ids))
        gen = dec.generator
        hidden = np.asarray(gen.get_output(HIDDEN_FINAL), dtype=np.float32)[0, start:].copy()
        logits = np.asarray(gen.get_output("logits"), dtype=np.float32)[0, start:].copy()  # (n, V): offline only
        return hidden, logits
    import torch

    model = lm.model
    base = getattr(model, "model", None) or model.get_decoder()
    with torch.inference_mode():
        hidden = base(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=False).last_hidden_state[0, start:]
        return hidden, model.get_output_embeddings()(hidden)


def token_embeddings(lm: Any, tokens: Any) -> Any:
    """Input embeddings (n, H) of ``tokens`` (ids): torch on transformers, numpy on ONNX."""
    if is_onnx(lm):
        return np.asarray(_onnx_table(lm)[np.asarray(tokens, dtype=np.int64)], dtype=np.float32)
    import torch

    with torch.inference_mode():
        return lm.model.get_input_embeddings().weight[torch.as_tensor(tokens, dtype=torch.long)]


def _onnx_table(lm: Any) -> np.ndarray:
    card = lm.card
    table = _tables.get(card.folder)
    if table is not None:
        return table
    name = lm.name
    rebuild = f"rebuild it with `triage models build {name} --force`"
    loc = card.data.get("embeddings")
    if not loc:
        raise LocalModelError(f"the ONNX build of {name!r} has no plain fp32 input embedding table (the builder "
                              "quantized it with the output layer); the token router cannot read token embeddings")
    shape = tuple(int(d) for d in loc["shape"])
    if len(shape) != 2 or shape[1] != lm.hidden_size:
        raise LocalModelError(f"the ONNX build of {name!r}: embedding table {shape} does not fit hidden size "
                              f"{lm.hidden_size}; {rebuild}")
    table = np.memmap(card.folder / loc["file"], dtype=np.dtype(loc["dtype"]), mode="r",
                      offset=int(loc["offset"]), shape=shape)
    with _tables_lock:
        _tables[card.folder] = table
    return table


def param_count(lm: Any) -> int:
    """Parameters (embeddings included, tied weights once) of the model ``lm`` runs."""
    if not is_onnx(lm):
        return sum(p.numel() for p in lm.model.parameters())
    return int(lm.card.data["shape"]["n_params"])


__all__ = ["OnnxState", "TorchState", "engine_of", "is_onnx", "new_state", "param_count", "teacher_forced",
           "token_embeddings"]
