"""Benchmark: the text probe on the request path (onnxruntime + tokenizers, no torch).

Figures (one JSON object with ``--json``), for the default probe unless ``--probe DIR``:

* ``p50_ms`` / ``p99_ms`` / ``mean_ms``: one query of exactly ``--tokens`` (64) encoder tokens through
  ``probe.predict_one`` - tokenise, MiniLM int8 encoder, lexical features, aux regressors, head,
  calibration, ProbeOutput;
* ``encoder_p50_ms``: the encoder run alone; ``head_p50_ms`` / ``head_p99_ms``: the ONNX head alone
  (one row, ``session.run`` included); ``calibration_p50_ms``: numpy calibration alone;
* ``batch_qps``: queries per second of ``probe.predict`` over ``--batch`` distinct GSM8K test questions
  (``workers`` concurrent encoder runs, each ``threads`` onnxruntime threads);
* ``lm_ms_per_query``: the LM-internals feature (SmolLM2-135M prefill, hidden states, entropy), p50 over
  ``--lm-n`` queries after loading - null when ``--no-lm`` or the local model is unavailable.

The machine is shared: ``loadavg_1m`` at the start is reported with the figures.

    python eval/bench/probe_latency.py [--json] [--probe DIR] [--threads 1] [--workers 2] [--n 1000] [--no-lm]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May, and how many more would she need "
    "to sell in June to reach a total of 200 clips over the three months combined, assuming each "
    "friend buys at most three clips"
)


def _ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def _timed(fn, n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return _ms(out)


def prompt_with_tokens(tokenizer: Any, n_tokens: int) -> str:
    """A GSM8K-style question that is exactly ``n_tokens`` encoder tokens ([CLS] and [SEP] included)."""
    words = BASE_QUESTION.split()
    text = ""
    for k in range(1, 10 * len(words)):
        candidate = " ".join((words * 10)[:k]) + "?"
        if len(tokenizer.encode(candidate).ids) > n_tokens:
            break
        text = candidate
    assert len(tokenizer.encode(text).ids) <= n_tokens
    return text


def gsm8k_questions(limit: int) -> list[str]:
    from triage.settings import get_settings

    path = get_settings().data_dir / "gsm8k" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows[:limit]]


def lm_ms_per_query(n: int) -> float | None:
    """p50 ms of the LM-internals feature on GSM8K questions (None when unavailable)."""
    try:
        from triage.probes.features import make_feature

        from triage.eval.bench.timing import time_per_query

        feature = make_feature("lm")
        times = time_per_query(lambda q: feature.transform([q]), gsm8k_questions(n + 2))
        return float(np.percentile(np.asarray(times) * 1000.0, 50))
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: the text probe figures stand alone
        print(f"lm feature unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=Path, default=None, help="probe folder (default: the default probe)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--n", type=int, default=1000, help="single-query repetitions")
    parser.add_argument("--batch", type=int, default=512, help="distinct questions for batch_qps")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per encoder run")
    parser.add_argument("--workers", type=int, default=2, help="concurrent encoder runs in a batch")
    parser.add_argument("--lm-n", type=int, default=10)
    parser.add_argument("--no-lm", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from triage.eval.default_probe import ensure_default_probe
    from triage.probes.runtime import load_probe

    load_1m = os.getloadavg()[0]
    path = args.probe or ensure_default_probe()
    t0 = time.perf_counter()
    probe = load_probe(path, intra_op_threads=args.threads, workers=args.workers)
    load_s = time.perf_counter() - t0
    text_feature = next(f for f in probe._features if f is not None and hasattr(f, "encoder"))
    encoder = text_feature.encoder
    probe.predict_one("warm up")
    text = prompt_with_tokens(encoder._tokenizer, args.tokens)
    n_tokens = len(encoder._tokenizer.encode(text).ids)

    single = _timed(lambda: probe.predict_one(text), args.n, 50)
    enc = _timed(lambda: encoder.encode([text]), args.n, 20)
    X = probe.feature_matrix([text])
    head = _timed(lambda: probe.head_proba(X), 5 * args.n, 100)
    raw_s, raw_t = probe.head_proba(X)
    from triage.probes.calibration import apply_all

    calib = _timed(lambda: apply_all(probe.card.calibration, raw_s, raw_t), args.n, 20)

    questions = gsm8k_questions(args.batch)
    probe.predict(questions[:8])
    t = time.perf_counter()
    probe.predict(questions)
    batch_qps = len(questions) / (time.perf_counter() - t)

    import onnxruntime

    result = {
        "probe": probe.version,
        "features": probe.feature_names,
        "prompt_tokens": n_tokens,
        "p50_ms": round(single["p50"], 3),
        "p99_ms": round(single["p99"], 3),
        "mean_ms": round(single["mean"], 3),
        "encoder_p50_ms": round(enc["p50"], 3),
        "head_p50_ms": round(head["p50"], 4),
        "head_p99_ms": round(head["p99"], 4),
        "calibration_p50_ms": round(calib["p50"], 4),
        "batch_qps": round(batch_qps, 1),
        "batch_size": len(questions),
        "lm_ms_per_query": None if args.no_lm else lm_ms_per_query(args.lm_n),
        "load_s": round(load_s, 3),
        "threads": args.threads,
        "workers": args.workers,
        "encoder_variant": getattr(encoder, "variant", None),
        "onnxruntime": onnxruntime.__version__,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(load_1m, 2),
        "torch_imported_by_probe": "torch" in sys.modules and args.no_lm,
    }
    if result["lm_ms_per_query"] is not None:
        result["lm_ms_per_query"] = round(result["lm_ms_per_query"], 1)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
    return result


if __name__ == "__main__":
    main()
