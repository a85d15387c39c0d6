"""Pieces of ``eval/bench/probe_signals.py``: the data sets, the router, two candidate signals that
are measured before they could ship, and the cross-fitted evaluation with paired bootstrap deltas.

* ``rel`` - lexical statistics z-scored within the query's group (its task label, or its MiniLM
  k-means cluster), the group statistics fitted on each fold's training rows only. A feature with
  fit state: the probe's feature contract has no fit step, so it lives here until it earns one.
* ``selfconf`` - one more prefill of the proxy model on "<query> Can you answer this correctly?
  Answer Yes or No." and the next token's log P(Yes) - log P(No), log(P(Yes) + P(No)) and entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from triage.eval.evaluation.outcomes import OutcomeTable, RoutedOutcomes
from triage.eval.evaluation.protocol import make_protocol, run_router
from triage.eval.metrics.bootstrap import Bootstrap, percentile_interval
from triage.eval.metrics.cost import cost_axis
from triage.eval.metrics.curve import aiq, apgr, cost_ratio_at_accuracy, cpt, pgr
from triage.eval.routers.probe_text import ProbeFeatureRouter
from triage.eval.routers.single import best_of
from triage.probes.features.base import Feature

from triage.replay import ReplayData

SOURCES = {  # name -> (importer, folder under data_dir, dataset)
    "gsm8k": ("routellm", "routellm", "gsm8k"),
    "routerbench": ("routerbench", "routerbench-subset", None),
    "simpleqa": ("pricing-reversal", "pricing-reversal", "simpleqa-test"),
    "mmlu": ("routellm", "routellm", "mmlu"),
}
REPLAY_FILES = {"gsm8k": "gsm8k.jsonl", "routerbench": "routerbench.jsonl", "simpleqa": "simpleqa-test.jsonl",
                "mmlu": "mmlu.jsonl"}


def load_dataset(name: str, max_rows: int | None, *, replay_dir: Path | None = None,
                 skip_first: int = 0) -> tuple[ReplayData, str]:
    """The complete rows of a data set; with ``max_rows``, the first rows of a seed-0 permutation
    (the order a partial LM-feature fill covers), kept in file order. ``skip_first``: leave out the
    first rows of that permutation (those a ``max_rows=skip_first`` block read) - a confirmation set
    for a finding made on them."""
    base = name.split("-")[0]
    if replay_dir is not None:
        from triage.replay import read_replay

        data = ReplayData.from_records(read_replay(replay_dir / REPLAY_FILES[base]), name=base)
    else:
        from triage.eval.importers import import_source

        from triage.settings import get_settings

        importer, folder, dataset = SOURCES[base]
        kw = {"dataset": dataset} if dataset else {}
        data = ReplayData.from_records(import_source(importer, get_settings().data_dir / folder, **kw), name=base)
    full = data.complete()
    note = f"all {full.n} complete rows"
    if skip_first or (max_rows and max_rows < full.n):
        order = np.random.default_rng(0).permutation(full.n)
        full = full.subset(np.sort(order[skip_first:skip_first + max_rows if max_rows else None]))
        note = f"{full.n} of {data.complete().n} complete rows (seed-0 random subsample"
        note += f" after its first {skip_first})" if skip_first else ")"
    return full, note


def fill_order(data: ReplayData) -> list[str]:
    """Texts in the order ``--fill`` computes them (a partial fill is a random subsample)."""
    return [data.texts[i] for i in np.random.default_rng(0).permutation(data.n)]


class SelfConfFeature(Feature):
    """The proxy's answer to "can you answer this correctly?" read from one prefill (not registered:
    measured in this bench only)."""

    name = "selfconf"
    version = "1"
    requires_torch = True
    ASK = "\n\nCan you answer this correctly? Answer Yes or No."

    def __init__(self, model: str = "smollm2-135m") -> None:
        self.model = model

    @property
    def dim(self) -> int:
        return 3

    def identity(self) -> dict[str, Any]:
        from triage.lm.models import engine_tag
        from triage.lm.specs import resolve_model

        return {**super().identity(), "model_sha256": resolve_model(self.model).sha256(), "engine": engine_tag()}

    def transform(self, texts: list[str]) -> np.ndarray:
        from triage.lm.models import get_local_lm

        lm = get_local_lm(self.model)
        yes, no = (lm.tokenizer.encode(w)[0] for w in ("Yes", "No"))
        out = np.empty((len(texts), 3), dtype=np.float32)
        for i, text in enumerate(texts):
            pre = lm.prefill([{"role": "user", "content": text + self.ASK}], keep_state=True)
            logits = np.asarray(pre.last_logits, dtype=np.float64).reshape(-1)
            lm.forget_prefills()
            logp = logits - logits.max()
            logp -= np.log(np.exp(logp).sum())
            out[i] = (logp[yes] - logp[no], np.logaddexp(logp[yes], logp[no]), pre.next_token_entropy)
        return out


def relative_block(data: ReplayData, fit_rows: np.ndarray, how: str) -> np.ndarray:
    """Lexical statistics z-scored within each query's group, group statistics from ``fit_rows``."""
    from triage.probes.features import FeatureCache, make_feature

    lexical = FeatureCache(make_feature("lexical")).transform(data.texts).astype(np.float64)
    if how == "task":
        groups = np.array([t or "" for t in data.tasks], dtype=object)
    elif how == "cluster":
        from sklearn.cluster import KMeans

        emb = FeatureCache(make_feature("text")).transform(data.texts)[:, :384]
        km = KMeans(n_clusters=8, n_init=4, random_state=0).fit(emb[fit_rows])
        groups = km.predict(emb).astype(object)
    else:
        raise ValueError(f"rel:{how}: use task or cluster")
    mu, sd = lexical[fit_rows].mean(axis=0), lexical[fit_rows].std(axis=0) + 1e-6
    out = (lexical - mu) / sd
    for g in np.unique(groups):
        fit = fit_rows[groups[fit_rows] == g]
        if len(fit) >= 10:  # a smaller group keeps the global statistics
            rows = groups == g
            out[rows] = (lexical[rows] - lexical[fit].mean(axis=0)) / (lexical[fit].std(axis=0) + 1e-6)
    return out.astype(np.float32)


