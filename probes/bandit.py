"""Logged bandit data: one observed outcome per query, with the propensity of the logged choice.

A ledger export (``triage ledger export``) holds, per routed query, the outcome of the one strategy
that answered plus a ``logged`` block (``strategy``, ``candidate`` = the probe success label,
``propensity`` = the probability the policy, with its exploration, had of choosing it). This module
turns such records into training rows:

* **success** of the observed label: ``score >= threshold`` and within the label's completion-token
  budget (the rule of :mod:`triage.probes.labels`, applied to the one outcome there is);
* **weight** of a row for its label: ``1 / propensity`` (inverse propensity; under a policy's
  ``shadow:`` block ``1 / observed_propensity``, the probability that the label was observed for
  the query as first call or shadow, and a shadow row is a row of its own), clipped at
  ``max_weight`` so that a handful of rare explorations cannot dominate a fit (clipping trades a
  little bias for much less variance); the number of clipped rows and the effective sample size
  ``(sum w)^2 / sum w^2`` per label are reported and recorded in the probe card;
* **cost order** of the labels: IPS-weighted mean logged cost (or tokens), cheapest first.

Weighting matters because the logging policy chose *which* queries each strategy saw: without it a
per-label model learns the success rate on the queries that label was sent to, not on all queries.
Records without a propensity are refused unless the caller states one (``assume_propensity``):
uniform weights are only unbiased when the logging policy chose uniformly at random.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from triage.probes.labels import LabelRule

from triage.replay.schema import ReplayRecord

#: Default clip of the inverse-propensity weights (propensities below 1/20 count as 1/20).
DEFAULT_MAX_WEIGHT = 20.0
#: Default minimum of logged outcomes per label to fit its success model.
DEFAULT_MIN_ROWS = 30


class LoggedDataError(ValueError):
    """Logged data that cannot be trained on as given (one line, said to the user as is)."""


def logged_block(record: ReplayRecord) -> dict[str, Any] | None:
    extra = record.model_extra or {}
    block = extra.get("logged")
    return block if isinstance(block, dict) else None


def is_shadow(record: ReplayRecord) -> bool:
    """A shadow call's row (triage.router.core.shadow): an extra observed outcome of a query, not a
    decision of the logging policy."""
    return bool((logged_block(record) or {}).get("shadow"))


def query_id(record: ReplayRecord) -> str:
    """The query a logged row observes: its own id, or for a shadow call's row the id of the row it
    shadows."""
    shadow_of = (logged_block(record) or {}).get("shadow_of")
    return shadow_of if is_shadow(record) and isinstance(shadow_of, str) and shadow_of else record.id


def is_logged(records: Sequence[ReplayRecord]) -> bool:
    """Logged bandit data: records carry a ``logged`` block, or every record has exactly one outcome
    (a ledger export of an older version) - full-information data has several per query."""
    if not records:
        return False
    if any(logged_block(r) is not None for r in records):
        return True
    return all(len(r.outcomes) == 1 for r in records) and len({c for r in records for c in r.outcomes}) > 1


@dataclass
class LoggedLabels:
    """One row per logged query: its observed label, success, propensity and clipped IPS weight."""

    candidates: list[str]  # label names, cheapest first
    label: np.ndarray  # (n,) int index into candidates of the observed label
    success: np.ndarray  # (n,) int8
    propensity: np.ndarray  # (n,) float in (0, 1]
    weight: np.ndarray  # (n,) float, min(1/propensity, max_weight)
    ids: list[str]
    texts: list[str]
    splits: list[str | None]
    mean_cost: list[float]  # per label (IPS-weighted over its rows), NaN if unknown
    rule: LabelRule
    max_weight: float
    assumed_propensity: float | None = None
    notes: list[str] = field(default_factory=list)
    #: (n,) the query each row observes (:func:`query_id`): a shadow row shares its primary's, so
    #: cross-fitting keeps the two in one fold. None: every row is its own query.
    queries: list[str] | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def m(self) -> int:
        return len(self.candidates)

    def observed(self) -> np.ndarray:
        """(n, m) bool: which label was observed on each row."""
        out = np.zeros((self.n, self.m), dtype=bool)
        out[np.arange(self.n), self.label] = True
        return out

    def summary(self) -> dict[str, Any]:
        """Per label: rows, successes, clipped rows, effective sample size (recorded in the card)."""
        per: dict[str, Any] = {}
        raw = 1.0 / self.propensity
        for j, name in enumerate(self.candidates):
            sel = self.label == j
            w = self.weight[sel]
            per[name] = {
                "rows": int(sel.sum()),
                "successes": int(self.success[sel].sum()),
                "clipped_rows": int((raw[sel] > self.max_weight).sum()),
                "ess": round(float(effective_sample_size(w)), 1),
                "ips_success_rate": round(float(ips_rate(self, j)), 4),
            }
        return per


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size of weights ``w``: ``(sum w)^2 / sum w^2``."""
    w = np.asarray(w, dtype=float)
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def ips_rate(labels: LoggedLabels, j: int) -> float:
    """Self-normalised IPS estimate of label j's success rate over all logged queries."""
    sel = labels.label == j
    w = labels.weight[sel]
    return float((w * labels.success[sel]).sum() / w.sum()) if w.sum() > 0 else float("nan")


