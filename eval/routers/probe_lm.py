"""``probe-lm``: the probe head on local-LM internals (DiffAdapt: SmolLM2 prefill hidden states,
next-token entropy, prompt log-prob statistics; :mod:`probes.features.lm_internals`)."""

from __future__ import annotations

from eval.routers.base import register
from eval.routers.probe_text import ProbeFeatureRouter


@register
class ProbeLMRouter(ProbeFeatureRouter):
    name = "probe-lm"
    features = "lm"
