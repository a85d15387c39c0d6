"""Benchmark: cheaper or richer probes that were measured and NOT shipped (issues #14, #15, #16).

Each block answers one question with the project's cross-fitted replay protocol
(``probe_signals_extra.evaluate_sweeps``: 5 folds, seed 0, RouterBench its own train/test split;
paired bootstrap deltas against the default probe's ``text`` features, logistic head, C=0.05):

* ``pooling`` (RouterBench and SimpleQA, where the fast probe trailed most) - can the fast probe (``text:variant=l0``, MiniLM's embedding layer only) close its
  gap to the default's 2-layer encoder with one more pooled block of the same embedding layer? Blocks,
  computed with torch from the same weights and tokenizer: max pooling (L2-normalised), per-dimension
  std, and the mean without [CLS]/[SEP] (L2-normalised), each appended to ``text:variant=l0``.
* ``concat`` - both encoders' features side by side (``text`` + ``text:variant=l0``): does the
  second view add anything?
* ``cascade`` - could a two-stage probe (the fast probe first, the default one only near a tier
  boundary) keep the default's decisions at the fast probe's cost? Tier agreement of the two probes on
  GSM8K test and RouterBench questions (tiers: each probe's expected tier P(normal) + 2 P(hard) cut
  at its own 50% / 80% quantiles, as ``local.yaml`` splits GSM8K 50/30/20), and the share a margin
  rule would have to escalate for a given agreement. Both probes are trained on RouteLLM GSM8K+MMLU,
  which holds the GSM8K test questions (``trained_on_share`` says so per set): agreement there is
  in-sample for both, likely higher than on unseen questions; RouterBench's questions are unseen.
* ``pooled_bandit_head`` - with one observed outcome per query (uniform random logging over the 11
  RouterBench models, seed 0), does a multi-task logistic model (shared weights + per-model deviations
  + per-model intercepts, one fit) beat one logistic model per model fitted on its own rows?

    python eval/bench/probe_alternatives.py --json    # ~10 min on 2 cores with warm feature caches

Needs the default probe (``triage probe build-default``) and the fast probe
(``triage probe build-default --features text:variant=l0 --out DIR``, ``--fast-probe DIR``) for
``cascade``, and torch (the build extra) for ``pooling``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triage.eval.bench.probe_signals_extra import SignalRouter, evaluate_sweeps, load_dataset

RESULTS = Path(__file__).parent / "results" / "probe_alternatives.json"
HEADLINE = {"gsm8k": "apgr", "routerbench": "aiq", "simpleqa": "aiq", "mmlu": "apgr"}
C = 0.05
MAX_ROWS = {"simpleqa": 3232, "mmlu": 5000}
ALL_BLOCKS = ("pooling", "concat", "cascade", "pooled_bandit_head")


class BlockRouter(SignalRouter):
    """``SignalRouter`` on a feature spec plus fixed extra columns (one row per data row)."""

    def __init__(self, features: str = "text", C: float = C, block: np.ndarray | None = None,
                 also: str = "") -> None:
        super().__init__(features=features, C=C)
        self.block = block
        self.also = also  # a second feature spec whose columns are appended (the same feature twice)

    def _matrix(self, data: Any) -> np.ndarray:
        from triage.probes.training import feature_matrix, parse_features

        X = super()._matrix(data)
        parts = [X]
        if self.also:
            parts.append(feature_matrix(parse_features(self.also), data.texts))
        if self.block is not None:
            parts.append(self.block)
        return np.concatenate(parts, axis=1) if len(parts) > 1 else X


def embedding_layer_blocks(texts: list[str]) -> dict[str, np.ndarray]:
    """Per text, pooled blocks of MiniLM's embedding-layer output (what the ``l0`` variant mean-pools)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from triage.probes.encoder.export import source_model_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = source_model_dir()
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=128)  # the encoder's max_tokens
    out = {k: np.zeros((len(texts), bert.config.hidden_size), np.float32) for k in ("max", "std", "mean_no_special")}
    with torch.no_grad():
        for i, text in enumerate(texts):
            e = bert.embeddings(input_ids=torch.tensor([tok.encode(text).ids]))[0]
            mx = e.max(0).values
            out["max"][i] = (mx / mx.norm()).numpy()
            out["std"][i] = (e.std(0) if e.shape[0] > 1 else torch.zeros(e.shape[1])).numpy()
            inner = e[1:-1] if e.shape[0] > 2 else e
            m = inner.mean(0)
            out["mean_no_special"][i] = (m / m.norm()).numpy()
    return out


