"""``probe-lm``: the probe head on local-LM internals (DiffAdapt: SmolLM2 prefill hidden states,
next-token entropy, prompt log-prob statistics; :mod:`triage.probes.features.lm_internals`)."""

from __future__ import annotations

from triage.eval.routers.base import register
from triage.eval.routers.probe_text import ProbeFeatureRouter


@register
class ProbeLMRouter(ProbeFeatureRouter):
    name = "probe-lm"
    features = "lm"
