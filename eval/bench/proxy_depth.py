"""Benchmark: a proxy model's internals from its first layers only (issue #14 item 1, "per layer").

The ``lm`` probe feature prefills the query through a small local model (SmolLM2-135M, 30 layers) to
read its last-token hidden states, next-token entropy and prompt log-probs - ~130 ms a query on this
2-core machine, against the 30 ms goal for a decision with proxy features. The cost is linear in the
layers run, so this measures the same features from a copy of the model cut after its first K layers
(onnxruntime-genai's builder, ``num_hidden_layers=K``: the final norm and the LM head then read layer
K's output, the "middle" state is layer K // 2): prefill latency per K, and what each K's features add
to the default text probe, cross-fitted exactly as ``probe_signals.py`` does (5 folds, seed 0;
RouterBench its own split; paired bootstrap deltas against ``text``, logistic head, C=0.05).

    python eval/bench/proxy_depth.py --json [--layers 4,8,30] [--datasets gsm8k,routerbench]
        [--max-rows routerbench=1500] [--latency-n 50]      # ~45 min on 2 cores, most of it the
                                                            # full-depth prefills of long RouterBench prompts

Builds: ``triage.lm.onnx_build.build_onnx(model, layers=K)``, each K in its own folder
(``<models cache>/onnx/<model>-<sha>-<quant>-L<K>``; the full-depth row is the serving build); LM rows
to ``<cache>/features/proxy-depth/`` (one ``.npy`` per model, K and data set). A measurement only: no
serving path reads the cut builds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triage.eval.bench.probe_alternatives import BlockRouter, sweep, write_result
from triage.eval.bench.probe_signals import parse_max_rows
from triage.eval.bench.probe_signals_extra import load_dataset
from triage.eval.bench.timing import time_per_query

RESULTS = Path(__file__).parent / "results" / "proxy_depth.json"
#: Column blocks of an LM row (triage.probes.features.lm_internals layout: final H | middle H | 9 scalars).
PARTS = {"scalars": "scalars", "final+scalars": "final+scalars", "all": "final+middle+scalars"}


def build(model: str, layers: int | None) -> tuple[Any, int]:
    """(card, depth) of the int4 build of ``model`` keeping its first ``layers`` layers (None: the
    serving build, every layer); built once."""
    from triage.lm.onnx_build import build_onnx

    try:
        res = build_onnx(model, layers=layers, log=lambda line: print(f"[build] {line}", file=sys.stderr))
    except ValueError as exc:
        raise SystemExit(f"--layers: {exc}") from None
    return res.card, res.card.n_layers


def load_lm(model: str, card: Any, threads: int = 2) -> Any:
    """The build described by ``card`` (what :func:`build` returned: not read from disk again)."""
    from triage.lm.onnx_engine import OnnxLM
    from triage.lm.specs import resolve_model

    return OnnxLM(resolve_model(model), card, threads=threads)


def lm_rows(lm: Any, texts: list[str], cache: Path) -> np.ndarray:
    from triage.probes.features.lm_internals import lm_features_from_prefill, query_prefill

    if cache.is_file():
        rows = np.load(cache)
        if rows.shape[0] == len(texts):
            return rows
    t0 = time.perf_counter()
    rows = np.stack([lm_features_from_prefill(query_prefill(lm, t)) for t in texts]).astype(np.float32)
    print(f"[rows] {cache.name}: {len(texts)} prefills in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, rows)
    return rows


def part_columns(rows: np.ndarray, parts: str, hidden: int) -> np.ndarray:
    blocks = {"final": rows[:, :hidden], "middle": rows[:, hidden:2 * hidden], "scalars": rows[:, 2 * hidden:]}
    return np.concatenate([blocks[p] for p in parts.split("+")], axis=1)


def latency(lm: Any, texts: list[str], n: int) -> dict[str, Any]:
    """Prefill p50/p90 (ms) over the first ``n`` queries after 3 warm-up prefills, and the prompt length."""
    from triage.probes.features.lm_internals import query_prefill

    tokens: list[int] = []
    ms = [1e3 * t for t in time_per_query(lambda t: tokens.append(query_prefill(lm, t).n_prompt_tokens),
                                          texts[:3] + texts[:n], warmup=3)]
    q = statistics.quantiles(ms, n=10)
    return {"queries": len(ms), "p50_ms": round(statistics.median(ms), 2), "p90_ms": round(q[-1], 2),
            "prompt_tokens_mean": round(float(np.mean(tokens[3:])), 1)}


def text_latency(texts: list[str], n: int) -> dict[str, Any]:
    """The default text probe's decision-input latency (one query), for the sum."""
    from triage.probes.runtime import default_probe_path, load_probe

    probe = load_probe(default_probe_path())
    ms = [1e3 * t for t in time_per_query(lambda t: probe.predict([t]), texts[:3] + texts[:n], warmup=3)]
    return {"queries": len(ms), "p50_ms": round(statistics.median(ms), 2)}


def main(argv: list[str] | None = None) -> int:
    from triage.settings import get_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="4,8,full", help="comma list of K (full: the model's own depth)")
    ap.add_argument("--datasets", default="gsm8k,routerbench")
    ap.add_argument("--max-rows", type=parse_max_rows, default={"routerbench": 1500})
    ap.add_argument("--latency-n", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    depths = [None if k.strip() == "full" else int(k) for k in args.layers.split(",") if k.strip()]
    builds = {}
    for k in depths:
        card, depth = build(args.model, k)
        builds[str(depth)] = card
    result: dict[str, Any] = {"benchmark": "proxy_depth", "model": args.model, "C": BlockRouter().C, "argv": sys.argv[1:],
                              "loadavg_1m_start": round(os.getloadavg()[0], 2), "latency": {}, "datasets": {}}
    cache_root = Path(get_settings().cache_dir) / "features" / "proxy-depth"
    gsm8k, _ = load_dataset("gsm8k", None)
    texts_lat = list(gsm8k.texts)
    result["latency"]["text_probe"] = text_latency(texts_lat, args.latency_n)
    names = list(filter(None, args.datasets.split(",")))
    texts = {name: list(load_dataset(name, args.max_rows.get(name))[0].texts) for name in names}
    rows: dict[str, dict[str, np.ndarray]] = {}
    hidden = 0
    for k, card in builds.items():
        lm = load_lm(args.model, card)
        hidden = lm.hidden_size
        result["latency"][f"L{k}"] = latency(lm, texts_lat, args.latency_n)
        for name in names:
            cache = cache_root / f"{args.model}-L{k}-{name}-{len(texts[name])}.npy"
            rows.setdefault(name, {})[k] = lm_rows(lm, texts[name], cache)
        del lm
    for name in names:
        def routers(_data: Any, name: str = name) -> dict[str, Any]:
            out: dict[str, Any] = {"text": BlockRouter("text")}
            for k in builds:
                for label, parts in PARTS.items():
                    out[f"text+L{k}:{label}"] = BlockRouter("text", block=part_columns(rows[name][k], parts, hidden))
            return out

        result["datasets"][name] = sweep(name, routers, args.bootstrap, max_rows=args.max_rows)
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return write_result(args.out, result, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
