"""Per-token prices of a strategy: its price override, its kind's price rule (zero for local models),
else litellm's cost map.

litellm is imported lazily (it takes seconds) and always with its bundled cost map: by default it
fetches a fresh map from GitHub at import time, which on an offline machine means retries and a delay
on the request path. :func:`import_litellm` is the one place Triage imports litellm from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

from triage.policies.strategy import Strategy


def import_litellm() -> ModuleType:
    """Import litellm with its bundled cost map and without its banner noise."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


@dataclass(frozen=True)
class TokenPrice:
    """USD per token; ``known`` is False when neither an override nor the cost map had the model."""

    input: float
    output: float
    source: str  # "override", "local", "litellm", "unknown"

    @property
    def known(self) -> bool:
        return self.source != "unknown"

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return prompt_tokens * self.input + completion_tokens * self.output


def token_price(strategy: Strategy) -> TokenPrice:
    if strategy.price is not None:
        return TokenPrice(strategy.price.input_per_mtok / 1e6, strategy.price.output_per_mtok / 1e6, "override")
    rule = strategy.kind.price(strategy.model)  # local kinds: 0 ("local")
    if rule is not None:
        return TokenPrice(*rule)
    return _litellm_price(strategy.model)


@lru_cache(maxsize=256)
def _litellm_price(model: str) -> TokenPrice:
    litellm = import_litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:  # litellm raises several types for "not mapped"
        return TokenPrice(0.0, 0.0, "unknown")
    return TokenPrice(float(info.get("input_cost_per_token") or 0.0),
                      float(info.get("output_cost_per_token") or 0.0), "litellm")