def sweep(name: str, routers_for: Callable[[Any], dict[str, Any]], n_boot: int, *,
          max_rows: dict[str, int] = MAX_ROWS) -> dict[str, Any]:
    """One data set's cross-fitted table for the routers ``routers_for(data)`` builds, against ``text``."""
    data, note = load_dataset(name, max_rows.get(name))
    table = evaluate_sweeps(data, routers_for(data), headline=HEADLINE[name], reference="text", n_boot=n_boot,
                            seed=0, folds=5, progress=lambda key: print(f"[{name}] {key}", file=sys.stderr, flush=True))
    return {"rows": note, "headline": HEADLINE[name], "configs": table["configs"]}


def run_pooling(names: list[str], n_boot: int) -> dict[str, Any]:
    def routers(data: Any) -> dict[str, Any]:
        blocks = embedding_layer_blocks(list(data.texts))
        out: dict[str, Any] = {"text": BlockRouter("text"), "text-l0": BlockRouter("text:variant=l0")}
        out.update({f"text-l0+{k}": BlockRouter("text:variant=l0", block=b) for k, b in blocks.items()})
        return out

    return {name: sweep(name, routers, n_boot) for name in names}


def run_concat(names: list[str], n_boot: int) -> dict[str, Any]:
    def routers(_data: Any) -> dict[str, Any]:
        return {"text": BlockRouter("text"),
                "text+text-l0": BlockRouter("text", also="text:variant=l0"),
                "text+text-l0 (C=0.025)": BlockRouter("text", C=C / 2, also="text:variant=l0")}

    return {name: sweep(name, routers, n_boot) for name in names}


def run_cascade(fast_probe: Path) -> dict[str, Any]:
    from triage.probes.card import text_digest, training_row_digests
    from triage.probes.runtime import default_probe_path, load_probe

    gsm8k = [json.loads(line)["question"] for line in (REPO.parent / "shared/data/gsm8k/test.jsonl").open()]
    rb, _ = load_dataset("routerbench", None)
    sets = {"gsm8k-test": gsm8k, "routerbench (first 3000 complete rows)": list(rb.texts)[:3000]}
    fast, default = load_probe(fast_probe), load_probe(default_probe_path())
    out: dict[str, Any] = {"fast_probe": str(fast_probe), "tiers": "expected tier cut at each probe's own 50%/80% quantiles"}
    seen = {k: training_row_digests(p.card) or set() for k, p in (("fast", fast), ("default", default))}
    for name, texts in sets.items():
        (_, tier_fast), (_, tier_default) = fast.predict_arrays(texts), default.predict_arrays(texts)
        s_fast = tier_fast[:, 1] + 2 * tier_fast[:, 2]
        s_default = tier_default[:, 1] + 2 * tier_default[:, 2]
        cut_fast, cut_default = np.quantile(s_fast, [0.5, 0.8]), np.quantile(s_default, [0.5, 0.8])
        t_fast, t_default = np.searchsorted(cut_fast, s_fast), np.searchsorted(cut_default, s_default)
        rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
        block: dict[str, Any] = {
            "n": len(texts),
            # agreement, not routing quality; still, say which rows each probe was trained on
            "trained_on_share": {k: round(float(np.mean([text_digest(t) in d for t in texts])), 3) for k, d in seen.items()},
            "tier_agreement_fast_vs_default": round(float((t_fast == t_default).mean()), 3),
            "spearman_expected_tier": round(float(np.corrcoef(rank(s_fast), rank(s_default))[0, 1]), 3),
            "margin_rule": [],
        }
        for k in (0.1, 0.25, 0.5, 0.75):  # escalate when the fast score is within k sd of a cut
            esc = (np.abs(s_fast[:, None] - cut_fast[None, :]) < k * np.std(s_fast)).any(axis=1)
            tiers = np.where(esc, t_default, t_fast)
            block["margin_rule"].append({"margin_sd": k, "escalated_share": round(float(esc.mean()), 3),
                                         "agreement_with_default": round(float((tiers == t_default).mean()), 3)})
        out[name] = block
    return out


