"""Replay evaluation: run every router on the same queries and measure what it would have cost.

:func:`evaluate` takes a :class:`ReplayData` and router specs, cross-fits the learned ones
(see :mod:`triage.eval.evaluation.protocol`), and reports per router, at its default operating point:
accuracy, cost, tokens, accuracy per 1k tokens, cost-of-pass and TEP with paired bootstrap 95%
intervals, plus its cost-quality curve and the curve metrics (APGR/CPT for two candidates,
AIQ and cost_ratio_at_best_accuracy for any number).

All costs are in one unit per dataset (``cost_unit``): USD where every outcome has a cost,
else tokens (prompt + completion), else calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from triage.eval.evaluation.outcomes import OutcomeTable, RoutedOutcomes
from triage.eval.evaluation.protocol import Protocol, make_protocol, run_router
from triage.eval.evaluation.result import EvaluationResult, RouterKind, RouterResult
from triage.eval.metrics.bootstrap import Bootstrap, percentile_interval
from triage.eval.metrics.cost import cost_axis
from triage.eval.metrics.curve import aiq, apgr, cost_ratio_at_accuracy, cpt, pgr
from triage.replay.summary import summarize_outcomes, tep, tep_array
from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, make_router
from triage.eval.routers.oracle import OracleRouter
from triage.eval.routers.random import RandomRouter
from triage.eval.routers.single import SingleRouter, best_of

__all__ = ["evaluate", "apply_budgets", "parse_budget"]

RESERVED = {"best-single", "random", "random-uniform", "oracle"}


def parse_budget(text: str) -> tuple[str, int]:
    """``CANDIDATE=TOKENS`` -> (candidate, tokens). The last ``=`` splits (names may hold one)."""
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise ValueError(f"--budget {text!r} is not CANDIDATE=TOKENS")
    try:
        tokens = int(value)
    except ValueError:
        raise ValueError(f"--budget {text!r}: token cap {value!r} is not an integer") from None
    if tokens <= 0:
        raise ValueError(f"--budget {text!r}: token cap must be positive")
    return name, tokens


def apply_budgets(data: ReplayData, budgets: Sequence[tuple[str, int]]) -> ReplayData:
    """Replay completion-token caps (see :meth:`ReplayData.apply_budget`)."""
    for name, tokens in budgets:
        j = data.candidate_index(name)
        if np.isnan(data.completion_tokens[:, j]).all():
            raise ValueError(f"--budget {name}={tokens}: {name!r} has no completion token counts to cap")
        data = data.apply_budget(name, tokens)
    return data


@dataclass
class _Entry:
    key: str
    spec: str
    kind: RouterKind
    router: ReplayRouter


@dataclass
class _Context:
    """What every router's metrics are measured against (all on the evaluated rows)."""

    candidates: list[str]
    boot: Bootstrap
    cost_unit: str
    tokens_known: bool
    cand_acc: np.ndarray  # (m,)
    cand_cost: np.ndarray  # (m,)
    cand_acc_b: np.ndarray  # (B, m) replicate accuracies
    cand_cost_b: np.ndarray  # (B, m)
    best: int
    base: int
    base_tokens: float
    base_tokens_b: np.ndarray  # (B,)
    pair: tuple[int, int] | None  # (weak, strong)


def _ci(replicates: np.ndarray | None, enabled: bool) -> list[float | None] | None:
    return percentile_interval(replicates) if enabled and replicates is not None else None


