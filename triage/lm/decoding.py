"""Decoding helpers: token choice (greedy / temperature / top-p) and stop-sequence handling.

Streaming and non-streaming generation run the very same loop; :class:`TextEmitter` decides
which part of the growing decoded text may be shown, so the concatenated stream deltas equal the
non-streamed text exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_REPLACEMENT = "\ufffd"  # what a partial UTF-8 sequence decodes to


class TextEmitter:
    """Emit the decoded text piece by piece, holding back what could still change.

    Held back: a suffix that is a prefix of a stop sequence, and trailing replacement characters
    (a multi-byte character split across tokens). The first complete stop sequence ends the
    text (excluded from it, as in the OpenAI API).
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self._max_stop = max((len(s) for s in self.stops), default=0)
        self.text = ""  # emitted so far
        self.stopped = False

    def _delta(self, upto: str) -> str:
        if upto.startswith(self.text):
            delta = upto[len(self.text) :]
        else:  # the decoded prefix changed (rare tokenizer clean-up); never un-emit
            delta = upto[len(self.text) :] if len(upto) > len(self.text) else ""
        self.text += delta
        return delta

    def update(self, full: str) -> str:
        """Feed the full decoded text so far; returns the new text that can be shown."""
        if self.stopped:
            return ""
        if self.stops:
            start = max(0, len(self.text) - self._max_stop + 1)
            hits = [i for i in (full.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.stopped = True
                return self._delta(full[: max(min(hits), len(self.text))])
        hold = 0
        for k in range(min(self._max_stop - 1, len(full) - len(self.text)), 0, -1):
            tail = full[-k:]
            if any(s.startswith(tail) for s in self.stops):
                hold = k
                break
        while hold < len(full) - len(self.text) and full[len(full) - hold - 1] == _REPLACEMENT:
            hold += 1
        return self._delta(full[: len(full) - hold])

    def flush(self, full: str) -> str:
        """Generation ended without a stop sequence: show everything."""
        return "" if self.stopped else self._delta(full)


def normalise_stop(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    out = [s for s in stop if isinstance(s, str) and s]
    if len(out) != len([s for s in stop if s]):
        raise ValueError("stop must be a string or a list of strings")
    return out


def choose_token(logits: Any, *, temperature: float, top_p: float, generator: Any) -> int:
    """Greedy when ``temperature <= 0``; otherwise sample from softmax(logits / T) within top-p."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / float(temperature), dim=-1)
    if 0.0 < top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_probs, dim=-1)
        keep = (cum - sorted_probs) < top_p  # always keeps the most likely token
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[pick].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def distribution_stats(logits: Any, top_k: int) -> tuple[Any, float, float, list[tuple[int, float]]]:
    """(log-probs, entropy in nats, top-1 log-prob, top-k (id, log-prob)) of raw ``logits``."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = float(-(logp.exp() * logp).nan_to_num(0.0).sum().item())  # 0 * -inf terms count 0
    k = max(1, top_k)
    values, ids = torch.topk(logp, k)
    top = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    return logp, entropy, top[0][1], top[:top_k]


# -- numpy twins (the ONNX engine's logits are numpy arrays) ---------------------------------------


def log_softmax_np(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def distribution_stats_np(logits: np.ndarray, top_k: int) -> tuple[np.ndarray, float, float, list[tuple[int, float]]]:
    """:func:`distribution_stats` for a 1-d numpy array of logits."""
    logp = log_softmax_np(logits)
    p = np.exp(logp)
    entropy = float(-(p * np.where(np.isfinite(logp), logp, 0.0)).sum())
    k = max(1, top_k)
    ids = np.argpartition(-logp, k - 1)[:k] if k < logp.size else np.arange(logp.size)
    ids = ids[np.argsort(-logp[ids], kind="stable")]
    top = [(int(i), float(logp[i])) for i in ids]
    return logp, entropy, top[0][1], top[:top_k]


def choose_token_np(logits: np.ndarray, *, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """:func:`choose_token` for numpy logits, sampling with a numpy ``Generator``."""
    if temperature <= 0:
        return int(np.argmax(logits))
    probs = np.exp(log_softmax_np(np.asarray(logits, dtype=np.float64) / float(temperature)))
    if 0.0 < top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        keep = (np.cumsum(sorted_probs) - sorted_probs) < top_p  # always keeps the most likely token
        kept = np.where(keep, sorted_probs, 0.0)
        return int(order[rng.choice(kept.size, p=kept / kept.sum())])
    return int(rng.choice(probs.size, p=probs / probs.sum()))
