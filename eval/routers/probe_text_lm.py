"""``probe-text+lm``: the probe head on text features and local-LM internals together."""

from __future__ import annotations

from triage.eval.routers.base import register
from triage.eval.routers.probe_text import ProbeFeatureRouter


@register
class ProbeTextLMRouter(ProbeFeatureRouter):
    name = "probe-text+lm"
    features = "text,lm"