def _router_result(entry: _Entry, out: RoutedOutcomes, ctx: _Context) -> RouterResult:
    boot, sweep = ctx.boot, out.sweep
    n = out.point["score"].shape[0]
    p = out.point
    head = summarize_outcomes(p["score"], p["cost"], p["prompt_tokens"], p["completion_tokens"],
                              p["reasoning_tokens"], p["truncated"])
    has_ci = boot.n_boot > 0
    metrics: dict = {"n": n}
    # --- headline point with paired bootstrap intervals -------------------------------------
    stack = np.vstack([p["score"], p["cost"], p["tokens"]])
    s_b, c_b, t_b = (boot.replicate_sums(stack).T if has_ci else np.zeros((3, 0)))
    n_b = boot.replicate_n
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_b = s_b / n_b
        mean_cost_b = c_b / n_b
        mean_tok_b = t_b / n_b
        cop_b = np.where(s_b > 0, c_b / np.where(s_b > 0, s_b, 1.0), np.inf)
        per1k_b = acc_b / (mean_tok_b / 1000.0)
    mean_tokens = float(p["tokens"].mean()) if n else None
    metrics.update({
        "accuracy": head["accuracy"], "accuracy_ci": _ci(acc_b, has_ci),
        "total_cost": head["total_cost"], "total_cost_ci": _ci(mean_cost_b * n, has_ci),
        "mean_cost": head["mean_cost"], "mean_cost_ci": _ci(mean_cost_b, has_ci),
        "tokens": head["tokens"], "mean_tokens_ci": _ci(mean_tok_b, has_ci and ctx.tokens_known),
        "accuracy_per_1k_tokens": head["accuracy_per_1k_tokens"] if ctx.tokens_known else None,
        "accuracy_per_1k_tokens_ci": _ci(per1k_b, has_ci and ctx.tokens_known),
        "cost_of_pass": head["cost_of_pass"], "cost_of_pass_ci": _ci(cop_b, has_ci),
    })
    base_acc = float(ctx.cand_acc[ctx.base])
    if ctx.tokens_known:
        metrics["tep"] = tep(head["accuracy"], mean_tokens, base_acc, ctx.base_tokens)
        metrics["tep_ci"] = _ci(tep_array(acc_b, mean_tok_b, ctx.cand_acc_b[:, ctx.base], ctx.base_tokens_b),
                                has_ci and metrics["tep"] is not None)
    else:
        metrics["tep"] = metrics["tep_ci"] = None
    metrics["truncation_rate"] = head["truncation_rate"]
    metrics["knob"] = float(sweep.knobs[sweep.default])
    metrics["knob_name"] = sweep.knob_name
    metrics["call_share"] = dict(zip(ctx.candidates, out.call_share[sweep.default].tolist()))
    if isinstance(entry.router, SingleRouter):
        metrics["candidate"] = ctx.candidates[int(sweep.choices[0, 0])] if n else None

    # --- the curve ---------------------------------------------------------------------------
    acc_k, cost_k, tok_k = out.means["score"], out.means["cost"], out.means["tokens"]
    curve = []
    for k in range(sweep.n_points):
        pt = {"knob": float(sweep.knobs[k]), "accuracy": float(acc_k[k]), "cost": float(cost_k[k]),
              "mean_tokens": float(tok_k[k]) if ctx.tokens_known else None,
              "call_share": dict(zip(ctx.candidates, out.call_share[k].tolist()))}
        curve.append(pt)
    sweeping = sweep.n_points >= 2
    if has_ci and sweeping:
        acc_kb = boot.replicate_means(out.curve["score"])  # (B, K)
        cost_kb = boot.replicate_means(out.curve["cost"])
    else:
        acc_kb = acc_b[:, None] if has_ci else None
        cost_kb = mean_cost_b[:, None] if has_ci else None

    # --- RouteLLM metrics (two candidates, sweeping routers) ---------------------------------
    if ctx.pair is not None:
        weak, strong = ctx.pair
        share_k = out.call_share[:, strong]
        pgr_k = pgr(acc_k, ctx.cand_acc[weak], ctx.cand_acc[strong])
        for k, pt in enumerate(curve):
            pt["strong_pct"] = float(100.0 * share_k[k])
            pt["pgr"] = float(pgr_k[k]) if np.isfinite(pgr_k[k]) else None
        if sweeping and np.isfinite(pgr_k).all():
            metrics["apgr"] = apgr(share_k, pgr_k)
            c50, c80 = cpt(share_k, pgr_k, 0.5), cpt(share_k, pgr_k, 0.8)
            metrics["cpt50"] = None if c50 is None else 100.0 * c50
            metrics["cpt80"] = None if c80 is None else 100.0 * c80
            if has_ci:
                share_kb = boot.replicate_means(out.indicator(strong))
                pgr_kb = pgr(acc_kb, ctx.cand_acc_b[:, [weak]], ctx.cand_acc_b[:, [strong]])
                metrics["apgr_ci"] = _ci(np.asarray(apgr(share_kb, pgr_kb)), True)
            else:
                metrics["apgr_ci"] = None
        else:
            metrics.update({"apgr": None, "apgr_ci": None, "cpt50": None, "cpt80": None})

    # --- RouterBench metrics (any number of candidates) --------------------------------------
    cmin, cmax = float(ctx.cand_cost.min()), float(ctx.cand_cost.max())
    metrics["aiq"] = aiq(cost_k, acc_k, cmin, cmax)
    if has_ci and metrics["aiq"] is not None:
        lo_b, hi_b = ctx.cand_cost_b.min(axis=1), ctx.cand_cost_b.max(axis=1)
        if acc_kb.shape[1] == 1:  # one point: quality * (1 - normalised cost), vectorised
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.clip((cost_kb[:, 0] - lo_b) / (hi_b - lo_b), 0.0, 1.0)
            aiq_b = np.where(hi_b > lo_b, acc_kb[:, 0] * (1.0 - c), np.nan)
        else:
            aiq_b = np.array([np.nan if v is None else v for v in
                              (aiq(cost_kb[b], acc_kb[b], lo_b[b], hi_b[b]) for b in range(boot.n_boot))])
        metrics["aiq_ci"] = _ci(aiq_b, True)
        replicates = {"aiq": np.asarray(aiq_b, dtype=float)}
    else:
        metrics["aiq_ci"] = None
        replicates = {}
    metrics["cost_ratio_at_best_accuracy"] = cost_ratio_at_accuracy(
        cost_k, acc_k, float(ctx.cand_acc[ctx.best]), float(ctx.cand_cost[ctx.best]))
    return RouterResult(name=entry.key, spec=entry.spec, kind=entry.kind,
                        learned=bool(entry.router.learned), metrics=metrics, curve=curve, replicates=replicates)


