"""Output-uncertainty feature (LM cascades): token-level statistics over the first ``k`` tokens a
model generates, so a cascade can defer to a bigger model when the small one is unsure.

Token-level uncertainty beats sequence-level scores for deferral (Gupta et al., "Language model
cascades: token-level uncertainty and beyond"), hence quantiles rather than one mean.

Two sources, one set of statistics (:data:`UNCERTAINTY_STAT_NAMES`):

* the local runtime's :class:`~triage.lm.types.TokenInfo` list (exact entropy), and
* any provider's OpenAI-style ``logprobs`` payload (``choices[0].logprobs.content``; entropy is
  then estimated from ``top_logprobs``, see :func:`tokens_from_logprobs`).

The feature class generates greedily with a local model; the parsers are numpy-only and are what
a cascade applies to the response of its cheap strategy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from triage.probes.features.base import Feature, register_feature
from triage.lm.models import engine_tag
from triage.lm.specs import DEFAULT_LOCAL_MODEL, resolve_model
from triage.lm.types import TokenInfo

UNCERTAINTY_STAT_NAMES: tuple[str, ...] = (
    "mean_entropy",
    "max_entropy",
    "mean_logprob",
    "min_logprob",
    "q10_logprob",
    "q50_logprob",
    "q90_logprob",
    "frac_top1_below_half",
    "frac_of_k_generated",
)
DEFAULT_K = 16


@dataclass(frozen=True)
class TokenUncertainty:
    logprob: float  # log p of the generated token
    entropy: float  # nats; exact (local) or estimated from top_logprobs
    top1_prob: float  # probability of the most likely token at that step


def tokens_from_local(tokens: Sequence[TokenInfo]) -> list[TokenUncertainty]:
    return [TokenUncertainty(t.logprob, t.entropy, math.exp(t.top1_logprob)) for t in tokens]


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _estimate_entropy(logprob: float, top: list[float]) -> tuple[float, float]:
    """(entropy, top-1 prob) from the chosen token's log-prob and the top log-probs.

    The probability mass outside the listed tokens is counted as one more outcome, so the
    estimate is a lower bound of the true entropy (exact when the list covers the mass).
    """
    probs = [math.exp(v) for v in top] if top else []
    p_chosen = math.exp(logprob)
    if not any(abs(v - logprob) < 1e-6 for v in top):
        probs.append(p_chosen)
    probs = [p for p in probs if p > 0]
    rest = max(0.0, 1.0 - sum(probs))
    entropy = -sum(p * math.log(p) for p in probs)
    if rest > 1e-12:
        entropy -= rest * math.log(rest)
    return entropy, max(probs, default=p_chosen)


def tokens_from_logprobs(payload: Any) -> list[TokenUncertainty]:
    """Parse an OpenAI-style logprobs payload.

    Accepts ``{"content": [...]}`` (dict or object, e.g. litellm's ``ChoiceLogprobs``) or the
    ``content`` list itself; each entry has ``logprob`` and optionally ``top_logprobs`` and
    ``entropy`` (the ``local`` provider adds the exact entropy). Raises ``ValueError`` on a
    payload without token entries, so a provider that ignored ``logprobs=True`` is noticed.
    """
    content = payload if isinstance(payload, Sequence) and not isinstance(payload, str) else _get(payload, "content")
    if content is None:
        raise ValueError("logprobs payload has no 'content' list (did the provider return logprobs?)")
    out: list[TokenUncertainty] = []
    for i, entry in enumerate(content):
        lp = _get(entry, "logprob")
        if lp is None:
            raise ValueError(f"logprobs content[{i}] has no 'logprob'")
        lp = max(float(lp), -1e4)  # some providers send -9999.0 or -inf for impossible tokens
        top = [max(float(_get(t, "logprob")), -1e4) for t in (_get(entry, "top_logprobs") or [])]
        est_entropy, top1 = _estimate_entropy(lp, top)
        exact = _get(entry, "entropy")
        entropy = float(exact) if exact is not None else est_entropy
        out.append(TokenUncertainty(lp, entropy, top1))
    return out


def tokens_from_response(response: Any) -> list[TokenUncertainty]:
    """Token uncertainties of ``choices[0]`` of a litellm/OpenAI chat completion (object or dict)."""
    choices = _get(response, "choices") or []
    if not choices:
        raise ValueError("response has no choices")
    logprobs = _get(choices[0], "logprobs")
    if logprobs is None:
        raise ValueError("response has no logprobs (request them with logprobs=True, top_logprobs=k)")
    return tokens_from_logprobs(logprobs)


def uncertainty_stats(tokens: Sequence[TokenUncertainty], k: int = DEFAULT_K) -> np.ndarray:
    """The :data:`UNCERTAINTY_STAT_NAMES` vector (float32) over the first ``k`` tokens.

    No token at all (the model ended its turn at once) gives zeros with
    ``frac_of_k_generated = 0``.
    """
    head = list(tokens)[: max(1, k)]
    if not head:
        return np.zeros(len(UNCERTAINTY_STAT_NAMES), dtype=np.float32)
    lp = np.array([t.logprob for t in head], dtype=np.float64)
    ent = np.array([t.entropy for t in head], dtype=np.float64)
    top1 = np.array([t.top1_prob for t in head], dtype=np.float64)
    q10, q50, q90 = np.quantile(lp, [0.1, 0.5, 0.9])
    return np.array(
        [ent.mean(), ent.max(), lp.mean(), lp.min(), q10, q50, q90, (top1 < 0.5).mean(), len(head) / max(1, k)],
        dtype=np.float32,
    )


def uncertainty_from_response(response: Any, k: int = DEFAULT_K) -> dict[str, float]:
    """Named statistics of a chat completion's logprobs - what a cascade thresholds on."""
    values = uncertainty_stats(tokens_from_response(response), k)
    return dict(zip(UNCERTAINTY_STAT_NAMES, (float(v) for v in values), strict=True))


@register_feature
class OutputUncertaintyFeature(Feature):
    """Uncertainty of the first ``k`` tokens a local model generates (greedy) for the query."""

    name = "output_uncertainty"
    version = "1"
    requires_torch = True

    def __init__(self, model: str = DEFAULT_LOCAL_MODEL, k: int = DEFAULT_K) -> None:
        self.model = model
        self.k = k

    @property
    def dim(self) -> int:
        return len(UNCERTAINTY_STAT_NAMES)

    @property
    def feature_names(self) -> list[str]:
        return list(UNCERTAINTY_STAT_NAMES)

    def identity(self) -> dict[str, Any]:
        out = super().identity()
        out["model_sha256"] = resolve_model(self.model).sha256()
        out["engine"] = engine_tag()
        return out

    def transform(self, texts: list[str]) -> np.ndarray:
        from triage.probes.features.lm_internals import query_messages
        from triage.lm.models import get_local_lm

        lm = get_local_lm(self.model)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            result = lm.generate(query_messages(text), max_tokens=self.k, temperature=0.0)
            out[i] = uncertainty_stats(tokens_from_local(result.tokens), self.k)
        return out
