"""Token-routed greedy decoding with a small/large model pair sharing a tokenizer.

Each step the small model proposes its greedy next token; a :class:`~triage.token_router.controllers.Controller`
decides whether that token is critical, in which case the large model produces the token instead.
Both models keep a KV cache and a count of the tokens it holds (:class:`ModelStream`). The small
model sees every token (its own and the large model's). The large model is only run at a hand-off
and then catches up on every token appended since its last run *in one batched forward* (R2R), so
a hand-off costs about one large forward over a short chunk, not one forward per accepted token.

The same loop runs all methods of the benchmark: small-only and large-only are controllers that
never/always hand over (large-only never runs the small model at all), entropy-threshold hands over
when the small model's entropy exceeds tau, speculative-thinking lets the large model write a whole
paragraph after a paragraph break whose next step starts with a reflection cue.

:class:`DecodeStream` yields each token as it is produced (with the text it completes), so a
streamed token-routed answer arrives token by token; :func:`decode` drains it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from triage.lm.decoding import TextEmitter
from triage.token_router.controllers import Controller, Step
from triage.token_router.engine import new_state, token_embeddings

SMALL, LARGE = "small", "large"


class ModelStream:
    """One model's incremental state: KV cache, how many tokens of the sequence it has seen, and the
    final hidden state and next-token logits at the last of them (torch tensors on the transformers
    engine, numpy arrays on the int4 ONNX engine: :mod:`triage.token_router.engine`)."""

    def __init__(self, lm: Any, state: Any = None, n_done: int = 0) -> None:
        self.lm = lm
        self.state = state if state is not None else new_state(lm)
        self.n_done = n_done
        self.hidden: Any = None
        self.logits: Any = None
        self.forwards = 0
        self.positions = 0  # tokens pushed through the model (prefill and catch-ups included)
        self.seconds = 0.0

    def advance(self, ids: Sequence[int]) -> None:
        """Run the model over ``ids[n_done:]`` in one forward (no-op when it is up to date)."""
        new = list(ids[self.n_done:])
        if not new:
            return
        t0 = time.perf_counter()
        self.hidden, self.logits = self.state.run(new)
        self.n_done = len(ids)
        self.forwards += 1
        self.positions += len(new)
        self.seconds += time.perf_counter() - t0

    def greedy(self) -> int:
        return int(self.logits.argmax())

    def branch(self, n_prefix: int) -> ModelStream:
        """A separate stream that continues after the first ``n_prefix`` tokens of this one's sequence
        (a cropped copy of the cache on transformers; a fresh generator that prefills it on ONNX)."""
        state, n_done = self.state.branch(n_prefix)
        return ModelStream(self.lm, state, n_done)


@dataclass
class DecodeResult:
    text: str
    token_ids: list[int]
    sources: list[str]  # per generated token: "small" or "large"
    prompt_tokens: int
    finish_reason: str  # "stop" or "length"
    wall_s: float
    small_s: float
    large_s: float
    router_s: float
    small_forwards: int
    large_forwards: int
    large_positions: int  # tokens the large model processed, prompt and catch-ups included
    small_proposals: int = 0  # steps where the small model proposed a token (ran its forward)
    # Hand-offs where the large model wrote another token than the small model proposed: the routed
    # positions that changed the text (the rest cost a large forward and changed nothing).
    large_overrides: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_large(self) -> int:
        return sum(1 for s in self.sources if s == LARGE)

    @property
    def large_fraction(self) -> float:
        return self.n_large / self.n_tokens if self.token_ids else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "tokens": self.n_tokens,
            "large_tokens": self.n_large,
            "large_fraction": round(self.large_fraction, 4),
            "finish_reason": self.finish_reason,
            "wall_s": round(self.wall_s, 3),
            "small_forwards": self.small_forwards,
            "large_forwards": self.large_forwards,
            "large_positions": self.large_positions,
            "large_overrides": self.large_overrides,
            "large_forwards_per_token": round(self.large_forwards / self.n_tokens, 4) if self.token_ids else 0.0,
            "tokens_per_s": round(self.n_tokens / self.wall_s, 2) if self.wall_s > 0 else None,
        }


def prompt_ids(pair: Any, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    ids, _ = pair.small.encode_chat(messages)
    return ids


@dataclass(frozen=True)
class TokenEvent:
    """One generated token as it is produced: its id, the model that wrote it, and the text it
    completes (empty while a multi-byte character is still partial; the end-of-turn token has none).
    ``token`` None: no new token, only characters held back until the length cap ended the answer."""

    token: int | None
    source: str
    text: str


class DecodeStream:
    """Token-routed greedy generation as an iterator of :class:`TokenEvent`; ``result`` (a
    :class:`DecodeResult`) is set once the iterator is exhausted. Not thread-safe: one consumer."""

    def __init__(self, pair: Any, messages: Sequence[Mapping[str, Any]], controller: Controller, *,
                 max_new_tokens: int = 256) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.pair, self.controller, self.max_new_tokens = pair, controller, max_new_tokens
        self.messages = messages
        self.result: DecodeResult | None = None

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._run()

    def _run(self) -> Iterator[TokenEvent]:
        pair, controller = self.pair, self.controller
        tokenizer = pair.tokenizer
        eos = pair.eos_ids
        t0 = time.perf_counter()
        ids = prompt_ids(pair, self.messages)
        n_prompt = len(ids)
        small, large = ModelStream(pair.small), ModelStream(pair.large)
        controller.reset()
        sources: list[str] = []
        router_s = 0.0
        finish = "length"
        proposals = overrides = 0
        emitter = TextEmitter()  # holds back a multi-byte character split across tokens
        while len(ids) - n_prompt < self.max_new_tokens:
            if controller.force_large():
                large.advance(ids)
                token, source = large.greedy(), LARGE
            else:
                small.advance(ids)
                proposed = small.greedy()
                proposals += 1
                r0 = time.perf_counter()
                step = Step(proposed=proposed, hidden=small.hidden, logits=small.logits,
                            embed=lambda t=proposed: token_embeddings(pair.small, [t])[0], tokenizer=tokenizer)
                to_large = controller.hand_over(step)
                router_s += time.perf_counter() - r0
                if to_large:
                    large.advance(ids)  # catch-up: every token since the large model's last run, one forward
                    token, source = large.greedy(), LARGE
                    overrides += token != proposed
                else:
                    token, source = proposed, SMALL
            ids.append(token)
            sources.append(source)
            controller.observe(token, source, tokenizer)
            delta = "" if token in eos else emitter.update(
                tokenizer.decode([t for t in ids[n_prompt:] if t not in eos], skip_special_tokens=True))
            yield TokenEvent(token=token, source=source, text=delta)
            if token in eos:
                finish = "stop"
                break
        generated = ids[n_prompt:]
        text = tokenizer.decode([t for t in generated if t not in eos], skip_special_tokens=True)
        rest = emitter.flush(text)
        if rest:
            yield TokenEvent(token=None, source="", text=rest)  # held back at the cap
        self.result = DecodeResult(
            text=text, token_ids=generated, sources=sources, prompt_tokens=n_prompt, finish_reason=finish,
            wall_s=time.perf_counter() - t0, small_s=small.seconds, large_s=large.seconds, router_s=router_s,
            small_forwards=small.forwards, large_forwards=large.forwards, large_positions=large.positions,
            small_proposals=proposals, large_overrides=overrides,
        )


def decode(
    pair: Any,
    messages: Sequence[Mapping[str, Any]],
    controller: Controller,
    *,
    max_new_tokens: int = 256,
) -> DecodeResult:
    """Greedy token-routed generation for one chat prompt. ``pair`` is a :class:`~triage.token_router.pair.ModelPair`."""
    stream = DecodeStream(pair, messages, controller, max_new_tokens=max_new_tokens)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result