def make_logged_labels(
    records: Sequence[ReplayRecord],
    rule: LabelRule | None = None,
    *,
    assume_propensity: float | None = None,
    max_weight: float = DEFAULT_MAX_WEIGHT,
    min_rows: int = DEFAULT_MIN_ROWS,
    candidates: Sequence[str] | None = None,
) -> LoggedLabels:
    """Training rows of logged bandit records (see the module docstring); raises LoggedDataError."""
    rule = rule or LabelRule()
    if max_weight < 1.0:
        raise LoggedDataError(f"--max-weight must be at least 1 (a weight is 1/propensity), got {max_weight}")
    if assume_propensity is not None and not 0.0 < assume_propensity <= 1.0:
        raise LoggedDataError(f"--assume-propensity must be in (0, 1], got {assume_propensity}")
    names: list[str] = []
    scores, props, costs, tokens = [], [], [], []
    ids, texts, splits, queries = [], [], [], []
    unknown = 0
    for r in records:
        block = logged_block(r) or {}
        strategy = block.get("strategy")
        if strategy is None or strategy not in r.outcomes:
            if len(r.outcomes) != 1:
                raise LoggedDataError(f"record {r.id!r}: {len(r.outcomes)} outcomes and no logged strategy "
                                      "naming the one that answered")
            strategy = next(iter(r.outcomes))
        label = str(block.get("candidate") or strategy)
        if candidates is not None and label not in candidates:
            continue
        o = r.outcomes[strategy]
        score = o.score
        budget = rule.budgets.get(label)
        if budget is not None and o.completion_tokens is not None and o.completion_tokens > budget:
            score = 0.0  # the truncation rule of ReplayData.apply_budget, on the one outcome there is
        # A label's outcome may be observed as the first call or as a shadow call; the weight is the
        # inverse of that observation probability (logged as `observed_propensity` under a `shadow:`
        # block), so every query weighs the same for the label whichever way it was observed.
        p = block.get("observed_propensity", block.get("propensity"))
        if p is None:
            unknown += 1
            p = assume_propensity
        else:
            p = float(p)
            if not 0.0 < p <= 1.0:
                raise LoggedDataError(f"record {r.id!r}: propensity {p!r} is not in (0, 1]")
        names.append(label)
        scores.append(score)
        props.append(p)
        costs.append(np.nan if o.cost_usd is None else o.cost_usd)
        tokens.append(float((o.prompt_tokens or 0) + (o.completion_tokens or 0)))
        ids.append(r.id)
        queries.append(query_id(r))
        texts.append(r.prompt_text())
        splits.append(r.split)
    if not ids:
        raise LoggedDataError("no logged record to train on" + (" (after --candidates)" if candidates else ""))
    if unknown and assume_propensity is None:
        raise LoggedDataError(
            f"{unknown} of {len(ids)} logged records have no propensity (routed before exploration was logged); "
            "inverse-propensity weights need it - uniform weights are biased when the logging policy was not "
            "uniformly random; pass --assume-propensity 1 only if that is acceptable"
        )
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        raise LoggedDataError(
            f"{empty} of {len(ids)} logged records have an empty prompt: a probe cannot learn from no text "
            "(store prompts in the ledger - policy/ledger store_prompts - and export again)"
        )
    order_seen = list(dict.fromkeys(names))
    idx = {c: j for j, c in enumerate(order_seen)}
    lab = np.array([idx[c] for c in names], dtype=np.int64)
    prop = np.asarray(props, dtype=float)
    weight = np.minimum(1.0 / prop, max_weight)
    counts = np.bincount(lab, minlength=len(order_seen))
    missing = [c for c in (candidates or []) if c not in idx]
    few = [(c, int(counts[idx[c]])) for c in order_seen if counts[idx[c]] < min_rows] + [(c, 0) for c in missing]
    if few:
        raise LoggedDataError(
            "too few logged outcomes to fit a success model for "
            + ", ".join(f"'{c}' ({k} rows)" for c, k in few)
            + f"; need at least {min_rows} each: explore more (policy exploration) or leave them out with --candidates"
        )
    # Cost order: IPS-weighted mean cost per label (tokens where no cost is known), as labels.cost_order.
    cost_arr, tok_arr = np.asarray(costs, dtype=float), np.asarray(tokens, dtype=float)
    mean_cost, mean_tok = [], []
    for j in range(len(order_seen)):
        sel = lab == j
        w = weight[sel]
        c = cost_arr[sel]
        mean_cost.append(float((w * c).sum() / w.sum()) if np.isfinite(c).all() else float("nan"))
        mean_tok.append(float((w * tok_arr[sel]).sum() / w.sum()))
    key = mean_cost if np.isfinite(mean_cost).all() else (mean_tok if max(mean_tok) > 0 else list(range(len(order_seen))))
    order = sorted(range(len(order_seen)), key=lambda j: (key[j], j))
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    if rule.easy_candidates < 1 or rule.easy_candidates > len(order):
        raise LoggedDataError(f"easy_candidates must be between 1 and {len(order)}, got {rule.easy_candidates}")
    return LoggedLabels(
        candidates=[order_seen[j] for j in order],
        label=remap[lab],
        success=(np.asarray(scores) >= rule.threshold).astype(np.int8),
        propensity=prop,
        weight=weight,
        ids=ids,
        texts=texts,
        splits=splits,
        mean_cost=[mean_cost[j] for j in order],
        rule=rule,
        max_weight=float(max_weight),
        assumed_propensity=assume_propensity if unknown else None,
        queries=queries,
    )


