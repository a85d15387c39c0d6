"""The transformers engine: fp32 weights de-quantized from the GGUF file, torch on the CPU.

Kept for what needs torch modules (the token router's labelling and decoding, until they move to
the ONNX engine) and as the reference the int4 ONNX engine is compared with
(``eval/bench/local_lm.py``). :func:`triage.lm.get_local_lm` picks the engine.

``prefill(messages)`` keeps its KV cache in a small LRU; ``generate``/``stream`` on the same
messages continue from it instead of running the prompt again (DiffAdapt: one prefill).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from triage.lm.base import MAX_STAT_TOKENS, ChatLM
from triage.lm.decoding import choose_token, distribution_stats
from triage.lm.loading import LoadedModel, load_model
from triage.lm.specs import ResolvedModel
from triage.lm.types import PrefillResult


class LocalLM(ChatLM):
    """A local causal LM on transformers (fp32, CPU)."""

    engine = "transformers"

    def __init__(self, resolved: ResolvedModel, loaded: LoadedModel, *, default_max_tokens: int = 256,
                 prefill_cache_size: int = 4) -> None:
        self.model = loaded.model
        cfg = self.model.config
        super().__init__(
            resolved, loaded.tokenizer, sha256=loaded.sha256, hidden_size=int(cfg.hidden_size),
            n_layers=int(cfg.num_hidden_layers),
            context_length=int(getattr(cfg, "max_position_embeddings", 0) or 4096),
            eos_ids=self._config_eos_ids(loaded), load_seconds=loaded.seconds, load_source=loaded.source,
            default_max_tokens=default_max_tokens, prefill_cache_size=prefill_cache_size,
        )

    @staticmethod
    def _config_eos_ids(loaded: LoadedModel) -> frozenset[int]:
        ids: set[int] = set()
        for src in (loaded.model.config, getattr(loaded.model, "generation_config", None), loaded.tokenizer):
            value = getattr(src, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return frozenset(ids)

    def _forward(self, ids: Sequence[int], cache: Any = None, *, hidden: bool = False) -> Any:
        self.stats.forwards += 1
        with torch.inference_mode():
            return self.model(
                input_ids=torch.tensor([list(ids)], dtype=torch.long),
                past_key_values=cache,
                use_cache=True,
                output_hidden_states=hidden,
                logits_to_keep=1,
            )

    def prefill(self, messages: Sequence[Mapping[str, Any]], *, keep_state: bool = True) -> PrefillResult:
        """One forward pass over the chat-formatted prompt; probe features and a reusable state.

        With ``keep_state`` the result (with its KV cache) is remembered, so a following
        ``generate``/``stream`` on the same messages skips its own prefill.
        """
        t0 = time.perf_counter()
        ids, (a, b) = self.encode_chat(messages)
        self._check_length(ids)
        out = self._forward(ids, hidden=True)
        hs = out.hidden_states
        last_logits = out.logits[0, -1].detach()
        _, entropy, top1, _ = distribution_stats(last_logits, 1)
        # log p(token_i | prefix) for the content tokens: the LM head on the final hidden states.
        first = max(a, 1, b - MAX_STAT_TOKENS)
        if b > first:
            with torch.inference_mode():
                rows = hs[-1][0, first - 1 : b - 1]
                logp = torch.log_softmax(self.model.get_output_embeddings()(rows).float(), dim=-1)
                target = torch.tensor(ids[first:b], dtype=torch.long)
                prompt_lp = logp.gather(1, target[:, None])[:, 0].numpy().astype(np.float32)
        else:
            prompt_lp = np.zeros(0, dtype=np.float32)
        result = PrefillResult(
            model_name=self.name,
            input_ids=tuple(ids),
            hidden_final=hs[-1][0, -1].float().numpy().copy(),
            hidden_middle=hs[self.middle_layer][0, -1].float().numpy().copy(),
            middle_layer=self.middle_layer,
            next_token_entropy=entropy,
            next_token_top1_logprob=top1,
            prompt_logprobs=prompt_lp,
            seconds=time.perf_counter() - t0,
            past_key_values=out.past_key_values if keep_state else None,
            last_logits=last_logits if keep_state else None,
        )
        self.stats.prefills += 1
        if keep_state:
            self._remember(result)
        return result

    def _begin(self, ids: list[int], prefill: PrefillResult | None, max_new: int) -> tuple[Any, Any, bool]:
        cand = self._candidate(ids, prefill)
        if cand is not None and cand.past_key_values is not None:
            old = cand.input_ids
            common = 0
            for x, y in zip(old, ids, strict=False):
                if x != y:
                    break
                common += 1
            keep = min(common, len(ids) - 1)
            if common == len(ids) == len(old) or keep >= 1:
                with torch.inference_mode():
                    cache = copy.deepcopy(cand.past_key_values)  # the stored state stays reusable
            if common == len(ids) == len(old):
                return cache, cand.last_logits, True
            if keep >= 1:  # continue from the shared prefix (explicit prefill only)
                cache.crop(-(len(old) - keep))
                out = self._forward(ids[keep:], cache)
                return out.past_key_values, out.logits[0, -1], True
        out = self._forward(ids)
        return out.past_key_values, out.logits[0, -1], False

    def _advance(self, state: Any, token: int) -> tuple[Any, Any]:
        out = self._forward([token], state)
        return out.past_key_values, out.logits[0, -1]

    def _rng(self, seed: int) -> Any:
        return torch.Generator().manual_seed(seed)

    def _stats(self, logits: Any, top_k: int) -> tuple[Any, float, float, list[tuple[int, float]]]:
        return distribution_stats(logits, top_k)

    def _choose(self, logits: Any, *, temperature: float, top_p: float, rng: Any) -> int:
        return choose_token(logits, temperature=temperature, top_p=top_p, generator=rng)


def load_transformers_lm(resolved: ResolvedModel) -> LocalLM:
    """Load ``resolved`` on the transformers engine (applies ``lm_threads`` to torch first)."""
    _set_threads()
    return LocalLM(resolved, load_model(resolved))


def _set_threads() -> None:
    """Apply ``get_settings().lm_threads`` (process-wide in torch) before the first model runs."""
    from triage.settings import get_settings  # settings only; probes import no routing code

    threads = get_settings().lm_threads
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))
