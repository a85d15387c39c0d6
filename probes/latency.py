"""Decision latency of an exported probe, measured when it is exported and recorded in its card.

A user choosing between probes (text only, or text plus a proxy LM's internals) trades quality for
request-time latency; the card says what each costs on the machine that built it. The measurement
is what one request pays: the probe's own features (encoder, lexical, ...) plus, for a feature a
local LM computes, that LM's prefill of the query (:meth:`Feature.transform` on one text, as the
router's probe runner does it), then the head - one query at a time, after a short warm-up.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

WARMUP = 3


def measure_decision_latency(folder: Path | str, texts: Sequence[str], *, n: int = 50) -> dict[str, Any]:
    """p50/p95 milliseconds per decision over up to ``n`` of ``texts`` (the first few warm up)."""
    from triage.probes.features import make_feature
    from triage.probes.runtime import load_probe

    probe = load_probe(folder)
    external = set(probe.external_features)
    lm_features = {s.name: make_feature(s.name, **(s.params or {})) for s in probe.card.features if s.name in external}
    sample = [t for t in texts if t][: n + WARMUP]
    if len(sample) <= WARMUP:
        return {}
    def lm_row(feature: Any, text: str) -> np.ndarray:
        # The prefill itself, as the router's probe runner does it: a feature's transform may read
        # its on-disk cache, which holds every training query.
        if getattr(feature, "row_from_prefill", None) is None:
            return feature.transform([text])
        from triage.lm import get_local_lm
        from triage.probes.features.lm_internals import query_prefill, row_maker

        return row_maker(feature)(query_prefill(get_local_lm(feature.model), text))[None, :]

    times = []
    for i, text in enumerate(sample):
        t0 = time.perf_counter()
        pre = {name: lm_row(f, text) for name, f in lm_features.items()}
        probe.predict_one(text, precomputed=pre or None)
        if i >= WARMUP:
            times.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "queries": int(arr.size),
        "includes": sorted(["head", *(s.name for s in probe.card.features)]),
        "how": "one query at a time after a warm-up, measured at export on the building machine",
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(),
                    "load_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
    }
