"""Off-policy evaluation: a target policy's accuracy and cost from logged bandit data.

Each logged query ``i`` carries the strategy ``a_i`` the logging policy chose, its propensity
``mu_i = mu(a_i | x_i)`` and one outcome (score ``r_i``, cost ``c_i``). The target policy gives
``pi(a | x_i)`` (:func:`triage.policies.decide.action_distribution`). With ``w_i = pi(a_i|x_i) / mu_i``:

* **IPS**   ``mean(w r)``: unbiased when every action the target may take had positive logging
  propensity, high variance when weights are large.
* **SNIPS** ``sum(w r) / sum(w)``: self-normalised; slightly biased, bounded by the observed scores,
  usually lower variance.
* **DR**    ``mean(sum_a pi(a|x) q(x,a) + w (r - q(x,a_i)))``: a reward model ``q`` plus an IPS
  correction of its error; unbiased under the same support condition whatever ``q`` is, and lower
  variance the better ``q`` predicts ``r``.

Intervals: percentile bootstrap over queries (fixed seed), the per-query terms resampled together so
SNIPS's ratio and DR's model part stay paired. Effective sample size: Kish, ``(sum w)^2 / sum w^2``.

The estimand is the mean over the logged queries. The bootstrap also counts the variance of drawing
those queries, so for that fixed-query estimand its intervals are, if anything, conservative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from triage.eval.metrics.bootstrap import Bootstrap, percentile_interval

from triage.errors import TriageError

__all__ = ["BanditArrays", "Estimate", "OPEResult", "SupportError", "estimate", "kish_ess", "support_gap"]

ESTIMATORS = ("ips", "snips", "dr")


class SupportError(TriageError):
    """The target policy puts mass where the logging policy never acted: no estimator can see it."""


@dataclass
class BanditArrays:
    """Logged bandit data against one target policy, as arrays over ``n`` queries and ``k`` actions.

    ``actions`` are the target policy's strategies; ``chosen[i]`` is the column of the logged
    strategy (-1: the target policy has no such strategy, so ``pi`` of it is 0).
    """

    actions: list[str]
    chosen: np.ndarray  # (n,) int
    propensity: np.ndarray  # (n,) logging mu(a_i|x_i) in (0, 1]
    reward: np.ndarray  # (n,) score in [0, 1]
    cost: np.ndarray  # (n,) cost of the logged call, NaN unknown
    pi: np.ndarray  # (n, k) target pi(a|x_i)
    supported: np.ndarray  # (n, k) bool: the logging policy gave a_k positive mass at x_i
    q_reward: np.ndarray | None = None  # (n, k) reward model for DR
    q_cost: np.ndarray | None = None  # (n, k) cost model for DR

    @property
    def n(self) -> int:
        return int(self.chosen.shape[0])

    def weights(self) -> np.ndarray:
        """``w_i = pi(a_i|x_i) / mu_i`` (0 where the target has no such strategy)."""
        rows = np.arange(self.n)
        pi_chosen = np.where(self.chosen >= 0, self.pi[rows, np.maximum(self.chosen, 0)], 0.0)
        return pi_chosen / self.propensity


def kish_ess(w: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 when every weight is 0)."""
    w = np.asarray(w, dtype=float)
    s2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def support_gap(data: BanditArrays) -> dict[str, float]:
    """Per target action, the share of queries' target mass it puts where logging never acted."""
    lost = np.where(data.supported, 0.0, data.pi).mean(axis=0) if data.n else np.zeros(len(data.actions))
    return {a: float(v) for a, v in zip(data.actions, lost, strict=True) if v > 0}


def check_support(data: BanditArrays, tolerance: float, policy_name: str) -> float:
    """The unsupported target mass (a share of queries); raises :class:`SupportError` above ``tolerance``."""
    gap = support_gap(data)
    total = float(sum(gap.values()))
    if total > tolerance:
        which = ", ".join(f"{a} {100 * v:.1f}%" for a, v in sorted(gap.items(), key=lambda kv: -kv[1]))
        raise SupportError(
            f"no support: policy '{policy_name}' puts {100 * total:.1f}% of its decisions on strategies the "
            f"logging policy never chose for those queries ({which}; tolerance {100 * tolerance:g}%); "
            "log with exploration (policy `exploration:` block, e.g. {type: epsilon, epsilon: 0.1}) and evaluate again"
        )
    return total


@dataclass
class Estimate:
    value: float | None
    ci: list[float | None] | None


@dataclass
class OPEResult:
    """Every estimator's accuracy and cost per query, with intervals; ESS and support figures."""

    n: int
    estimates: dict[str, dict[str, Estimate]]  # estimator -> {"accuracy", "cost"}
    ess: float
    unsupported_mass: float
    match_rate: float  # share of queries where the target's greedy choice equals the logged one
    reward_model: str
    bootstrap: dict[str, Any]
    logged: dict[str, Estimate] = field(default_factory=dict)  # the logging policy's own figures
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from triage.eval.evaluation.result import jsonable

        def est(e: Estimate) -> dict[str, Any]:
            return {"value": e.value, "ci": e.ci}

        return jsonable({
            "n": self.n, "ess": self.ess, "ess_share": self.ess / self.n if self.n else None,
            "unsupported_mass": self.unsupported_mass, "match_rate": self.match_rate,
            "reward_model": self.reward_model, "bootstrap": self.bootstrap, "notes": self.notes,
            "logged_policy": {k: est(v) for k, v in self.logged.items()},
            "estimators": {name: {k: est(v) for k, v in d.items()} for name, d in self.estimates.items()},
        })