class SignalRouter(ProbeFeatureRouter):
    """``probe-text`` on a feature spec, plus an optional extra block (``rel:task``, ``rel:cluster``,
    ``selfconf:<model>``), or ``blend:<spec>``: a second head on its own features, fitted on the same
    rows, the two heads' P(success) averaged. Why a blend: a few proxy scalars appended to the ~400
    text columns under one L2 penalty did no better than the text alone on rows where the scalars
    alone did (the ``gsm8k-proxy`` block); an equal-weight average has nothing to tune."""

    name = "probe-signals"

    def __init__(self, features: str = "text", extras: str = "", C: float | str = 0.02) -> None:
        super().__init__(C=C, features=features)
        self.extras = extras

    def fit(self, data: ReplayData, train: np.ndarray) -> SignalRouter:
        train = np.asarray(train, dtype=np.int64)
        self.fit_rows_ = train[~np.isnan(data.score[train]).any(axis=1)]
        kind, _, arg = self.extras.partition(":")
        self.blend_ = SignalRouter(features=arg, C=self.C).fit(data, train) if kind == "blend" else None
        return super().fit(data, train)  # type: ignore[return-value]

    def predict_success(self, data: ReplayData, rows: np.ndarray) -> np.ndarray:
        p = super().predict_success(data, rows)
        return p if self.blend_ is None else (p + self.blend_.predict_success(data, rows)) / 2.0

    def _matrix(self, data: ReplayData) -> np.ndarray:
        X = super()._matrix(data)
        kind, _, arg = self.extras.partition(":")
        if not self.extras or kind == "blend":
            return X
        if kind == "rel":
            block = relative_block(data, self.fit_rows_, arg)
        elif kind == "selfconf":
            from triage.probes.features import FeatureCache

            block = FeatureCache(SelfConfFeature(arg)).transform(data.texts)
        else:
            raise ValueError(f"unknown extra {self.extras!r}")
        return np.concatenate([X, block], axis=1)