def _entries(data: ReplayData, routers: Sequence[str | ReplayRouter]) -> list[_Entry]:
    entries: list[_Entry] = []
    for c in data.candidates:
        key = f"single:{c}" if c in RESERVED else c
        entries.append(_Entry(key, f"single:candidate={c}", "candidate", SingleRouter(candidate=c)))
    entries.append(_Entry("best-single", "single:candidate=best", "baseline", SingleRouter(candidate="best")))
    if data.m >= 2:
        entries.append(_Entry("random", "random:mode=mix", "baseline", RandomRouter(mode="mix")))
    if data.m >= 3:
        entries.append(_Entry("random-uniform", "random:mode=uniform", "baseline", RandomRouter(mode="uniform")))
    entries.append(_Entry("oracle", "oracle", "baseline", OracleRouter()))
    taken = {e.key for e in entries}
    for r in routers:
        if isinstance(r, str):
            router, spec = make_router(r), r
        else:
            router, spec = r, r.name
        key = spec
        if key in taken:
            if isinstance(r, str) and key in RESERVED:
                continue  # asking for a baseline that is always there
            i = 2
            while f"{spec}#{i}" in taken:
                i += 1
            key = f"{spec}#{i}"
        taken.add(key)
        entries.append(_Entry(key, spec, "router", router))
    return entries


