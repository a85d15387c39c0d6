"""What every local LM engine shares: chat formatting, length checks, the prefill memory, argument
validation and the one token-by-token loop behind streaming and non-streaming generation.

An engine (:mod:`triage.lm.onnx_engine`: int4 ONNX through onnxruntime-genai, the default;
:mod:`triage.lm.runtime`: transformers fp32) subclasses :class:`ChatLM` and implements
``prefill`` and the four decoding hooks ``_begin`` / ``_advance`` / ``_end`` / ``_rng`` plus
``_stats`` / ``_choose`` on its own logits type. No torch and no onnxruntime here.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triage.lm.chat import TokenFloor, content_offset, count_tokens, normalise_messages, token_floor
from triage.lm.decoding import TextEmitter, normalise_stop
from triage.lm.specs import GenerationTimeoutError, LocalModelError, PromptTooLongError, ResolvedModel
from triage.lm.types import GenerationResult, PrefillResult, StreamEvent, TokenInfo, TopLogprob

#: Prompt-token log-prob statistics use at most this many (last) content tokens.
MAX_STAT_TOKENS = 1024
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


@dataclass
class LMStats:
    prefills: int = 0  # prefill() calls
    prefill_reuses: int = 0  # generations that continued from a stored prefill
    generations: int = 0
    generated_tokens: int = 0
    forwards: int = 0  # model runs of any length (prefills, catch-ups and decode steps)


class ChatLM:
    """A loaded local causal LM. Build one with :func:`triage.lm.get_local_lm`."""

    engine = "base"

    def __init__(self, resolved: ResolvedModel, tokenizer: Any, *, sha256: str, hidden_size: int,
                 n_layers: int, context_length: int, eos_ids: frozenset[int], load_seconds: float,
                 load_source: str, default_max_tokens: int = 256, prefill_cache_size: int = 4) -> None:
        self.resolved = resolved
        self.name = resolved.name
        self.tokenizer = tokenizer
        self.sha256 = sha256
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.middle_layer = n_layers // 2
        self.context_length = context_length
        self.load_seconds = load_seconds
        self.load_source = load_source
        self.default_max_tokens = default_max_tokens
        vocab = tokenizer.get_vocab()
        self.eos_ids = frozenset(eos_ids | {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab})
        self.stats = LMStats()
        self._prefills: OrderedDict[tuple[int, ...], PrefillResult] = OrderedDict()
        self._prefill_cache_size = prefill_cache_size
        self._token_floor: TokenFloor | None = token_floor(tokenizer)  # at load, not per prompt
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, layers={self.n_layers}, hidden={self.hidden_size})"

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
        ids = [int(i) for i in enc["input_ids"]]
        content = msgs[-1]["content"]
        start = content_offset(self.tokenizer, msgs, text)
        if start < 0 or not content:
            return ids, (len(ids), len(ids))
        end = start + len(content)
        span = [i for i, (a, _) in enumerate(enc["offset_mapping"]) if start <= a < end]
        if not span:
            return ids, (len(ids), len(ids))
        return ids, (span[0], span[-1] + 1)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- prefill memory --------------------------------------------------------------------------

    def prefill(self, messages: Sequence[Mapping[str, Any]], *, keep_state: bool = True) -> PrefillResult:
        raise NotImplementedError

    def _remember(self, result: PrefillResult) -> None:
        with self._lock:
            self._prefills[result.input_ids] = result
            self._prefills.move_to_end(result.input_ids)
            while len(self._prefills) > self._prefill_cache_size:
                _, old = self._prefills.popitem(last=False)
                self._discard_state(old)

    def _candidate(self, ids: list[int], prefill: PrefillResult | None) -> PrefillResult | None:
        """The prefill a generation on ``ids`` may continue from: the caller's, else the one
        remembered for exactly these ids; None when it is another model's."""
        cand = prefill
        if cand is None:
            with self._lock:
                cand = self._prefills.get(tuple(ids))
        return cand if cand is not None and cand.model_name == self.name else None

    def _discard_state(self, prefill: PrefillResult) -> None:
        """Free what an evicted prefill holds (engines with native state override this)."""

    def stored_prefill(self, messages: Sequence[Mapping[str, Any]]) -> PrefillResult | None:
        """The remembered prefill a generation on ``messages`` would continue from, if any."""
        ids, _ = self.encode_chat(messages)
        with self._lock:
            return self._prefills.get(tuple(ids))

    def forget_prefills(self) -> None:
        """Drop remembered prefills (and their KV caches)."""
        with self._lock:
            old = list(self._prefills.values())
            self._prefills.clear()
        for p in old:
            self._discard_state(p)

    # -- length checks ---------------------------------------------------------------------------

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

    # -- decoding hooks (engine-specific) ----------------------------------------------------------

    def _begin(self, ids: list[int], prefill: PrefillResult | None, max_new: int) -> tuple[Any, Any, bool]:
        """(decoder state, next-token logits, reused a stored prefill?) for the prompt ``ids``."""
        raise NotImplementedError

    def _advance(self, state: Any, token: int) -> tuple[Any, Any]:
        """Feed one token; (state, next-token logits)."""
        raise NotImplementedError

    def _end(self, state: Any) -> None:
        """Generation is over (finished, failed or abandoned): release or recycle ``state``."""

    def _rng(self, seed: int) -> Any:
        raise NotImplementedError

    def _stats(self, logits: Any, top_k: int) -> tuple[Any, float, float, list[tuple[int, float]]]:
        raise NotImplementedError

    def _choose(self, logits: Any, *, temperature: float, top_p: float, rng: Any) -> int:
        raise NotImplementedError

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
        alternatives are reported per token; ``prefill`` continues from that prefill's state
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


class GenerationStream:
    """Iterable of :class:`StreamEvent`; single use. ``result`` is set when iteration ends."""

    def __init__(self, lm: ChatLM, ids: list[int], **params: Any) -> None:
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
        state, logits, reused = lm._begin(self.prompt_ids, p["prefill"], p["max_tokens"])
        try:
            yield from self._loop(lm, p, state, logits, reused, t0)
        finally:
            lm._end(state)

    def _loop(self, lm: ChatLM, p: dict[str, Any], state: Any, logits: Any, reused: bool,
              t0: float) -> Iterator[StreamEvent]:
        if reused:
            lm.stats.prefill_reuses += 1
        rng = lm._rng(int(p["seed"]))
        emitter = TextEmitter(p["stops"])
        generated: list[int] = []
        tokens: list[TokenInfo] = []
        sampled = 0
        finish = "length"
        while True:
            logp, entropy, top1, top = lm._stats(logits, p["top_logprobs"])
            tok = lm._choose(logits, temperature=p["temperature"], top_p=p["top_p"], rng=rng)
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
                logprob=float(logp[tok]),
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
            state, logits = lm._advance(state, tok)
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