def _r(x: float | None, k: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), k)


def evaluate_sweeps(data: ReplayData, routers: dict[str, ProbeFeatureRouter], *, headline: str, reference: str,
                    n_boot: int, seed: int, folds: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Cross-fitted curves of every router (``replay evaluate``'s protocol and metrics) and, for the
    headline metric, a bootstrap interval per router and the paired difference to ``reference``
    (also for AIQ when the headline is the cost ratio, which a curve may never reach)."""
    proto = make_protocol(data, folds=folds, seed=seed)
    rows = proto.eval_rows
    table = OutcomeTable.build(data, cost_axis(data), rows)
    boot = Bootstrap(len(rows), n_boot=n_boot, seed=seed)
    score, cost = table.mats["score"], table.mats["cost"]
    acc, cst = score.mean(axis=1), cost.mean(axis=1)
    acc_b, cst_b = boot.replicate_means(score), boot.replicate_means(cost)
    best = best_of(acc, cst)
    pair = tuple(int(j) for j in np.lexsort((-cst, acc))) if data.m == 2 else None
    configs: dict[str, Any] = {}
    reps: dict[str, np.ndarray] = {}
    metrics = [headline] + (["aiq"] if headline == "cost_ratio_at_best_accuracy" else [])
    for key, router in routers.items():
        out = RoutedOutcomes.of(table, run_router(router, data, proto))
        acc_k, cost_k = out.means["score"], out.means["cost"]
        acc_kb, cost_kb = boot.replicate_means(out.curve["score"]), boot.replicate_means(out.curve["cost"])
        row: dict[str, Any] = {"spec": f"{router.feature_spec}" + (f" + {router.extras}" if router.extras else "")}
        if pair is not None:
            weak, strong = pair
            share_k = out.call_share[:, strong]
            pgr_k = pgr(acc_k, acc[weak], acc[strong])
            row["apgr"] = _r(apgr(share_k, pgr_k))
            c50 = cpt(share_k, pgr_k, 0.5)
            row["cpt50"] = None if c50 is None else round(100.0 * c50, 1)
            share_kb = boot.replicate_means(out.indicator(strong))
            rep_apgr = np.asarray(apgr(share_kb, pgr(acc_kb, acc_b[:, [weak]], acc_b[:, [strong]])))
        row["aiq"] = _r(aiq(cost_k, acc_k, float(cst.min()), float(cst.max())))
        row["cost_ratio_at_best_accuracy"] = _r(cost_ratio_at_accuracy(cost_k, acc_k, float(acc[best]), float(cst[best])))
        for metric in metrics:
            if metric == "apgr":
                rep = rep_apgr
            elif metric == "aiq":
                lo, hi = cst_b.min(axis=1), cst_b.max(axis=1)
                rep = np.array([np.nan if (v := aiq(cost_kb[b], acc_kb[b], lo[b], hi[b])) is None else v
                                for b in range(boot.n_boot)])
            else:  # a replicate whose curve never reaches the best single accuracy counts as NaN
                rep = np.array([np.nan if (v := cost_ratio_at_accuracy(cost_kb[b], acc_kb[b], acc_b[b, best],
                                                                       cst_b[b, best])) is None else v
                                for b in range(boot.n_boot)])
            row[f"{metric}_ci"] = [_r(v) for v in percentile_interval(rep) or [None, None]]
            reps[f"{key}/{metric}"] = rep
        configs[key] = row
        if progress is not None:
            progress(key)
    if reference in configs:
        for key, row in configs.items():
            for metric in metrics if key != reference else ():
                d = reps[f"{key}/{metric}"] - reps[f"{reference}/{metric}"]
                row[f"delta_{metric}_vs_{reference}_ci"] = [_r(v) for v in percentile_interval(d) or [None, None]]
    return {"protocol": proto.describe(), "best_single": data.candidates[best],
            "best_single_accuracy": _r(float(acc[best])), "configs": configs}
