"""The local causal LM runtime: chat formatting, prefill (probe features + reusable KV cache),
and one token-by-token decoding loop shared by streaming and non-streaming generation.

One :class:`LocalLM` per model per process (:func:`get_local_lm`), so the difficulty probe and
the ``local`` provider share the loaded weights. ``prefill(messages)`` keeps its KV cache in a
small LRU; ``generate``/``stream`` on the same messages continue from it instead of running the
prompt again, so self-probing + answering costs one prefill (DiffAdapt).
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from triage.lm.chat import TokenFloor, content_offset, count_tokens, normalise_messages, token_floor
from triage.lm.decoding import TextEmitter, choose_token, distribution_stats, normalise_stop
from triage.lm.loading import LoadedModel, load_model
from triage.lm.specs import (
    DEFAULT_LOCAL_MODEL,
    GenerationTimeoutError,
    LocalModelError,
    PromptTooLongError,
    ResolvedModel,
    resolve_model,
)
from triage.lm.types import GenerationResult, PrefillResult, StreamEvent, TokenInfo, TopLogprob

#: Prompt-token log-prob statistics use at most this many (last) content tokens.
MAX_STAT_TOKENS = 1024
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


@dataclass
class LMStats:
    prefills: int = 0  # prefill() calls
    prefill_reuses: int = 0  # generations that continued from a stored prefill
    generations: int = 0
    generated_tokens: int = 0


class LocalLM:
    """A loaded local causal LM (fp32, CPU). Build it with :func:`get_local_lm`."""

    def __init__(
        self,
        resolved: ResolvedModel,
        loaded: LoadedModel,
        *,
        default_max_tokens: int = 256,
        prefill_cache_size: int = 4,
    ) -> None:
        self.resolved = resolved
        self.name = resolved.name
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.sha256 = loaded.sha256
        self.load_seconds = loaded.seconds
        self.load_source = loaded.source
        self.default_max_tokens = default_max_tokens
        cfg = self.model.config
        self.hidden_size = int(cfg.hidden_size)
        self.n_layers = int(cfg.num_hidden_layers)
        self.middle_layer = self.n_layers // 2
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or 4096)
        self.eos_ids = self._end_of_turn_ids()
        self.stats = LMStats()
        self._prefills: OrderedDict[tuple[int, ...], PrefillResult] = OrderedDict()
        self._prefill_cache_size = prefill_cache_size
        self._token_floor: TokenFloor | None = token_floor(self.tokenizer)  # at load, not per prompt
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalLM(name={self.name!r}, layers={self.n_layers}, hidden={self.hidden_size})"

    def _end_of_turn_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for src in (self.model.config, getattr(self.model, "generation_config", None), self.tokenizer):
            value = getattr(src, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab)
        return frozenset(ids)

    # -- chat formatting -------------------------------------------------------------------------

    def chat_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text the model sees: its chat template with the assistant turn opened."""
        return self.tokenizer.apply_chat_template(
            normalise_messages(messages), tokenize=False, add_generation_prompt=True
        )

    def encode_chat(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[int], tuple[int, int]]:
        """Prompt token ids and the ``[start, end)`` token span of the last message's content."""
        msgs = normalise_messages(messages)
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        self._refuse_sooner(text)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        content = msgs[-1]["content"]
        start = content_offset(self.tokenizer, msgs, text)
        if start < 0 or not content:
            return ids, (len(ids), len(ids))
        end = start + len(content)
        span = [i for i, (a, _) in enumerate(enc["offset_mapping"]) if start <= a < end]
        if not span:
            return ids, (len(ids), len(ids))
        return ids, (span[0], span[-1] + 1)

    # -- prefill ---------------------------------------------------------------------------------

    def _forward(self, ids: Sequence[int], cache: Any = None, *, hidden: bool = False) -> Any:
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
            with self._lock:
                self._prefills[result.input_ids] = result
                self._prefills.move_to_end(result.input_ids)
                while len(self._prefills) > self._prefill_cache_size:
                    self._prefills.popitem(last=False)
        return result

    def stored_prefill(self, messages: Sequence[Mapping[str, Any]]) -> PrefillResult | None:
        """The remembered prefill a generation on ``messages`` would continue from, if any."""
        ids, _ = self.encode_chat(messages)
        with self._lock:
            return self._prefills.get(tuple(ids))

    def forget_prefills(self) -> None:
        """Drop remembered prefills (and their KV caches)."""
        with self._lock:
            self._prefills.clear()

    def _refuse_sooner(self, text: str) -> None:
        """:class:`PromptTooLongError` for a rendered prompt that cannot fit, before the slow full
        tokenization (see :func:`triage.lm.chat.count_tokens`); prompts that fit pass untouched."""
        if len(text) < self.context_length:  # short prompts: the exact count alone, no second pass
            return
        floor = self._token_floor
        at_least = floor.min_tokens(text) if floor is not None else 0
        if at_least >= self.context_length:
            raise PromptTooLongError(f"prompt has at least {at_least} tokens; local model {self.name!r} "
                                     f"takes at most {self.context_length - 1}")
        n = count_tokens(self.tokenizer, text)
        if n is not None and n >= self.context_length:
            raise PromptTooLongError(
                f"prompt has {n} tokens; local model {self.name!r} takes at most {self.context_length - 1}"
            )

    def _check_length(self, ids: Sequence[int]) -> None:
        if len(ids) >= self.context_length:
            raise PromptTooLongError(
                f"prompt has {len(ids)} tokens; local model {self.name!r} takes at most {self.context_length - 1}"
            )

    def _start(self, ids: list[int], prefill: PrefillResult | None) -> tuple[Any, Any, bool]:
        """(KV cache, next-token logits, reused?) for the prompt ``ids``."""
        cand = prefill
        if cand is None:
            with self._lock:
                cand = self._prefills.get(tuple(ids))
        if cand is not None and cand.past_key_values is not None and cand.model_name == self.name:
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

    # -- generation ------------------------------------------------------------------------------

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = 1.0,
        top_p: float | None = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        top_logprobs: int = 0,
        prefill: PrefillResult | None = None,
        timeout_s: float | None = None,
    ) -> GenerationStream:
        """Validate now, generate lazily: iterate the returned stream for :class:`StreamEvent`s;
        ``stream.result`` holds the :class:`GenerationResult` once it is exhausted.

        ``temperature`` 0 is greedy; ``seed`` makes sampling reproducible; ``top_logprobs`` (0-20)
        alternatives are reported per token; ``prefill`` continues from that prefill's KV cache
        (sharing a prefix is enough). ``timeout_s`` bounds the whole generation
        (:class:`GenerationTimeoutError`, checked between tokens).
        """
        ids, _ = self.encode_chat(messages)
        self._check_length(ids)
        if max_tokens is None:
            max_tokens = self.default_max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise LocalModelError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        try:
            temperature = 1.0 if temperature is None else float(temperature)
            top_p = 1.0 if top_p is None else float(top_p)
            top_logprobs = int(top_logprobs)
            seed = None if seed is None else int(seed)
        except (TypeError, ValueError):
            raise LocalModelError("temperature and top_p must be numbers, top_logprobs and seed integers") from None
        if not (temperature >= 0 and 0 < top_p <= 1):
            raise LocalModelError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
        if not 0 <= top_logprobs <= 20:
            raise LocalModelError("top_logprobs must be between 0 and 20")
        try:
            stops = normalise_stop(stop)
        except ValueError as exc:
            raise LocalModelError(str(exc)) from None
        return GenerationStream(
            self,
            ids,
            max_tokens=min(max_tokens, self.context_length - len(ids)),
            temperature=temperature,
            top_p=top_p,
            stops=stops,
            seed=seed if seed is not None else secrets.randbits(63),
            top_logprobs=top_logprobs,
            prefill=prefill,
            deadline=None if timeout_s is None else time.monotonic() + float(timeout_s),
        )

    def generate(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> GenerationResult:
        """Non-streaming generation: the same loop as :meth:`stream`, consumed here."""
        s = self.stream(messages, **kwargs)
        for _ in s:
            pass
        assert s.result is not None
        return s.result

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class GenerationStream:
    """Iterable of :class:`StreamEvent`; single use. ``result`` is set when iteration ends."""

    def __init__(self, lm: LocalLM, ids: list[int], **params: Any) -> None:
        self.lm = lm
        self.prompt_ids = ids
        self.params = params
        self.result: GenerationResult | None = None
        self._started = False

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._started:
            raise RuntimeError("a GenerationStream can be iterated once")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[StreamEvent]:
        lm, p = self.lm, self.params
        t0 = time.perf_counter()
        cache, logits, reused = lm._start(self.prompt_ids, p["prefill"])
        if reused:
            lm.stats.prefill_reuses += 1
        generator = torch.Generator().manual_seed(int(p["seed"]))
        emitter = TextEmitter(p["stops"])
        generated: list[int] = []
        tokens: list[TokenInfo] = []
        sampled = 0
        finish = "length"
        while True:
            logp, entropy, top1, top = distribution_stats(logits, p["top_logprobs"])
            tok = choose_token(logits, temperature=p["temperature"], top_p=p["top_p"], generator=generator)
            sampled += 1
            if tok in lm.eos_ids:
                finish = "stop"
                rest = emitter.flush(lm._decode(generated))
                if rest:
                    yield StreamEvent(rest, None)
                break
            generated.append(tok)
            info = TokenInfo(
                token_id=tok,
                token=lm._decode([tok]),
                logprob=float(logp[tok].item()),
                entropy=entropy,
                top1_logprob=top1,
                top_logprobs=tuple(TopLogprob(i, lm._decode([i]), v) for i, v in top[: p["top_logprobs"]]),
            )
            tokens.append(info)
            full = lm._decode(generated)
            delta = emitter.update(full)
            if emitter.stopped:
                finish = "stop"
                yield StreamEvent(delta, info)
                break
            if len(generated) >= p["max_tokens"]:
                yield StreamEvent(delta + emitter.flush(full), info)
                break
            yield StreamEvent(delta, info)
            if p["deadline"] is not None and time.monotonic() > p["deadline"]:
                raise GenerationTimeoutError(f"local model {lm.name!r}: generation timed out after {len(generated)} tokens")
            out = lm._forward([tok], cache)
            cache, logits = out.past_key_values, out.logits[0, -1]
        lm.stats.generations += 1
        lm.stats.generated_tokens += sampled
        self.result = GenerationResult(
            text=emitter.text,
            tokens=tokens,
            finish_reason=finish,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=sampled,
            prefill_reused=reused,
            seconds=time.perf_counter() - t0,
        )


# -- the process-wide model cache --------------------------------------------------------------

_models: dict[str, LocalLM] = {}
_models_lock = threading.Lock()


def get_local_lm(name: str = DEFAULT_LOCAL_MODEL) -> LocalLM:
    """The one loaded instance of a local model in this process (loaded on first call).

    Raises :class:`~triage.lm.specs.UnknownLocalModelError` for a name that is neither
    registered nor a path, before anything is loaded.
    """
    resolved = resolve_model(name)
    lm = _models.get(resolved.key)
    if lm is not None:
        return lm
    with _models_lock:
        lm = _models.get(resolved.key)
        if lm is None:
            if not _models:
                _set_threads()
            lm = LocalLM(resolved, load_model(resolved))
            _models[resolved.key] = lm
    return lm


def _set_threads() -> None:
    """Apply ``get_settings().lm_threads`` (process-wide in torch) before the first model runs."""
    from triage.settings import get_settings  # settings only; probes import no routing code

    threads = get_settings().lm_threads
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))


def loaded_local_models() -> dict[str, LocalLM]:
    """Models loaded so far, by file identity."""
    return dict(_models)


def release_local_model(name: str) -> bool:
    """Forget the loaded instance of ``name`` (memory returns once no caller holds it)."""
    key = resolve_model(name).key
    with _models_lock:
        return _models.pop(key, None) is not None
