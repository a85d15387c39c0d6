"""LM-internals feature (DiffAdapt): what a local causal LM's prefill says about a query.

For the query chat-formatted as one user turn (:func:`query_messages`), one forward pass gives

* the last prompt token's hidden state from the final layer (after the final norm) and from the
  middle layer (``n_layers // 2``),
* the next-token distribution's entropy and top-1 log-prob (DiffAdapt: entropy is U-shaped over
  difficulty, so the head gets it raw),
* statistics of log p(token | prefix) over the query's own tokens (not the template's).

Layout (``dim = 2 * hidden_size + len(LM_SCALAR_NAMES)``)::

    [hidden_final (H) | hidden_middle (H) | LM_SCALAR_NAMES]

When the served model is local, the same numbers come from the served model's own prefill:
``lm_features_from_prefill(get_local_lm(name).prefill(messages))`` - and the generation that
follows continues from that prefill's KV cache. This module imports numpy only; the engine
(:func:`triage.lm.get_local_lm`) loads when :meth:`LMInternalsFeature.transform` first runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.probes.features.base import Feature, register_feature
from triage.lm.models import engine_tag
from triage.lm.specs import DEFAULT_LOCAL_MODEL, model_shape, resolve_model
from triage.lm.types import PrefillResult

LM_SCALAR_NAMES: tuple[str, ...] = (
    "next_token_entropy",
    "next_token_top1_logprob",
    "prompt_logprob_mean",
    "prompt_logprob_std",
    "prompt_logprob_min",
    "prompt_logprob_q10",
    "prompt_logprob_q50",
    "prompt_logprob_q90",
    "log_prompt_tokens",
)


def query_messages(text: str) -> list[dict[str, str]]:
    """How a bare query is chat-formatted for the probe: one user turn, the model's default
    system prompt (whatever its chat template adds)."""
    return [{"role": "user", "content": text}]


def lm_feature_names(hidden_size: int) -> list[str]:
    return (
        [f"h_final_{i}" for i in range(hidden_size)]
        + [f"h_middle_{i}" for i in range(hidden_size)]
        + list(LM_SCALAR_NAMES)
    )


def lm_features_from_prefill(prefill: PrefillResult) -> np.ndarray:
    """The LM-internals feature row (float32, ``2H + 9``) of one prefill - the exact layout of
    :class:`LMInternalsFeature`."""
    lp = np.asarray(prefill.prompt_logprobs, dtype=np.float64)
    if lp.size:
        q10, q50, q90 = np.quantile(lp, [0.1, 0.5, 0.9])
        stats = [lp.mean(), lp.std(), lp.min(), q10, q50, q90]
    else:
        stats = [0.0] * 6
    scalars = np.array(
        [prefill.next_token_entropy, prefill.next_token_top1_logprob, *stats, np.log1p(prefill.n_prompt_tokens)],
        dtype=np.float32,
    )
    return np.concatenate(
        [
            np.asarray(prefill.hidden_final, dtype=np.float32).ravel(),
            np.asarray(prefill.hidden_middle, dtype=np.float32).ravel(),
            scalars,
        ]
    )


@register_feature
class LMInternalsFeature(Feature):
    """Last-token hidden states + next-token entropy + prompt log-prob stats of a local LM.

    ``model``: a registered local model name or a path (see :mod:`triage.lm.specs`).
    """

    name = "lm"
    version = "1"
    requires_torch = True  # i.e. computed by a local model: the caller (its prefill) supplies it

    def __init__(self, model: str = DEFAULT_LOCAL_MODEL) -> None:
        self.model = model

    @property
    def dim(self) -> int:
        return 2 * model_shape(self.model).hidden_size + len(LM_SCALAR_NAMES)

    @property
    def feature_names(self) -> list[str]:
        return lm_feature_names(model_shape(self.model).hidden_size)

    def identity(self) -> dict[str, Any]:
        # The weights decide the numbers: a different file under the same name is a different
        # feature (cache keys and probe cards must not mix them).
        out = super().identity()
        out["model_sha256"] = resolve_model(self.model).sha256()
        out["engine"] = engine_tag()
        return out

    def transform(self, texts: list[str]) -> np.ndarray:
        from triage.lm.models import get_local_lm

        lm = get_local_lm(self.model)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            # One query at a time: padding a batch would change the numbers, and a row must
            # equal what the served model's own prefill gives for the same query.
            out[i] = lm_features_from_prefill(lm.prefill(query_messages(text), keep_state=False))
        return out
