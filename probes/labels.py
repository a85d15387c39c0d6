"""Training labels from replay data: per-candidate success and easy/normal/hard tiers.

The rule (recorded in every probe card as ``label_rule``):

* **success** of candidate *c* on query *q*: ``score[q, c] >= threshold`` and the response fits
  *c*'s completion-token budget when one is given (a longer logged response counts as truncated
  and failed, as :meth:`ReplayData.apply_budget` replays it).
* **cost order**: candidates sorted by mean logged cost (USD) over the training rows; where no
  cost is known, by mean total tokens; ties keep the data's column order.
* **tier** of a query, with the ``easy_candidates`` cheapest candidates (default 1) forming the
  cheap group:
    - ``easy``   - some candidate of the cheap group succeeds;
    - ``normal`` - no cheap candidate does, but a more expensive one succeeds;
    - ``hard``   - no candidate succeeds.
  With a weak/strong pair this is: weak right -> easy, only strong right -> normal, both wrong -> hard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from triage.replay.matrix import ReplayData
from triage.probes.types import TIERS


@dataclass(frozen=True)
class LabelRule:
    threshold: float = 0.5
    budgets: Mapping[str, int] = field(default_factory=dict)
    easy_candidates: int = 1

    def describe(self) -> str:
        return (
            f"success = score >= {self.threshold} within budget; candidates ordered by mean cost; "
            f"easy = one of the {self.easy_candidates} cheapest succeeds, normal = only a more "
            "expensive one succeeds, hard = none succeeds"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "budgets": dict(self.budgets),
            "easy_candidates": self.easy_candidates,
            "description": self.describe(),
        }


@dataclass
class ProbeLabels:
    """Labels of the rows ``rows`` of a replay data set (rows where every candidate was run)."""

    candidates: list[str]  # success label names, in cost order (cheapest first)
    success: np.ndarray  # (n, m) int8, columns in ``candidates`` order
    tier: np.ndarray  # (n,) int8 index into TIERS
    rows: np.ndarray  # (n,) row indices into the source data
    mean_cost: list[float]  # per candidate, same order; NaN if unknown
    rule: LabelRule
    #: (n, m) bool for logged bandit data (triage.probes.bandit): the one cell observed per row;
    #: ``success`` is 0 in the others. None for full-information data (every cell observed).
    observed: np.ndarray | None = None

    @property
    def tier_names(self) -> tuple[str, ...]:
        return TIERS

    def tier_counts(self) -> dict[str, int]:
        return {t: int((self.tier == k).sum()) for k, t in enumerate(TIERS)}


def cost_order(data: ReplayData) -> tuple[list[int], list[float]]:
    """Column indices of ``data.candidates`` sorted cheapest first, and their mean costs."""
    with np.errstate(all="ignore"):
        mean_cost = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in data.cost.T])
        tokens = data.total_tokens
        mean_tok = np.array([t.mean() if t.size else np.nan for t in tokens.T])
    if np.isfinite(mean_cost).all():
        key = mean_cost
    elif np.isfinite(mean_tok).all() and (mean_tok > 0).any():
        key = mean_tok
    else:
        key = np.arange(data.m, dtype=float)
    order = sorted(range(data.m), key=lambda j: (key[j], j))
    return order, [float(mean_cost[j]) for j in order]


def make_labels(data: ReplayData, rule: LabelRule | None = None) -> ProbeLabels:
    """Success and tier labels for every complete row of ``data`` (see the module docstring)."""
    rule = rule or LabelRule()
    if rule.easy_candidates < 1 or rule.easy_candidates > data.m:
        raise ValueError(f"easy_candidates must be between 1 and {data.m}, got {rule.easy_candidates}")
    for name, budget in rule.budgets.items():
        data = data.apply_budget(name, int(budget))
    rows = np.flatnonzero(~np.isnan(data.score).any(axis=1))
    if rows.size == 0:
        raise ValueError(f"{data.name}: no query has an outcome for every candidate (logged data with one "
                         "outcome per query trains through triage.probes.bandit_training)")
    order, mean_cost = cost_order(data.subset(rows))
    success = (data.score[np.ix_(rows, order)] >= rule.threshold).astype(np.int8)
    cheap = success[:, : rule.easy_candidates].any(axis=1)
    anyone = success.any(axis=1)
    tier = np.where(cheap, 0, np.where(anyone, 1, 2)).astype(np.int8)
    return ProbeLabels(
        candidates=[data.candidates[j] for j in order],
        success=success,
        tier=tier,
        rows=rows,
        mean_cost=mean_cost,
        rule=rule,
    )
