"""Completion-token caps replayed on logged answers, and "tokens saved at equal accuracy".

**Truncation rule** (the rule of ``--budget CANDIDATE=TOKENS`` / :meth:`ReplayData.apply_budget`):
a logged answer whose completion tokens (hidden reasoning included) exceed its cap counts as
truncated and wrong: it scores 0 and uses the cap's tokens (its cost is scaled down to the tokens
kept). An answer within its cap is unchanged. We cannot know what a model would have written
under a tighter limit, so this is the pessimistic reading: no partial answer is ever correct.

**Tokens saved at equal accuracy vs the best uniform cap.** For one model on the evaluated rows,
let ``s_i`` be query i's logged score and ``t_i`` its logged completion tokens. A uniform cap ``c``
gives ``A_u(c) = mean_i s_i [t_i <= c]`` and ``T_u(c) = mean_i min(t_i, c)``. An operating point of a
per-query cap policy reaches accuracy ``A`` at mean completion tokens ``T`` (after the truncation
rule). The best uniform cap at equal accuracy is ``c*(A) = min {c : A_u(c) >= A}``: the smallest
single cap at least as accurate, which is also the cheapest one (``T_u`` grows with ``c``). Then::

    saved(A, T) = 1 - T / T_u(c*(A))

``c*`` ranges over every integer cap, not a grid: ``A_u`` only steps at the logged lengths of scored
answers, so the minimum is one of those lengths. The uniform curve is evaluated on the very rows
(and outcomes) it is compared on, so it is the best any single cap could have done there: a
conservative baseline for a router whose caps were chosen on other rows. Prompt tokens are left out
(a cap cannot change them). Intervals: paired bootstrap over queries (the same resampled queries for
the router and the uniform curve, ``c*`` re-solved in every replicate), percentile 95%.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from triage.eval.metrics.bootstrap import Bootstrap, percentile_interval

__all__ = ["TRUNCATION_RULE", "apply_caps", "cheapest_uniform", "row_weights", "tokens_saved", "uniform_curve"]

#: One line for every place a capped figure is printed.
TRUNCATION_RULE = ("truncation rule: a logged answer longer than its completion-token cap counts as "
                   "truncated and wrong (score 0) and uses the cap's tokens")


def apply_caps(fields: dict[str, np.ndarray], caps: np.ndarray, *, cost_unit: str = "usd",
               output_input_price_ratio: float = 3.0) -> dict[str, np.ndarray]:
    """The truncation rule on arrays that broadcast against ``caps`` (NaN or inf cap: no cap).

    ``fields`` holds ``score, cost, prompt_tokens, completion_tokens`` and optionally
    ``reasoning_tokens, truncated`` (unknown token counts as 0). ``cost_unit`` says what ``cost``
    is: ``usd`` (scaled by the completion share kept, as :meth:`ReplayData.apply_budget`),
    ``tokens`` (prompt + kept completion) or ``calls`` (unchanged). Returns new arrays, ``tokens``
    (prompt + completion) included.
    """
    from triage.replay.matrix import _completion_cost_share  # the same cost split as --budget

    caps = np.where(np.isnan(caps), np.inf, np.asarray(caps, dtype=float))
    ct = np.asarray(fields["completion_tokens"], dtype=float)
    pt = np.asarray(fields["prompt_tokens"], dtype=float)
    over = ct > caps
    capped_ct = np.where(over, caps, ct)
    out = {k: np.asarray(v, dtype=float) for k, v in fields.items()}
    out["score"] = np.where(over, 0.0, fields["score"])
    out["completion_tokens"] = capped_ct
    if "reasoning_tokens" in fields:
        out["reasoning_tokens"] = np.where(over, np.minimum(fields["reasoning_tokens"], caps), fields["reasoning_tokens"])
    if "truncated" in fields:
        out["truncated"] = np.where(over, 1.0, fields["truncated"])
    cost = np.asarray(fields["cost"], dtype=float)
    if cost_unit == "usd":
        kept = np.where(over, caps / np.where(ct > 0, ct, 1.0), 1.0)
        share = _completion_cost_share(pt, ct, output_input_price_ratio)
        out["cost"] = np.where(over, cost * (share * kept + (1.0 - share)), cost)
    elif cost_unit == "tokens":
        out["cost"] = np.where(over, pt + capped_ct, cost)
    else:
        out["cost"] = np.broadcast_to(cost, over.shape).copy()
    out["tokens"] = pt + capped_ct
    return out


def row_weights(boot: Bootstrap) -> np.ndarray:
    """(B, n) resampling weight of every query in every replicate (blocks spread to their rows)."""
    labels = getattr(boot, "_labels", None)  # block bootstrap: a query weighs what its block does
    return boot.weights if labels is None else boot.weights[:, labels]


def _sorted(score: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(tokens, kind="stable")
    t = tokens[order]
    ends = np.flatnonzero(np.r_[t[1:] != t[:-1], True])  # last position of every distinct length
    return order, t, ends


def cheapest_uniform(score: np.ndarray, tokens: np.ndarray, target: np.ndarray | float,
                     weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``c*(target)``, ``T_u(c*)`` and ``A_u(c*)`` (see the module docstring), one per weight row.

    ``weights`` (B, n) are bootstrap weights (None: every query once); ``target`` is a scalar or
    (B,). NaN where no cap reaches the target or the target is not positive.
    """
    score = np.nan_to_num(np.asarray(score, dtype=float))
    tokens = np.nan_to_num(np.asarray(tokens, dtype=float))
    w = np.ones((1, score.shape[0])) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    target = np.broadcast_to(np.asarray(target, dtype=float), (w.shape[0],))
    order, t, ends = _sorted(score, tokens)
    ws = w[:, order]
    n_b = ws.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.cumsum(ws * score[order], axis=1)[:, ends] / n_b[:, None]  # A_u at each distinct length
    # A_u is non-decreasing in c (scores are >= 0); the first length reaching the target is c*.
    reach = acc >= target[:, None] - 1e-9
    ok = reach.any(axis=1) & (target > 0)
    first = np.where(ok, reach.argmax(axis=1), 0)
    pos = ends[first]
    cap = t[pos]
    below_w = np.cumsum(ws, axis=1)[np.arange(len(pos)), pos]
    below_wt = np.cumsum(ws * t, axis=1)[np.arange(len(pos)), pos]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_tokens = (below_wt + cap * (n_b - below_w)) / n_b
    return {"cap": np.where(ok, cap, np.nan), "mean_tokens": np.where(ok, mean_tokens, np.nan),
            "accuracy": np.where(ok, acc[np.arange(len(first)), first], np.nan)}


