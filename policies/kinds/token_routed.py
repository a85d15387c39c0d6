"""``token-routed/<small>+<large>``: R2R-style token-level routing over a local pair (issue R2R).

Options (``token_routing:``) pick the controller; the provider (``providers/token_routed.py``)
reports the tokens each model wrote, which every attempt records and the ledger record sums.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from triage.policies.kinds.base import KINDS, StrategyKind
from triage.policies.kinds.local import local_model_problem

PREFIX = "token-routed/"
_ATTEMPT_KEYS = ("small_model", "large_model", "small_tokens", "large_tokens")


class TokenRouting(BaseModel):
    """How a ``token-routed/<small>+<large>`` strategy hands tokens to the large model (issue R2R)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["token-router", "entropy-threshold", "speculative-thinking", "small-only", "large-only"] = Field(
        default="token-router", description="token-router: the ONNX router head (`triage token-router train`); "
        "entropy-threshold: hand over when the small model's entropy exceeds tau; the rest are baselines.")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="Router head threshold override.")
    tau: float | None = Field(default=None, gt=0.0, description="Entropy threshold in nats (entropy-threshold).")
    head: str | None = Field(default=None, description="Router head folder (default: the cache's).")


def pair(model: str) -> tuple[str, str, str]:
    """``token-routed/small+large`` -> (small, "+", large); the separator is "" when missing."""
    small, sep, large = model[len(PREFIX):].partition("+")
    return small, sep, large


@KINDS.register
class TokenRoutedKind(StrategyKind):
    name = "token-routed"
    prefix = PREFIX
    is_local = True
    options_field = "token_routing"
    options_model = TokenRouting
    provider_name = "token-routed"
    syntax = "token-routed/<small>+<large>"

    def validate(self, model: str, options: BaseModel | None) -> None:
        small, sep, large = pair(model)
        if not (sep and small and large):
            raise ValueError(f"a token-routed model is 'token-routed/<small>+<large>', got {model!r}")

    def make_provider(self) -> Any:
        from triage.policies.kinds.providers.token_routed import TokenRoutedProvider

        return TokenRoutedProvider()

    def call_kwargs(self, model: str, options: BaseModel | None) -> dict[str, Any]:
        return {"token_routing": options.model_dump(exclude_none=True) if options is not None else {}}

    def attempt_extra(self, hidden: dict[str, Any]) -> dict[str, Any]:
        routing = hidden.get("token_routing")
        if isinstance(routing, dict) and all(k in routing for k in _ATTEMPT_KEYS):
            return {"token_routing": {k: routing[k] for k in _ATTEMPT_KEYS}}
        return {}

    def ledger_metadata(self, extras: list[dict[str, Any]]) -> dict[str, Any]:
        # Completion tokens written by each model of the pair, over all of its attempts.
        pairs = [e["token_routing"] for e in extras if "token_routing" in e]
        if not pairs:
            return {}
        return {"token_routing": {
            **{k: pairs[-1][k] for k in ("small_model", "large_model")},
            "small_tokens": sum(int(t["small_tokens"]) for t in pairs),
            "large_tokens": sum(int(t["large_tokens"]) for t in pairs),
        }}

    def startup_problem(self, model: str, *, installed: bool = False) -> str | None:
        small, _, large = pair(model)
        return local_model_problem(small, installed) or local_model_problem(large, installed)
