"""Outcome summaries shared by the ledger report and replay evaluation.

Both sides call :func:`summarize_outcomes` on plain 1-D arrays, so the same records give the
same numbers whichever tool reports them. Conventions:

* ``score`` NaN means "outcome not known yet": the row counts for cost and tokens (the call
  was made and billed) but not for accuracy; ``n_scored`` says how many rows accuracy uses.
* ``cost`` NaN means "price unknown": costs are summed over known rows, ``n_costed`` says how
  many; when no row has a cost the cost fields are ``None``.
* token NaN counts as 0 (the provider did not report it). ``completion_tokens`` already
  includes hidden reasoning tokens, so total = prompt + completion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["cost_of_pass", "summarize_outcomes", "tep", "tep_array"]


def _arr(x: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"array of length {a.shape[0]} where {n} rows were expected")
    return a


def zero_nan(a: np.ndarray) -> np.ndarray:
    """NaN -> 0, copying only when there is a NaN (np.nan_to_num always copies, and is slow)."""
    return np.where(np.isnan(a), 0.0, a) if np.isnan(a).any() else a


def cost_of_pass(total_cost: float | None, expected_correct: float) -> float | None:
    """Expected cost of one correct answer: cost / expected number of correct answers.

    ``inf`` when nothing is correct (no amount of money buys a pass at this rate);
    ``None`` when the cost is unknown.
    """
    if total_cost is None or (isinstance(total_cost, float) and math.isnan(total_cost)):
        return None
    if expected_correct <= 0:
        return math.inf
    return float(total_cost) / float(expected_correct)


def tep(acc: float | None, tokens: float | None, base_acc: float | None,
        base_tokens: float | None) -> float | None:
    """Token Elasticity of Performance (EllieSQL): relative accuracy change over relative token change.

    ``((acc - base_acc) / base_acc) / ((tokens - base_tokens) / base_tokens)``. A value of 0.5
    means every 1% more tokens bought 0.5% more accuracy. ``None`` when it is undefined: a
    missing input, a zero baseline, or the same token use as the baseline.
    """
    vals = (acc, tokens, base_acc, base_tokens)
    if any(v is None or not math.isfinite(v) for v in vals):
        return None
    if base_acc == 0 or base_tokens == 0:
        return None
    d_tok = (tokens - base_tokens) / base_tokens
    if d_tok == 0:
        return None
    return float(((acc - base_acc) / base_acc) / d_tok)


def summarize_outcomes(
    score: Any,
    cost: Any,
    prompt_tokens: Any,
    completion_tokens: Any,
    reasoning_tokens: Any,
    truncated: Any,
    *,
    escalated: Any | None = None,
) -> dict[str, Any]:
    """Accuracy, cost and token figures over one set of calls (1-D arrays, one entry per call).

    Returns ``n, n_scored, n_unscored, accuracy, expected_correct, n_costed, total_cost,
    mean_cost, tokens{prompt, completion, reasoning, total, mean_total}, accuracy_per_1k_tokens,
    cost_of_pass, truncation_rate, escalation_rate``. ``accuracy`` is the mean score of scored rows;
    ``cost_of_pass`` is cost of the scored rows / expected correct answers, so unscored calls do
    not inflate it; ``accuracy_per_1k_tokens`` is accuracy / (mean total tokens per scored call / 1000).
    """
    s = _arr(score)
    n = s.shape[0]
    c = _arr(cost, n)
    pt = zero_nan(_arr(prompt_tokens, n))
    ct = zero_nan(_arr(completion_tokens, n))
    rt = zero_nan(_arr(reasoning_tokens, n))
    # Booleans, or per-query probabilities of truncation for a randomised router.
    tr = zero_nan(_arr(truncated, n))

    scored = ~np.isnan(s)
    n_scored = int(scored.sum())
    expected_correct = float(s[scored].sum())
    accuracy = expected_correct / n_scored if n_scored else None

    costed = ~np.isnan(c)
    n_costed = int(costed.sum())
    total_cost = float(c[costed].sum()) if n_costed else None
    mean_cost = total_cost / n_costed if n_costed else None
    scored_costed = scored & costed
    # Cost-of-pass over the calls whose outcome and price are both known.
    cop = (cost_of_pass(float(c[scored_costed].sum()), float(s[scored_costed].sum()))
           if scored_costed.any() else None)

    tot = pt + ct
    tokens = {
        "prompt": float(pt.sum()),
        "completion": float(ct.sum()),
        "reasoning": float(rt.sum()),
        "total": float(tot.sum()),
        "mean_total": float(tot.mean()) if n else None,
    }
    mean_tok_scored = float(tot[scored].mean()) if n_scored else None
    acc_per_1k = (accuracy / (mean_tok_scored / 1000.0)
                  if accuracy is not None and mean_tok_scored else None)

    if escalated is None:
        escalation_rate = None
    else:
        e = zero_nan(_arr(escalated, n))
        escalation_rate = float(e.mean()) if n else None

    return {
        "n": n,
        "n_scored": n_scored,
        "n_unscored": n - n_scored,
        "accuracy": accuracy,
        "expected_correct": expected_correct,
        "n_costed": n_costed,
        "total_cost": total_cost,
        "mean_cost": mean_cost,
        "tokens": tokens,
        "accuracy_per_1k_tokens": acc_per_1k,
        "cost_of_pass": cop,
        "truncation_rate": float(tr.mean()) if n else None,
        "escalation_rate": escalation_rate,
    }


def tep_array(acc: Any, tokens: Any, base_acc: Any, base_tokens: Any) -> np.ndarray:
    """:func:`tep` over arrays (bootstrap replicates); NaN where it is undefined."""
    acc, tokens, base_acc, base_tokens = (np.asarray(x, dtype=float) for x in (acc, tokens, base_acc, base_tokens))
    with np.errstate(divide="ignore", invalid="ignore"):
        d_acc = (acc - base_acc) / base_acc
        d_tok = (tokens - base_tokens) / base_tokens
        out = d_acc / d_tok
    bad = (base_acc == 0) | (base_tokens == 0) | (d_tok == 0) | ~np.isfinite(out)
    return np.where(bad, np.nan, out)
