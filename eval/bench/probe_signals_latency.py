"""Latency figures of ``eval/bench/probe_signals.py``: per signal, and per routing decision.

* ``signal_latency``: p50/p90 ms of one query's feature row for each signal, one query at a time, on
  GSM8K test questions (LM prefill on the int4 engine, ``lm_onnx_threads`` threads - the bench sets 2).
* ``decision_latency``: ``Router.route`` p50/p90 ms (probe + policy decision) for probes trained on
  RouteLLM GSM8K under a policy whose strategies are API models: a text probe, and text+lm proxy
  probes whose LM rows come from prefilling a local model that answers nothing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from triage.eval.bench.probe_latency import gsm8k_questions


def _pct(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2)}


def signal_latency(n: int, models: tuple[str, ...] = ("smollm2-135m", "qwen2.5-coder-0.5b")) -> dict[str, Any]:
    from triage.probes.features import make_feature
    from triage.eval.bench.timing import time_per_query
    from triage.probes.features.lm_internals import lm_features_from_prefill, query_prefill

    from triage.lm import get_local_lm
    from triage.settings import get_settings

    questions = gsm8k_questions(n + 2)
    out: dict[str, Any] = {"queries": n, "onnx_threads": get_settings().lm_onnx_threads}
    for spec in ("lexical", "text:aux=false", "text"):
        name, _, arg = spec.partition(":")
        feature = make_feature(name, **({"aux": False} if arg else {}))
        times = time_per_query(lambda q, f=feature: f.transform_checked([q]), questions)
        out[spec] = _pct(times)
    for model in models:
        print(f"[latency] lm prefill: {model}", file=sys.stderr, flush=True)
        lm = get_local_lm(model)
        tokens: list[int] = []

        def row(q: str, lm: Any = lm) -> None:
            pre = query_prefill(lm, q)
            lm_features_from_prefill(pre)
            tokens.append(pre.n_prompt_tokens)

        times = time_per_query(row, questions)
        del tokens[:len(tokens) - len(times)]  # the warm-up queries' counts
        out[f"lm:{model}"] = {**_pct(times), "prompt_tokens_mean": round(float(np.mean(tokens)), 1),
                              "ms_per_token": round(1000 * float(np.median(np.asarray(times) / tokens)), 3)}
    return out


def _train_export(features: list[str], folder: Path, rows: int) -> Path:
    """A probe for timing only: trained on the GSM8K subsample whose proxy rows are cached."""
    from triage.eval.bench.probe_signals_extra import load_dataset
    from triage.probes.export import export_probe
    from triage.probes.training import TrainConfig, train_probe

    data, _ = load_dataset("gsm8k", rows)
    trained = train_probe(data, TrainConfig(features=features, head_params={"C": 0.02}, n_boot=0))
    export_probe(trained, folder, plot=False)
    return folder


def decision_latency(n: int, proxies: tuple[str, ...] = ("text,lm:parts=scalars",), *,
                     train_rows: int = 512) -> dict[str, Any]:
    """``Router.route`` on API-model policies: the text probe and each text+lm proxy probe."""
    import yaml
    from triage.eval.bench.timing import time_per_query
    from triage.router.core import Router

    questions = gsm8k_questions(n + 2)
    out: dict[str, Any] = {"queries": n}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in ("text", *proxies):
            print(f"[latency] decision: {spec}", file=sys.stderr, flush=True)
            probe = _train_export(spec.split(","), Path(tmp) / f"probe{len(out)}", train_rows)
            policy = {"name": "api-pair", "probe": str(probe),
                      "strategies": {"cheap": {"model": "openai/gpt-4o-mini"}, "big": {"model": "openai/gpt-4o"}},
                      "tiers": {"easy": "cheap", "normal": "cheap", "hard": "big"}}
            path = Path(tmp) / f"policy{len(out)}.yaml"
            path.write_text(yaml.safe_dump(policy, sort_keys=False))
            router = Router.from_file(path).warm()
            times = time_per_query(lambda q, r=router: r.route([{"role": "user", "content": q}]), questions)
            out[spec] = _pct(times)
    return out
