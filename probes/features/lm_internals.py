"""LM-internals feature (DiffAdapt): what a local causal LM's prefill says about a query.

For the query chat-formatted as one user turn (:func:`query_messages`), one forward pass gives

* the last prompt token's hidden state from the final layer (after the final norm) and from the
  middle layer (``n_layers // 2``),
* the next-token distribution's entropy and top-1 log-prob (DiffAdapt: entropy is U-shaped over
  difficulty, so the head gets it raw),
* statistics of log p(token | prefix) over the query's own tokens (not the template's).

Layout of the whole row (``dim = 2 * hidden_size + len(LM_SCALAR_NAMES)``)::

    [hidden_final (H) | hidden_middle (H) | LM_SCALAR_NAMES]

``parts`` keeps some of the three blocks, in that order (``lm:parts=scalars``,
``lm:parts=final+scalars``; default all three): a 135M model's 1,161 columns next to ~400 text
columns outweigh them under one L2 penalty, and ``eval/bench/probe_signals.py`` measures which blocks
earn their place. A variant is its own feature (cache folder, probe card); its rows are the whole
row's columns, so every variant of a model reads one cached prefill per query.

``model`` may be any local model, also one that no strategy serves (a *proxy*): the request path
then prefills it for the probe alone (:meth:`LMInternalsFeature.row_from_prefill`).

When the served model is local, the same numbers come from the served model's own prefill:
``lm_features_from_prefill(get_local_lm(name).prefill(messages))`` - and the generation that
follows continues from that prefill's KV cache. This module imports numpy only; the engine
(:func:`triage.lm.get_local_lm`) loads when :meth:`LMInternalsFeature.transform` first runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.probes.features.base import Feature, FeatureError, register_feature
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


#: The blocks of the row, in layout order; ``parts`` names a subset joined by ``+``.
LM_PARTS: tuple[str, ...] = ("final", "middle", "scalars")
DEFAULT_PARTS = "+".join(LM_PARTS)


def canonical_parts(parts: str) -> str:
    """``"scalars+final"`` -> ``"final+scalars"``: one spelling per subset (the identity reads it)."""
    if not isinstance(parts, str):
        raise FeatureError(f"lm parts must be a string like 'final+scalars', got {parts!r}")
    wanted = {p.strip().lower() for p in parts.replace(",", "+").split("+") if p.strip()}
    unknown = sorted(wanted - set(LM_PARTS))
    if unknown or not wanted:
        raise FeatureError(f"lm parts {parts!r}: name one or more of {', '.join(LM_PARTS)} joined by '+'")
    return "+".join(p for p in LM_PARTS if p in wanted)


def part_columns(parts: str, hidden_size: int) -> np.ndarray:
    """Column indices of ``parts`` in the whole row of a model with ``hidden_size``."""
    spans = {"final": (0, hidden_size), "middle": (hidden_size, 2 * hidden_size),
             "scalars": (2 * hidden_size, 2 * hidden_size + len(LM_SCALAR_NAMES))}
    return np.concatenate([np.arange(*spans[p]) for p in canonical_parts(parts).split("+")])


def query_messages(text: str) -> list[dict[str, str]]:
    """How a bare query is chat-formatted for the probe: one user turn, the model's default
    system prompt (whatever its chat template adds)."""
    return [{"role": "user", "content": text}]


def query_prefill(lm: Any, text: str, *, keep_state: bool = False) -> PrefillResult:
    """The prefill a probe's LM features are read from: ``text`` as one user turn, one query at a
    time (the request path, the latency card and training all take it from here)."""
    return lm.prefill(query_messages(text), keep_state=keep_state)


def row_maker(feature: Any) -> Any:
    """What turns one prefill into ``feature``'s row: its own ``row_from_prefill`` (a variant keeps
    some columns), else the whole LM row."""
    return getattr(feature, "row_from_prefill", None) or lm_features_from_prefill


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
    ``parts``: which blocks of the row to keep (see the module docstring).
    """

    name = "lm"
    version = "1"
    requires_torch = True  # i.e. computed by a local model: the caller (its prefill) supplies it

    def __init__(self, model: str = DEFAULT_LOCAL_MODEL, parts: str = DEFAULT_PARTS) -> None:
        self.model = model
        self.parts = canonical_parts(parts)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if self.parts == DEFAULT_PARTS:  # the whole row keeps its v1 identity (cache, probe cards)
            params.pop("parts")
        return params

    @property
    def is_whole(self) -> bool:
        return self.parts == DEFAULT_PARTS

    @property
    def columns(self) -> np.ndarray:
        """This variant's columns in the whole row (read once: the request path slices with it)."""
        cols = getattr(self, "_columns", None)
        if cols is None:
            cols = self._columns = part_columns(self.parts, model_shape(self.model).hidden_size)
        return cols

    @property
    def dim(self) -> int:
        return int(self.columns.size)

    @property
    def feature_names(self) -> list[str]:
        names = lm_feature_names(model_shape(self.model).hidden_size)
        return [names[i] for i in self.columns]

    def identity(self) -> dict[str, Any]:
        # The weights decide the numbers: a different file under the same name is a different
        # feature (cache keys and probe cards must not mix them).
        out = super().identity()
        out["model_sha256"] = resolve_model(self.model).sha256()
        out["engine"] = engine_tag()
        return out

    def whole(self) -> "LMInternalsFeature":
        """The all-parts feature of the same model (whose rows this variant slices)."""
        return type(self)(model=self.model)

    def row_from_prefill(self, prefill: PrefillResult) -> np.ndarray:
        """This variant's row of one prefill (the request path: self-probe or proxy model)."""
        row = lm_features_from_prefill(prefill)
        return row if self.is_whole else row[self.columns]

    def transform(self, texts: list[str]) -> np.ndarray:
        if not self.is_whole:
            # Slice the whole row through its own cache (the settings' cache folder): every
            # variant of a model shares one prefill per query, however many an ablation trains.
            from triage.probes.features.cache import FeatureCache

            if getattr(self, "_whole_cache", None) is None:
                self._whole_cache = FeatureCache(self.whole())
            return self._whole_cache.transform(texts)[:, self.columns]
        from triage.lm.models import get_local_lm

        lm = get_local_lm(self.model)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            # One query at a time: padding a batch would change the numbers, and a row must
            # equal what the served model's own prefill gives for the same query.
            out[i] = lm_features_from_prefill(query_prefill(lm, text))
        return out
