"""The default local LM engine: int4 ONNX decoders run by onnxruntime-genai (no torch).

One ``og.Model`` per loaded model; every prefill or generation gets its own ``og.Generator``
(its KV cache). The prefill that probes is the prefill that answers: ``prefill(messages)`` runs
the prompt once and reads, from that one run, the last token's final and middle-layer hidden
states, the next-token distribution and the prompt tokens' log-probs (graph outputs the build
adds, :mod:`triage.lm.onnx_build`); the generator is then remembered, and a generation on the same
messages continues from it. A generation on other messages sharing a prefix rewinds the
remembered generator to the shared prefix (``rewind_to``) and appends the rest. A different system
prompt or chat template changes the prompt's first tokens, so it means a new prefill.

After a generation the remembered generator goes back to its prefill as it is (prompt + answer)
and is rewound when it serves again, so the same prefill serves again; a generator in use is taken
out of the memory, so two requests never share one. Rewinding is lazy because onnxruntime-genai
(0.18) corrupts the KV cache when ``rewind_to`` is called twice with no ``append_tokens`` between
(the second rewind after a shrinking one gives wrong logits, no error): a generator rewinds at most
once between two appends, else the request prefills afresh (tests/test_lm_onnx.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from triage.lm.base import MAX_STAT_TOKENS, ChatLM
from triage.lm.decoding import choose_token_np, distribution_stats_np
from triage.lm.onnx_card import BuildCard, find_build, verify_build
from triage.lm.specs import ModelLoadError, ResolvedModel
from triage.lm.tokenizer import ChatTokenizer
from triage.lm.types import PrefillResult

HIDDEN_FINAL = "hidden_states"
HIDDEN_MIDDLE = "aux_hidden_states"
TOKEN_LOGPROBS = "token_logprobs"


@dataclass
class _Decoder:
    """One generator and the token ids its KV cache holds."""

    generator: Any
    ids: list[int]
    owner: PrefillResult | None = None  # the remembered prefill it belongs to, if any
    rewound: bool = False  # rewound since the last append: a second rewind now would corrupt it


class OnnxLM(ChatLM):
    """A local causal LM as an int4 ONNX decoder (onnxruntime-genai, CPU)."""

    engine = "onnx"

    def __init__(self, resolved: ResolvedModel, card: BuildCard, *, threads: int | None = None,
                 default_max_tokens: int = 256, prefill_cache_size: int = 4) -> None:
        import onnxruntime_genai as og

        t0 = time.perf_counter()
        self._og = og
        config = og.Config(str(card.folder))
        overlay: dict[str, Any] = {
            # A KV cache that grows with the sequence: a remembered prefill holds its prompt's
            # cache, not a context-length buffer (decoding measured 2% slower, see the README).
            "search": {"past_present_share_buffer": False, "max_length": card.context_length},
        }
        if threads:
            overlay["model"] = {"decoder": {"session_options": {"intra_op_num_threads": int(threads)}}}
        config.overlay(json.dumps(overlay))
        try:
            self.model = og.Model(config)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeErrors
            raise ModelLoadError(f"cannot load the ONNX build of {resolved.name!r} in {card.folder}: {exc}") from exc
        self.card = card
        super().__init__(
            resolved, ChatTokenizer.from_folder(card.folder), sha256=card.data["source"]["sha256"],
            hidden_size=card.hidden_size, n_layers=card.n_layers, context_length=card.context_length,
            eos_ids=card.eos_ids, load_seconds=0.0, load_source="onnx-int4",
            default_max_tokens=default_max_tokens, prefill_cache_size=prefill_cache_size,
        )
        self.middle_layer = card.middle_layer
        self.load_seconds = time.perf_counter() - t0

    # -- the engine ------------------------------------------------------------------------------

    def _new_decoder(self) -> _Decoder:
        params = self._og.GeneratorParams(self.model)
        return _Decoder(self._og.Generator(self.model, params), [])

    def _append(self, dec: _Decoder, ids: Sequence[int]) -> np.ndarray:
        """Run ``ids`` through the model after what ``dec`` holds; the next-token logits."""
        dec.generator.append_tokens(np.asarray(ids, dtype=np.int32))
        dec.ids.extend(int(i) for i in ids)
        dec.rewound = False
        self.stats.forwards += 1
        return np.asarray(dec.generator.get_logits(), dtype=np.float32).reshape(-1).copy()

    def prefill(self, messages: Sequence[Mapping[str, Any]], *, keep_state: bool = True) -> PrefillResult:
        """One run over the chat-formatted prompt: probe features and (``keep_state``) a generator
        that a following ``generate``/``stream`` on the same messages continues from."""
        t0 = time.perf_counter()
        ids, (a, b) = self.encode_chat(messages)
        self._check_length(ids)
        dec = self._new_decoder()
        last_logits = self._append(dec, ids)
        gen = dec.generator
        hidden_final = np.asarray(gen.get_output(HIDDEN_FINAL), dtype=np.float32)[0, -1].copy()
        hidden_middle = np.asarray(gen.get_output(HIDDEN_MIDDLE), dtype=np.float32)[0, -1, : self.hidden_size].copy()
        # token_logprobs[i] = log p(ids[i + 1] | ids[: i + 1]); the query's tokens are ids[a:b].
        all_lp = np.asarray(gen.get_output(TOKEN_LOGPROBS), dtype=np.float32).reshape(-1)
        first = max(a, 1, b - MAX_STAT_TOKENS)
        prompt_lp = all_lp[first - 1 : b - 1].copy() if b > first else np.zeros(0, dtype=np.float32)
        _, entropy, top1, _ = distribution_stats_np(last_logits, 1)
        result = PrefillResult(
            model_name=self.name,
            input_ids=tuple(ids),
            hidden_final=hidden_final,
            hidden_middle=hidden_middle,
            middle_layer=self.middle_layer,
            next_token_entropy=entropy,
            next_token_top1_logprob=top1,
            prompt_logprobs=prompt_lp,
            seconds=time.perf_counter() - t0,
            past_key_values=dec if keep_state else None,
            last_logits=last_logits if keep_state else None,
        )
        self.stats.prefills += 1
        if keep_state:
            dec.owner = result
            self._remember(result)
        return result

    def _take(self, prefill: PrefillResult) -> _Decoder | None:
        """The remembered generator of ``prefill``, taken out for exclusive use."""
        with self._lock:
            dec = prefill.past_key_values
            if isinstance(dec, _Decoder):
                prefill.past_key_values = None
                return dec
        return None

    def _begin(self, ids: list[int], prefill: PrefillResult | None, max_new: int) -> tuple[Any, Any, bool]:
        cand = self._candidate(ids, prefill)
        if cand is not None:
            dec = self._take(cand)
            if dec is not None:
                common = 0
                for x, y in zip(dec.ids, ids, strict=False):
                    if x != y:
                        break
                    common += 1
                # dec.ids starts with cand's prompt, so a whole match means ids is that prompt
                exact = common == len(ids) == len(cand.input_ids) and cand.last_logits is not None
                if exact and self._rewind(dec, len(ids)):
                    return dec, cand.last_logits, True
                keep = min(common, len(ids) - 1)
                if keep >= 1 and self._rewind(dec, keep):  # continue from the shared prefix
                    return dec, self._append(dec, ids[keep:]), True
                self._give_back(dec)
        dec = self._new_decoder()
        return dec, self._append(dec, ids), False

    def _advance(self, state: Any, token: int) -> tuple[Any, Any]:
        return state, self._append(state, [token])

    def _end(self, state: Any) -> None:
        self._give_back(state)

    def _rewind(self, dec: _Decoder, n: int) -> bool:
        """Cut ``dec`` back to its first ``n`` tokens; False where that needs a second rewind with
        no append since the last one (onnxruntime-genai would give wrong logits, see above)."""
        if n == len(dec.ids):
            return True
        if dec.rewound:
            return False
        dec.generator.rewind_to(n)
        del dec.ids[n:]
        dec.rewound = True
        return True

    def _give_back(self, dec: _Decoder) -> None:
        """Hand a prefill's generator back to that prefill (still holding the answer: the next
        use rewinds it, once), so it serves again like the transformers engine's copied cache;
        other generators are dropped. The generator lives as long as its :class:`PrefillResult`."""
        owner = dec.owner
        if owner is None:
            return
        prompt = list(owner.input_ids)
        n = len(prompt)
        if dec.ids[:n] != prompt:
            return  # rewound below its prompt to continue another one: a fresh prefill next time
        with self._lock:
            owner.past_key_values = dec

    def _rng(self, seed: int) -> Any:
        return np.random.default_rng(seed)

    def _stats(self, logits: Any, top_k: int) -> tuple[Any, float, float, list[tuple[int, float]]]:
        return distribution_stats_np(logits, top_k)

    def _choose(self, logits: Any, *, temperature: float, top_p: float, rng: Any) -> int:
        return choose_token_np(logits, temperature=temperature, top_p=top_p, rng=rng)


def default_threads() -> int:
    """Intra-op threads for the ONNX engine: ``lm_onnx_threads``, else every core the process may
    use (measured: the library default ran about 2x slower on 2 cores)."""
    from triage.settings import get_settings

    threads = get_settings().lm_onnx_threads
    if threads:
        return int(threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def load_onnx_lm(resolved: ResolvedModel) -> OnnxLM:
    """Verify and load the int4 ONNX build of ``resolved`` (:class:`ModelNotBuiltError` naming the
    build command when there is none)."""
    source_sha = resolved.sha256()
    folder = find_build(resolved, source_sha)
    card = verify_build(folder, name=resolved.name, source_sha256=source_sha)
    return OnnxLM(resolved, card, threads=default_threads())
