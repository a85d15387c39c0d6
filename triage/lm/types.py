"""Plain data returned by the local LM runtime (no torch: numpy arrays and Python numbers).

``PrefillResult`` additionally carries the model's KV cache and last logits (torch objects, typed
``Any`` here) so that generation can continue from it without a second prefill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenInfo:
    """One generated token and the model's next-token distribution at that step.

    ``logprob`` and ``entropy`` (nats) are of the model's raw distribution (temperature 1,
    before top-p), whatever the sampling settings - they measure the model's uncertainty.
    """

    token_id: int
    token: str  # the token's own text (decoded alone)
    logprob: float
    entropy: float
    top1_logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class StreamEvent:
    """A piece of output text. ``token`` is the generated token that produced it; a last event
    with ``token=None`` flushes text held back at the end (a partial stop sequence or an
    incomplete character) when generation ends on the end-of-turn token."""

    text: str
    token: TokenInfo | None


@dataclass
class GenerationResult:
    text: str
    tokens: list[TokenInfo]
    finish_reason: str  # "stop" (end of turn or stop sequence) or "length" (max_tokens hit)
    prompt_tokens: int
    completion_tokens: int  # tokens sampled, the end-of-turn token included
    prefill_reused: bool = False  # True when the KV cache of an earlier prefill was reused
    seconds: float = 0.0

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class PrefillResult:
    """What one forward pass over a chat-formatted prompt tells about it.

    ``hidden_final`` is the last token's final hidden state (after the final norm: what the LM
    head reads), ``hidden_middle`` the last token's output of layer ``middle_layer``.
    ``prompt_logprobs`` are log p(token | prefix) of the tokens of the last message's content.
    """

    model_name: str
    input_ids: tuple[int, ...]
    hidden_final: np.ndarray
    hidden_middle: np.ndarray
    middle_layer: int
    next_token_entropy: float
    next_token_top1_logprob: float
    prompt_logprobs: np.ndarray
    seconds: float = 0.0
    # Continuation state (torch objects); treat as opaque.
    past_key_values: Any = field(default=None, repr=False)
    last_logits: Any = field(default=None, repr=False)

    @property
    def n_prompt_tokens(self) -> int:
        return len(self.input_ids)
