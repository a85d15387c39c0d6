"""Benchmark: the local LM runtime - load time, LM-internals probe ms/query, generation tok/s.

Figures (one JSON object with ``--json``):

* ``load_seconds`` / ``load_source``: first ``get_local_lm`` in this process (``gguf`` = dequantise
  the GGUF file and write the safetensors cache; ``safetensors-cache`` = later loads);
* ``lm_features_p50_ms`` / ``p99_ms`` / ``mean_ms``: one query's LM-internals feature row
  (chat-formatted prefill + hidden states + prompt log-prob stats), GSM8K test questions;
* ``generate_tok_per_s``: greedy decoding speed after the prompt (``--gen-tokens`` tokens);
* ``self_probe_extra_ms``: what probing the served model costs on top of answering -
  (prefill + generate reusing it) minus (generate alone), per query. DiffAdapt's point: close to
  the price of the hidden-state/log-prob bookkeeping, since the prefill is shared.

The machine's other load skews all of this; ``threads`` and ``loadavg_1m`` are reported with it.

    python eval/bench/lm_probe_latency.py [--n 40] [--gen-queries 4] [--gen-tokens 24] [--model smollm2-135m] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triage.probes.features.lm_internals import lm_features_from_prefill, query_messages  # noqa: E402
from triage.lm import DEFAULT_LOCAL_MODEL, LocalModelError  # noqa: E402
from triage.settings import get_settings  # noqa: E402

FALLBACK_QUERIES = [
    "What is 2 + 2?",
    "Name the capital of Japan.",
    "A train travels 120 km in 1.5 hours. What is its average speed in km/h?",
    "Prove that the square root of 2 is irrational.",
]


def load_queries(n: int) -> list[str]:
    path = get_settings().data_dir / "gsm8k" / "test.jsonl"
    if not path.is_file():
        return (FALLBACK_QUERIES * (n // len(FALLBACK_QUERIES) + 1))[:n]
    out: list[str] = []
    with path.open() as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["question"])
            if len(out) >= n:
                break
    return out


def run(model: str, n: int, gen_queries: int, gen_tokens: int) -> dict[str, Any]:
    import torch

    from triage.lm import get_local_lm

    t0 = time.perf_counter()
    lm = get_local_lm(model)
    load_s = time.perf_counter() - t0
    queries = load_queries(n)
    lm.prefill(query_messages(queries[0]), keep_state=False)  # warm-up
    ms, tokens = [], []
    for q in queries:
        t = time.perf_counter()
        pre = lm.prefill(query_messages(q), keep_state=False)
        lm_features_from_prefill(pre)
        ms.append((time.perf_counter() - t) * 1e3)
        tokens.append(pre.n_prompt_tokens)

    gen_rates, fresh_ms, probed_ms = [], [], []
    for q in queries[:gen_queries]:
        msgs = query_messages(q)
        lm.forget_prefills()
        t = time.perf_counter()
        fresh = lm.generate(msgs, max_tokens=gen_tokens, temperature=0)
        fresh_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        pre = lm.prefill(msgs)
        lm_features_from_prefill(pre)
        reused = lm.generate(msgs, max_tokens=gen_tokens, temperature=0)
        probed_ms.append((time.perf_counter() - t) * 1e3)
        assert reused.prefill_reused and reused.text == fresh.text
        # decoding speed: tokens after the first (the first comes straight from the prefill)
        decode_s = reused.seconds
        if reused.completion_tokens > 1 and decode_s > 0:
            gen_rates.append(reused.completion_tokens / decode_s)
    lm.forget_prefills()
    arr = np.asarray(ms)
    return {
        "model": lm.name,
        "model_sha256": lm.sha256,
        "load_seconds": round(load_s, 2),
        "load_source": lm.load_source,
        "threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "queries": len(queries),
        "prompt_tokens_mean": round(float(np.mean(tokens)), 1),
        "lm_features_p50_ms": round(float(np.percentile(arr, 50)), 1),
        "lm_features_p99_ms": round(float(np.percentile(arr, 99)), 1),
        "lm_features_mean_ms": round(float(arr.mean()), 1),
        "lm_feature_dim": int(lm_features_from_prefill(pre).shape[0]),
        "generate_tokens": gen_tokens,
        "generate_tok_per_s": round(float(np.median(gen_rates)), 1) if gen_rates else None,
        "generate_fresh_ms": round(float(np.median(fresh_ms)), 1) if fresh_ms else None,
        "probe_plus_generate_ms": round(float(np.median(probed_ms)), 1) if probed_ms else None,
        "self_probe_extra_ms": round(float(np.median(np.subtract(probed_ms, fresh_ms))), 1) if fresh_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_LOCAL_MODEL)
    ap.add_argument("--n", type=int, default=40, help="queries for the LM-feature latency")
    ap.add_argument("--gen-queries", type=int, default=4, help="queries for generation / self-probe figures")
    ap.add_argument("--gen-tokens", type=int, default=24)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.n < 1 or args.gen_queries < 0 or args.gen_tokens < 1:
        print("error: --n and --gen-tokens must be >= 1, --gen-queries >= 0", file=sys.stderr)
        return 2
    try:
        out = run(args.model, args.n, args.gen_queries, args.gen_tokens)
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
