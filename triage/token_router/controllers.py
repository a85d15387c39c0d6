"""Who writes the next token: one abstract decision + a registry (adding a method is one class).

A controller sees the small model's proposal for the next token (:class:`Step`) and answers
:meth:`Controller.hand_over` (``True``: the large model produces this token instead). A controller
may also take the pen before the small model is even run (:meth:`Controller.force_large`), which is
how large-only and the paragraph-level hand-off of speculative thinking avoid useless small steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from triage.token_router.features import DEFAULT_TOP_K, entropy_from_logits, router_features

#: Reflection cues of Speculative Thinking (Yang et al., 2025) that open a new reasoning step.
DEFAULT_CUES = ("Wait", "Hmm", "Alternatively", "Actually", "However", "But")


@dataclass
class Step:
    proposed: int  # the small model's greedy token
    hidden: Any  # (H,) torch (transformers) or numpy (ONNX): small model's final hidden state at the last position
    logits: Any  # (V,) torch or numpy: small model's next-token logits
    embed: Callable[[], Any]  # -> (H,) torch or numpy: input embedding of the proposed token (lazy)
    tokenizer: Any

    def entropy(self) -> float:
        return float(entropy_from_logits(self.logits))


class Controller(ABC):
    name: str = ""

    def reset(self) -> None:
        """Called at the start of each generation."""

    def force_large(self) -> bool:
        """The large model writes the next token without a small-model proposal."""
        return False

    @abstractmethod
    def hand_over(self, step: Step) -> bool:
        """True when the proposed token is critical and the large model must produce it."""

    def observe(self, token: int, source: str, tokenizer: Any) -> None:
        """Called with every token appended (whoever wrote it)."""

    def params(self) -> dict[str, Any]:
        return {}


class SmallOnly(Controller):
    name = "small-only"

    def hand_over(self, step: Step) -> bool:
        return False


class LargeOnly(Controller):
    name = "large-only"

    def force_large(self) -> bool:
        return True

    def hand_over(self, step: Step) -> bool:  # pragma: no cover - never asked
        return True


class EntropyThreshold(Controller):
    """Hand the token over when the small model's next-token entropy exceeds ``tau`` (nats)."""

    name = "entropy-threshold"

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = tau

    def hand_over(self, step: Step) -> bool:
        return step.entropy() > self.tau

    def params(self) -> dict[str, Any]:
        return {"tau": self.tau}


class SpeculativeThinking(Controller):
    """Reasoning-level hand-off: after a paragraph break, if the small model's next step starts with
    a reflection cue, the large model writes that whole step (until the next paragraph break).

    The cue is read from the small model's first proposed token of the step (the cues are single
    tokens in the Qwen vocabulary, or a prefix of one), so no tentative small-model steps are rolled back.
    """

    name = "speculative-thinking"

    def __init__(self, cues: tuple[str, ...] = DEFAULT_CUES, max_step_tokens: int = 160) -> None:
        self.cues = tuple(cues)
        self.max_step_tokens = max_step_tokens
        self._at_break = False
        self._large_left = 0

    def reset(self) -> None:
        self._at_break = False
        self._large_left = 0

    def force_large(self) -> bool:
        return self._large_left > 0

    def _is_cue(self, text: str) -> bool:
        word = text.strip()
        return len(word) >= 2 and any(c.startswith(word) or word.startswith(c) for c in self.cues)

    def hand_over(self, step: Step) -> bool:
        if self._at_break and self._is_cue(step.tokenizer.decode([step.proposed])):
            self._large_left = self.max_step_tokens
            return True
        return False

    def observe(self, token: int, source: str, tokenizer: Any) -> None:
        text = tokenizer.decode([token])
        brk = "\n\n" in text
        if self._large_left > 0:
            self._large_left = 0 if brk else self._large_left - 1
        self._at_break = brk

    def params(self) -> dict[str, Any]:
        return {"cues": list(self.cues), "max_step_tokens": self.max_step_tokens}


class TokenRouter(Controller):
    """R2R: a trained head reads the small model's state and flags critical (divergent) tokens."""

    name = "token-router"

    def __init__(self, head: Any, threshold: float | None = None) -> None:
        self.head = head  # triage.token_router.head.RouterHead
        self.threshold = head.threshold if threshold is None else threshold

    def hand_over(self, step: Step) -> bool:
        feats = router_features(step.hidden[None], step.logits[None], step.embed()[None], self.head.top_k)
        return float(self.head.predict_proba(feats)[0]) > self.threshold

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "head": self.head.version}


CONTROLLERS: dict[str, type[Controller]] = {
    c.name: c for c in (SmallOnly, LargeOnly, EntropyThreshold, SpeculativeThinking, TokenRouter)
}


def make_controller(name: str, **params: Any) -> Controller:
    try:
        cls = CONTROLLERS[name]
    except KeyError:
        raise ValueError(f"unknown token-routing method {name!r}; known: {', '.join(CONTROLLERS)}") from None
    return cls(**params)


__all__ = ["CONTROLLERS", "DEFAULT_CUES", "DEFAULT_TOP_K", "Controller", "Step", "make_controller"]