def evaluate(
    data: ReplayData,
    routers: Sequence[str | ReplayRouter] = (),
    *,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    baseline: str | None = None,
    protocol: str = "auto",
    max_units: int = 5000,
    budgets: dict[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate the baselines and ``routers`` (specs like ``threshold:score=digits`` or instances).

    Queries missing any candidate's outcome are dropped (routers need a full row); the count is
    reported. ``baseline`` names the candidate TEP is measured against (default: the best one).
    """
    n_total = data.n
    full = data.complete() if np.isnan(data.score).any() else data
    dropped = n_total - full.n
    if full.n == 0:
        raise ValueError(f"{data.name}: no query has an outcome for every candidate "
                         f"({', '.join(data.candidates)}); pick some with --candidates")
    proto: Protocol = make_protocol(full, folds=folds, seed=seed, kind=protocol)  # type: ignore[arg-type]
    boot = Bootstrap(len(proto.eval_rows), n_boot=n_boot, seed=seed, max_units=max_units)
    rows = proto.eval_rows
    axis = cost_axis(full)
    table = OutcomeTable.build(full, axis, rows)
    has_ci = boot.n_boot > 0

    score, cost = table.mats["score"], table.mats["cost"]  # (m, n)
    cand_acc, cand_cost = score.mean(axis=1), cost.mean(axis=1)
    tokens_known = bool(table.n) and not np.isnan(full.completion_tokens).all()
    best = best_of(cand_acc, cand_cost)
    if baseline is None:
        base = best
    else:
        base = full.candidate_index(baseline)
    pair = None
    if full.m == 2:
        weak, strong = (int(j) for j in np.lexsort((-cand_cost, cand_acc)))  # less accurate first
        pair = (weak, strong)
    ctx = _Context(
        candidates=list(full.candidates), boot=boot, cost_unit=axis.unit, tokens_known=tokens_known,
        cand_acc=cand_acc, cand_cost=cand_cost,
        cand_acc_b=boot.replicate_means(score) if has_ci else np.zeros((0, full.m)),
        cand_cost_b=boot.replicate_means(cost) if has_ci else np.zeros((0, full.m)),
        best=best, base=base, base_tokens=float(table.mats["tokens"][base].mean()),
        base_tokens_b=(boot.replicate_means(table.mats["tokens"][base][None])[:, 0]
                       if has_ci else np.zeros(0)),
        pair=pair,
    )

    results: dict[str, RouterResult] = {}
    router_notes: dict[str, None] = {}
    for entry in _entries(full, routers):
        sweep = run_router(entry.router, full, proto)
        out = RoutedOutcomes.of(table, sweep)
        results[entry.key] = _router_result(entry, out, ctx)
        extra = entry.router.extra_metrics(full, rows, sweep, boot)  # e.g. tier-budget's budget block
        if extra:
            router_notes.update(dict.fromkeys(extra.pop("notes", [])))
            results[entry.key].metrics.update(extra)
        if progress is not None:
            progress(entry.key)

    notes = []
    if dropped:
        notes.append(f"{dropped} of {n_total} queries dropped: not every candidate has an outcome")
    if proto.n_unsplit_ignored:
        notes.append(f"{proto.n_unsplit_ignored} queries without a train/test split ignored")
    if not tokens_known:
        notes.append("no token counts: tokens, accuracy per 1k tokens and TEP are not available")
    if axis.unit == "calls":
        notes.append("no costs or token counts: cost is counted in calls (every candidate costs 1)")
    notes.extend(router_notes)
    return EvaluationResult(
        dataset=data.name, n=len(rows), n_total=n_total, n_dropped_incomplete=dropped,
        cost_unit=axis.unit, candidates=list(full.candidates), protocol=proto.describe(),
        tep_baseline=full.candidates[base],
        pair=None if pair is None else {"weak": full.candidates[pair[0]], "strong": full.candidates[pair[1]]},
        bootstrap={"n_boot": boot.n_boot, "level": 0.95, "units": boot.n_units, "seed": seed},
        routers=results, budgets=dict(budgets or {}), notes=notes,
    )