def _terms(data: BanditArrays, value: np.ndarray, q: np.ndarray | None, w: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query terms whose (ratio of) means are the estimators of ``value``'s policy mean."""
    value = np.nan_to_num(value, nan=0.0)
    wv = w * value
    out = {"ips": wv, "w": w}
    if q is not None:
        rows = np.arange(data.n)
        q_chosen = np.where(data.chosen >= 0, q[rows, np.maximum(data.chosen, 0)], 0.0)
        out["dr"] = np.sum(data.pi * q, axis=1) + w * (value - q_chosen)
    return out


def estimate(data: BanditArrays, *, n_boot: int = 1000, seed: int = 0, reward_model: str = "probe",
             level: float = 0.95) -> OPEResult:
    """IPS, SNIPS and (with ``data.q_reward``) DR estimates of the target's accuracy and cost per query."""
    if data.n == 0:
        raise ValueError("no logged queries to evaluate")
    w = data.weights()
    cost_known = not np.isnan(data.cost[w > 0]).any()
    boot = Bootstrap(data.n, n_boot=n_boot, seed=seed)
    has_ci = boot.n_boot > 0
    estimates: dict[str, dict[str, Estimate]] = {name: {} for name in ESTIMATORS if name != "dr" or data.q_reward is not None}
    for metric, value, q in (("accuracy", data.reward, data.q_reward), ("cost", data.cost, data.q_cost)):
        if metric == "cost" and not cost_known:
            for name in estimates:
                estimates[name][metric] = Estimate(None, None)
            continue
        terms = _terms(data, value, q, w)
        keys = [k for k in ("ips", "w", "dr") if k in terms]
        sums = {k: float(terms[k].sum()) for k in keys}
        reps = dict(zip(keys, boot.replicate_sums(np.vstack([terms[k] for k in keys])).T, strict=True)) if has_ci else {}
        n_b = boot.replicate_n
        with np.errstate(divide="ignore", invalid="ignore"):
            point = {"ips": sums["ips"] / data.n,
                     "snips": sums["ips"] / sums["w"] if sums["w"] > 0 else float("nan")}
            rep = {"ips": reps["ips"] / n_b, "snips": reps["ips"] / reps["w"]} if has_ci else {}
            if "dr" in keys:
                point["dr"] = sums["dr"] / data.n
                if has_ci:
                    rep["dr"] = reps["dr"] / n_b
        for name in estimates:
            v = point[name]
            ci = percentile_interval(rep[name], level) if has_ci else None
            estimates[name][metric] = Estimate(None if not np.isfinite(v) else float(v), ci)

    logged = {"accuracy": Estimate(float(data.reward.mean()), None),
              "cost": Estimate(float(np.mean(data.cost)) if not np.isnan(data.cost).any() else None, None)}
    greedy = np.argmax(data.pi, axis=1)
    match = float(np.mean(greedy == data.chosen))
    notes = []
    if not cost_known:
        notes.append("some logged calls have no cost: cost per query is not estimated")
    return OPEResult(n=data.n, estimates=estimates, ess=kish_ess(w), unsupported_mass=float(sum(support_gap(data).values())),
                     match_rate=match, reward_model=reward_model if data.q_reward is not None else "none",
                     bootstrap={"n_boot": boot.n_boot, "level": level, "seed": seed, "method": "percentile"},
                     logged=logged, notes=notes)


# -- reward models for DR --------------------------------------------------------------------------


def fitted_reward_model(features: np.ndarray, chosen: np.ndarray, target: np.ndarray, k: int, *,
                        folds: int = 5, seed: int = 0, min_rows: int = 20) -> np.ndarray:
    """Per-action models of ``target`` (a score in [0, 1]) on ``features``, cross-fitted: row i's
    prediction comes from a model that did not see row i. A logistic regression per action on the
    rows that chose it (a fractional score enters as two weighted rows); the action's mean where
    there are too few rows or one class; 0.5 for an action never logged (it has no support then,
    and the support check refuses before its value matters)."""
    from sklearn.linear_model import LogisticRegression

    n = len(chosen)
    out = np.full((n, k), 0.5)
    fold = np.random.default_rng(seed).permutation(n) % max(2, folds)
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        for a in range(k):
            rows = train & (chosen == a)
            y = target[rows]
            if rows.sum() == 0:
                continue
            if rows.sum() < min_rows or np.all(y == y[0]):
                out[test, a] = float(y.mean())
                continue
            X = features[rows]
            Xd = np.vstack([X, X])
            yd = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
            sw = np.concatenate([y, 1.0 - y])
            model = LogisticRegression(C=1.0, max_iter=1000).fit(Xd, yd, sample_weight=sw)
            out[test, a] = model.predict_proba(features[test])[:, 1]
    return out


def fitted_mean_model(chosen: np.ndarray, value: np.ndarray, k: int, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Cross-fitted per-action mean of ``value`` (the DR cost model): 0 for an action never logged."""
    n = len(chosen)
    out = np.zeros((n, k))
    fold = np.random.default_rng(seed).permutation(n) % max(2, folds)
    value = np.nan_to_num(value, nan=0.0)
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        for a in range(k):
            rows = train & (chosen == a)
            if rows.any():
                out[test, a] = float(value[rows].mean())
    return out


def probe_features(success: np.ndarray, tier: np.ndarray) -> np.ndarray:
    """Reward-model inputs from probe outputs: logit of each P(success), and the tier probabilities."""
    p = np.clip(success, 1e-4, 1 - 1e-4)
    return np.hstack([np.log(p / (1 - p)), tier])


def as_columns(names: Sequence[str], rows: Sequence[dict[str, float]]) -> np.ndarray:
    """``rows`` of {name: value} as an (n, len(names)) array (missing: 0)."""
    return np.array([[float(r.get(a, 0.0)) for a in names] for r in rows], dtype=float).reshape(len(rows), len(names))
