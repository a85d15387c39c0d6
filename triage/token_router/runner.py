"""What the CLI, the benchmark and a ``token-routed`` policy strategy call: build a controller from
its method name (router head and thresholds from the head card) and run one completion.

Wiring for policies (H6 / the lead): a strategy of kind ``token-routed`` with ``small``, ``large``
(local model names), ``method`` (default ``token-router``), optional ``threshold``/``tau`` and
``max_tokens`` maps onto :class:`TokenRoutedExecutor`; its :meth:`~TokenRoutedExecutor.complete`
returns the text plus ``usage`` with per-model token counts for the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from triage.token_router.controllers import Controller, make_controller

#: Entropy threshold (nats) used when no router head card supplies one.
DEFAULT_TAU = 1.5


def controller_for(method: str, *, head_dir: Path | None = None, threshold: float | None = None,
                   tau: float | None = None) -> Controller:
    """A controller by method name; ``token-router`` loads the ONNX head (its card gives the threshold),
    ``entropy-threshold`` takes ``tau`` or the card's ``entropy_tau`` (same token share as the router)."""
    from triage.token_router.head import RouterHead, head_dir as default_head_dir, read_card

    if method == "token-router":
        return make_controller(method, head=RouterHead.load(head_dir), threshold=threshold)
    if method == "entropy-threshold":
        if tau is None:
            folder = Path(head_dir or default_head_dir())
            tau = read_card(folder).entropy_tau if (folder / "card.json").is_file() else DEFAULT_TAU
        return make_controller(method, tau=tau)
    return make_controller(method)


def check_head_fits(controller: Controller, pair: Any) -> None:
    """A router head must have been trained on this small model's features, from this engine
    (:class:`~triage.token_router.head.RouterHeadError`, one line, otherwise)."""
    head = getattr(controller, "head", None)
    if head is not None:
        head.check_small_model(pair.small.name, pair.small.hidden_size, pair.small.sha256)
        head.check_engine(pair.engine)


class TokenRoutingConfig(BaseModel):
    """The ``token_routing:`` block of a ``token-routed`` strategy in a policy file (local models only)."""

    model_config = ConfigDict(extra="forbid")

    small: str = Field(default="qwen2.5-coder-0.5b", description="Local small model (proposes every token).")
    large: str = Field(default="qwen2.5-coder-1.5b", description="Local large model (writes critical tokens).")
    method: Literal["token-router", "entropy-threshold", "speculative-thinking", "small-only", "large-only"] = (
        "token-router"
    )
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="Router head threshold override.")
    tau: float | None = Field(default=None, description="Entropy threshold (nats) for entropy-threshold.")
    head: Path | None = Field(default=None, description="Router head folder (default: the cache's).")

    def executor(self) -> TokenRoutedExecutor:
        return TokenRoutedExecutor(self.small, self.large, self.method, self.threshold, self.tau, self.head)


@dataclass
class TokenRoutedResponse:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    small_tokens: int
    large_tokens: int
    method: str
    small_model: str
    large_model: str
    latency_s: float
    params: dict[str, Any] = field(default_factory=dict)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "tokens_by_model": {self.small_model: self.small_tokens, self.large_model: self.large_tokens},
        }


class TokenRoutedExecutor:
    """Runs token-routed completions for one local pair (models load on first use)."""

    def __init__(self, small: str = "qwen2.5-coder-0.5b", large: str = "qwen2.5-coder-1.5b",
                 method: str = "token-router", threshold: float | None = None, tau: float | None = None,
                 head_dir: Path | None = None) -> None:
        self.small, self.large, self.method = small, large, method
        self.threshold, self.tau, self.head_dir = threshold, tau, head_dir
        self._pair: Any = None

    def _ready(self) -> Any:
        if self._pair is None:
            from triage.token_router.pair import load_pair

            self._pair = load_pair(self.small, self.large)
        return self._pair

    def _start(self, messages: Sequence[Mapping[str, Any]], max_tokens: int) -> tuple[Any, Any]:
        from triage.token_router.decode import DecodeStream

        pair = self._ready()
        controller = controller_for(self.method, head_dir=self.head_dir, threshold=self.threshold, tau=self.tau)
        check_head_fits(controller, pair)
        return pair, DecodeStream(pair, messages, controller, max_new_tokens=max_tokens)

    def response(self, pair: Any, stream: Any) -> TokenRoutedResponse:
        """The receipt of a finished :class:`~triage.token_router.decode.DecodeStream`."""
        r = stream.result
        return TokenRoutedResponse(
            text=r.text, finish_reason=r.finish_reason, prompt_tokens=r.prompt_tokens, completion_tokens=r.n_tokens,
            small_tokens=r.n_tokens - r.n_large, large_tokens=r.n_large, method=self.method,
            small_model=pair.small.name, large_model=pair.large.name, latency_s=r.wall_s,
            params=stream.controller.params(),
        )

    def complete(self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int = 256) -> TokenRoutedResponse:
        pair, stream = self._start(messages, max_tokens)
        for _ in stream:
            pass
        return self.response(pair, stream)

    def stream(self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int = 256) -> tuple[Any, Any]:
        """(pair, :class:`~triage.token_router.decode.DecodeStream`): iterate the stream for tokens as
        they are produced, then :meth:`response` for the receipt. Bad input raises here, not later."""
        return self._start(messages, max_tokens)