def uniform_curve(score: np.ndarray, tokens: np.ndarray, max_points: int = 120) -> list[dict[str, float]]:
    """The uniform-cap curve: (cap, accuracy, mean completion tokens) at the distinct logged lengths
    of scored answers (every step of ``A_u``), thinned to at most ``max_points`` for display."""
    score = np.nan_to_num(np.asarray(score, dtype=float))
    tokens = np.nan_to_num(np.asarray(tokens, dtype=float))
    caps = np.unique(tokens[score > 0])
    if caps.size > max_points:
        caps = caps[np.unique(np.linspace(0, caps.size - 1, max_points).round().astype(int))]
    acc = ((tokens[None, :] <= caps[:, None]) * score[None, :]).mean(axis=1)
    mean_tok = np.minimum(tokens[None, :], caps[:, None]).mean(axis=1)
    return [{"cap": float(c), "accuracy": float(a), "mean_completion_tokens": float(m)}
            for c, a, m in zip(caps, acc, mean_tok)]


def tokens_saved(router_score: np.ndarray, router_tokens: np.ndarray, score: np.ndarray, tokens: np.ndarray,
                 boot: Bootstrap | None = None, level: float = 0.95) -> dict[str, Any]:
    """Tokens saved at equal accuracy by one operating point against the best uniform cap.

    ``router_score``/``router_tokens``: per-query score and completion tokens of the operating point
    (truncation rule applied); ``score``/``tokens``: the model's uncapped logged ones on the same
    queries. ``boot`` adds paired percentile intervals.
    """
    rs, rt = np.asarray(router_score, dtype=float), np.asarray(router_tokens, dtype=float)
    acc, mean_tok = float(rs.mean()), float(rt.mean())
    u = cheapest_uniform(score, tokens, acc)
    t_u = float(u["mean_tokens"][0])
    saved = 1.0 - mean_tok / t_u if np.isfinite(t_u) and t_u > 0 else None
    out: dict[str, Any] = {
        "tokens_saved": saved, "tokens_saved_ci": None,
        "accuracy": acc, "mean_completion_tokens": mean_tok,
        "uniform_cap": None if not np.isfinite(u["cap"][0]) else float(u["cap"][0]),
        "uniform_accuracy": None if not np.isfinite(u["accuracy"][0]) else float(u["accuracy"][0]),
        "uniform_mean_completion_tokens": t_u if np.isfinite(t_u) else None,
    }
    if boot is not None and boot.n_boot > 0:
        w = row_weights(boot)
        n_b = w.sum(axis=1)
        acc_b, tok_b = (w @ rs) / n_b, (w @ rt) / n_b
        tu_b = cheapest_uniform(score, tokens, acc_b, w)["mean_tokens"]
        with np.errstate(divide="ignore", invalid="ignore"):
            saved_b = np.where(tu_b > 0, 1.0 - tok_b / tu_b, np.nan)
        out["tokens_saved_ci"] = percentile_interval(saved_b, level)
    return out