def tier_from_success(p: np.ndarray, easy_candidates: int) -> np.ndarray:
    """(n, 3) easy/normal/hard probabilities from per-label success probabilities (cheapest first).

    The tier rule of :mod:`triage.probes.labels` (easy = a cheap label succeeds, hard = none does,
    normal = otherwise) with the labels' successes taken as independent given the query: logged data
    never shows two outcomes of one query, so their dependence cannot be estimated from it. The
    independence assumption spreads some 'hard' mass into 'normal'; the card records it.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    easy = 1.0 - np.prod(1.0 - p[:, :easy_candidates], axis=1)
    hard = np.prod(1.0 - p, axis=1)
    normal = np.clip(1.0 - easy - hard, 0.0, 1.0)
    out = np.column_stack([easy, normal, hard])
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def weights_for(labels: LoggedLabels, rows: np.ndarray, j: int, *, weighting: str = "ips") -> tuple[np.ndarray, np.ndarray]:
    """Rows (indices into ``rows``) observed for label j, and their fit weights normalised to mean 1.

    Normalising keeps the relative weights (what removes the selection bias) while the head's
    regularisation strength stays that of an unweighted fit on the same number of rows.
    """
    sel = np.flatnonzero(labels.label[rows] == j)
    if weighting == "none":
        return sel, np.ones(sel.size)
    w = labels.weight[rows][sel]
    return sel, w / w.mean() if sel.size else w


def weighting_summary(labels: LoggedLabels, weighting: str) -> Mapping[str, Any]:
    return {
        "estimator": {"ips": "inverse propensity weighted (clipped)", "none": "unweighted",
                      "auto": "per label an IPS-weighted or unweighted fit: for two labels the pair whose gain "
                              "ranks the logged queries best by doubly-robust value (see weighting_selection), "
                              "otherwise the lower IPS-weighted cross-fitted log loss (see weighting)"}[weighting],
        "max_weight": labels.max_weight,
        "assumed_propensity": labels.assumed_propensity,
        "tier_rule": "tier from per-label success estimates, labels independent given the query",
    }