def run_pooled_bandit_head(n_boot: int) -> dict[str, Any]:
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from triage.eval.routers.probe_text import ProbeFeatureRouter

    def fit_pooled(Z: np.ndarray, arm: np.ndarray, y: np.ndarray, m: int, C_: float, share: float) -> tuple:
        n, d = Z.shape
        rows = np.repeat(np.arange(n), d)
        cols = (arm[:, None] * d + np.arange(d)[None, :]).ravel()
        deviations = sp.csr_matrix((Z.ravel(), (rows, cols)), shape=(n, d * m))
        intercepts = sp.csr_matrix((np.full(n, 10.0), (np.arange(n), arm)), shape=(n, m))  # ~unpenalised
        S = sp.hstack([sp.csr_matrix(Z * share), deviations, intercepts]).tocsr()
        lr = LogisticRegression(C=C_, max_iter=3000).fit(S, y)
        c = lr.coef_[0]
        W = c[:d][None, :] * share + c[d:d + d * m].reshape(m, d)
        return W, lr.intercept_[0] + c[d + d * m:] * 10.0

    class LoggedRouter(ProbeFeatureRouter):
        """Fitted on one uniformly drawn model's outcome per training query (or all: ``full``)."""

        def __init__(self, mode: str = "per_model", C: float = C, share: float = 1.0) -> None:
            super().__init__(C=C, features="text")
            self.mode, self.share, self.extras = mode, share, ""

        def fit(self, data: Any, train: np.ndarray) -> "LoggedRouter":
            super(ProbeFeatureRouter, self).fit(data, train)
            train = np.asarray(train, dtype=np.int64)
            train = train[~np.isnan(data.score[train]).any(axis=1)]
            self.X_ = self._matrix(data)
            success = (data.score[train] >= 0.5).astype(int)
            arm = np.random.default_rng(0).integers(0, data.m, len(train))
            y = success[np.arange(len(train)), arm]
            self.scaler_ = StandardScaler().fit(self.X_[train])
            Z = self.scaler_.transform(self.X_[train])
            if self.mode == "pooled":
                self.W_, self.b_ = fit_pooled(Z, arm, y, data.m, float(self.C), self.share)
                return self
            fits = []
            for j in range(data.m):
                sel = np.ones(len(train), bool) if self.mode == "full" else arm == j
                target = success[:, j] if self.mode == "full" else y[sel]
                fits.append(LogisticRegression(C=float(self.C), max_iter=2000).fit(Z[sel], target))
            self.W_ = np.array([f.coef_[0] for f in fits])
            self.b_ = np.array([f.intercept_[0] for f in fits])
            return self

        def predict_success(self, data: Any, rows: np.ndarray) -> np.ndarray:
            Z = self.scaler_.transform(self.X_[np.asarray(rows, dtype=np.int64)])
            return 1.0 / (1.0 + np.exp(-(Z @ self.W_.T + self.b_)))

    data, note = load_dataset("routerbench", None)
    routers: dict[str, Any] = {"per_model": LoggedRouter("per_model"), "full_information": LoggedRouter("full")}
    for C_ in (0.05, 0.01):
        for share in (1.0, 3.0):
            routers[f"pooled C={C_} shared_scale={share}"] = LoggedRouter("pooled", C=C_, share=share)
    table = evaluate_sweeps(data, routers, headline="aiq", reference="per_model", n_boot=n_boot, seed=0, folds=5)
    return {"dataset": "routerbench", "rows": note, "logging": "uniform random over the 11 models, seed 0",
            "configs": table["configs"]}


def write_result(out: Path, result: dict[str, Any], *, as_json: bool) -> int:
    """Write a results file; print it (``--json``) or where it went. The script's exit code."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if as_json else f"written {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", default=",".join(ALL_BLOCKS))
    ap.add_argument("--datasets", default="gsm8k,routerbench,simpleqa,mmlu")
    ap.add_argument("--fast-probe", type=Path, default=None, help="folder of the fast probe (cascade block)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--update", action="store_true", help="keep the blocks not run now from an existing --out")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    blocks = set(filter(None, args.blocks.split(",")))
    names = list(filter(None, args.datasets.split(",")))
    if "cascade" in blocks and args.fast_probe is None:
        ap.error("the cascade block needs --fast-probe DIR (triage probe build-default --features text:variant=l0 --out DIR)")
    t0 = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "probe_alternatives", "C": C, "runs": []}
    if args.update and args.out.is_file():  # keep the blocks not run now (and the runs that made them)
        old = json.loads(args.out.read_text())
        result["runs"] = [r for r in old.get("runs", []) if set(r["blocks"]) - blocks]
        result.update({k: v for k, v in old.items() if k in ALL_BLOCKS and k not in blocks})
    result["runs"].append({"blocks": sorted(blocks), "argv": sys.argv[1:], "loadavg_1m_start": round(os.getloadavg()[0], 2)})
    if "pooling" in blocks:
        result["pooling"] = run_pooling([n for n in names if n in ("routerbench", "simpleqa")] or names, args.bootstrap)
    if "concat" in blocks:
        result["concat"] = run_concat(names, args.bootstrap)
    if "cascade" in blocks:
        result["cascade"] = run_cascade(args.fast_probe)
    if "pooled_bandit_head" in blocks:
        result["pooled_bandit_head"] = run_pooled_bandit_head(args.bootstrap)
    result["runs"][-1]["seconds"] = round(time.perf_counter() - t0, 1)
    return write_result(args.out, result, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
