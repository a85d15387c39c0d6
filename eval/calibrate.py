"""Choose a policy's thresholds (or lambda) on replay data and write them back with the figures.

``triage policy calibrate --policy P --data DATA.jsonl --target-accuracy 0.95 --of BEST`` picks the
cheapest setting whose accuracy is at least 95% of the best single strategy's;
``--max-cost-per-query X`` picks the most accurate setting costing at most X USD per query.

Probe outputs are cross-fitted: the policy's probe configuration (features, head, calibration, label
rule from its card) is retrained k-fold on DATA by :func:`triage.probes.training.train_probe`, and each query
gets the output of the fold that did not see it -- what the deployed probe would say about a query it
has not been trained on. Outputs computed elsewhere can be given instead (``--probe-outputs``).
Where outputs come from: :mod:`triage.eval.calibration_outputs`.

Rows: with train/test splits in DATA the setting is chosen on ``train`` and reported on ``test``;
without, it is chosen and reported on the same rows (the figures say so).

The search is vectorised; its semantics are those of :func:`triage.policies.decide.decide`, and the chosen
setting is checked by running ``decide`` on every row (the figures written are from that run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from triage.replay.matrix import ReplayData
from triage.policies.decide import decide
from triage.policies.policy import ExpectedCost, ExpectedUtilityRule, Policy, ThresholdsRule, TierThresholds
from triage.policies.pricing import token_price
from triage.probes.types import TIERS, ProbeOutput
from triage.errors import ConfigError

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)


@dataclass(frozen=True)
class Objective:
    """A target accuracy (share of a reference strategy's), a cost cap per query, or tier shares."""

    target_accuracy: float | None = None
    of: str = "BEST"
    max_cost_per_query: float | None = None
    tier_shares: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.target_accuracy, self.max_cost_per_query, self.tier_shares))
        if given != 1:
            raise ValueError("give exactly one of --target-accuracy, --max-cost-per-query or --tier-shares")
        if self.tier_shares is not None:
            if len(self.tier_shares) != 3 or min(self.tier_shares) < 0 or abs(sum(self.tier_shares) - 1) > 1e-6:
                raise ValueError("--tier-shares needs three shares (easy,normal,hard) >= 0 summing to 1")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.5:
            raise ValueError(f"--target-accuracy must be in (0, 1.5], got {self.target_accuracy}")
        if self.max_cost_per_query is not None and self.max_cost_per_query < 0:
            raise ValueError(f"--max-cost-per-query must be >= 0, got {self.max_cost_per_query}")


@dataclass
class CalibrationResult:
    policy: Policy
    updates: dict[str, Any]  # top-level keys to write back into the policy file
    figures: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)


# -- inputs ----------------------------------------------------------------------------------------


def calibrate_tier_shares(policy: Policy, data: ReplayData, outputs: dict[str, ProbeOutput],
                          shares: tuple[float, float, float], *, data_label: str, outputs_label: str = "",
                          command: str | None = None) -> CalibrationResult:
    """Thresholds that split ``data``'s queries into easy/normal/hard in the given shares.

    For policies whose strategies have no replay outcomes (e.g. one local model with effort tiers):
    the probe's difficulty ranking decides who gets the bigger budget, the shares decide how many do.
    """
    rule = policy.rule
    if not isinstance(rule, ThresholdsRule):
        raise ConfigError(f"--tier-shares sets the thresholds rule's thresholds; this policy's rule is '{rule.type}'")
    rows = [i for i in range(data.n) if data.ids[i] in outputs]
    if not rows:
        raise ConfigError("no query of the data has a probe output")
    outs = [outputs[data.ids[i]] for i in rows]
    ph = np.array([o.tier_probs.get("hard", 0.0) for o in outs], dtype=float)
    cum = np.array([o.tier_probs.get("normal", 0.0) for o in outs], dtype=float) + ph
    _, s_normal, s_hard = shares
    t_hard = 1.0 if s_hard <= 0 else float(np.quantile(ph, 1.0 - s_hard, method="higher"))
    rest = cum[ph < t_hard]
    frac = s_normal / max(1e-12, 1.0 - s_hard)
    t_normal = 1.0 if frac <= 0 or rest.size == 0 else float(np.quantile(rest, max(0.0, 1.0 - frac), method="higher"))
    chosen = {"normal": round(min(t_normal, 1.0), 6), "hard": round(min(t_hard, 1.0), 6)}
    new_rule = ThresholdsRule(thresholds=TierThresholds(**chosen))
    policy = policy.model_copy(update={"rule": new_rule})
    tiers = [decide(policy, o).tier for o in outs]
    achieved = {t: round(tiers.count(t) / len(tiers), 4) for t in TIERS}
    figures: dict[str, Any] = {
        "data": data_label,
        "objective": "tier shares easy/normal/hard = " + "/".join(f"{x:g}" for x in shares),
        "knob": {"thresholds": chosen},
        "tier_shares": achieved,
        "distinct_outputs": int(np.unique(np.round(ph, 6)).size),
        "rows_selected": len(rows),
        "rows_reported": len(rows),
        "reported_on": "the selection rows",
        "probe_outputs": outputs_label,
        "calibrated_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
    if command:
        figures["command"] = command
    updates = {"rule": new_rule.model_dump(mode="json", by_alias=True, exclude_none=True), "calibration": figures}
    return CalibrationResult(policy=policy, updates=updates, figures=figures)


def describe_knob(knob: dict[str, Any]) -> str:
    """The calibrated setting for people: ``thresholds normal=0.53, hard=0.5`` or ``lambda=0.3``."""
    thresholds = knob.get("thresholds")
    if thresholds:
        return "thresholds " + ", ".join(f"{tier}={value:g}" for tier, value in thresholds.items())
    return ", ".join(f"{name}={value:g}" for name, value in knob.items())


# -- degenerate results ----------------------------------------------------------------------------

#: Largest gap between an asked and an achieved tier share that still counts as "the shares asked".
SHARE_TOLERANCE = 0.1
#: Share of the selection rows above which a calibration "routes everything" to one strategy.
ONE_STRATEGY_SHARE = 0.99


def degenerate_reason(result: CalibrationResult, objective: Objective) -> str | None:
    """Why a calibration result is useless as a router, or None. One line: what came out, why it is
    degenerate, what to do (the CLI refuses to write it unless told to)."""
    f = result.figures
    knob = describe_knob(f["knob"])
    if objective.tier_shares is not None:
        asked = dict(zip(TIERS, objective.tier_shares))
        got = f["tier_shares"]
        worst = max(TIERS, key=lambda t: abs(got[t] - asked[t]))
        edge = [t for t in ("normal", "hard") if 0 < asked[t] < 1
                and not 1e-3 < f["knob"]["thresholds"][t] < 1.0]
        if abs(got[worst] - asked[worst]) > SHARE_TOLERANCE or edge:
            top = max(TIERS, key=lambda t: got[t])
            return (f"degenerate calibration: {knob} put {got[top]:.0%} of the queries in '{top}' "
                    f"('{worst}' asked {asked[worst]:.0%}, got {got[worst]:.0%}): the probe's outputs do not "
                    f"spread over this data ({f.get('distinct_outputs', '?')} distinct P(hard) values) - check "
                    "that the data has its prompts and that the probe fits this traffic; nothing written")
        return None
    if not f["target_met"]:
        what = (f"best reachable accuracy {f['accuracy']:.4f} < target {objective.target_accuracy:g} x "
                f"{f['best_single']['strategy']}" if objective.target_accuracy is not None
                else f"cheapest setting costs {f['cost_per_query_usd']:.6g} USD/query > cap "
                     f"{objective.max_cost_per_query:g}")
        return (f"target unreachable on this data: {what}; lower the target / raise the cap, or add a strategy; "
                "nothing written")
    share = f.get("routed_share_selection") or f["routed_share"]
    top = max(share, key=share.get)
    if share[top] >= ONE_STRATEGY_SHARE and len(result.policy.strategies) > 1:
        return (f"degenerate calibration: {knob} routes {share[top]:.0%} of the queries to '{top}': that is "
                f"the single strategy '{top}', not routing - the probe does not separate this data's queries "
                "(retrain it on this traffic) or the objective only the one strategy meets; nothing written "
                "(--allow-degenerate writes it anyway)")
    return None


# -- the search ------------------------------------------------------------------------------------


@dataclass
class _Table:
    """Per-row score and cost of each policy strategy that has a replay column."""

    names: list[str]
    score: np.ndarray  # (n, s)
    cost: np.ndarray  # (n, s)
    rows: np.ndarray  # rows of data used
    outputs: list[ProbeOutput]
    select: np.ndarray  # indices into rows
    report: np.ndarray
    reported_on: str


def _strategy_table(policy: Policy, data: ReplayData, outputs: dict[str, ProbeOutput]) -> _Table:
    names = []
    cols = []
    for name, strategy in policy.strategies.items():
        if strategy.candidate in data.candidates:
            names.append(name)
            cols.append(data.candidates.index(strategy.candidate))
    needed = set(policy.candidates()) | {policy.tiers.get(t) for t in TIERS}
    missing = sorted(n for n in needed if n not in names)
    if missing:
        raise ConfigError(
            "strategies without a replay column: "
            + ", ".join(f"{n} (replay_candidate '{policy.strategies[n].candidate}')" for n in missing)
            + f"; the data has: {', '.join(data.candidates)}"
        )
    score = data.score[:, cols]
    have = np.array([data.ids[i] in outputs for i in range(data.n)])
    rows = np.flatnonzero(np.isfinite(score).all(axis=1) & have)
    if rows.size == 0:
        raise ConfigError("no query has an outcome for every strategy of the policy and a probe output")
    score = score[rows]
    cost = data.cost[np.ix_(rows, cols)]
    for k, name in enumerate(names):
        gap = ~np.isfinite(cost[:, k])
        if gap.any():
            price = token_price(policy.strategies[name])
            pt, ct = data.prompt_tokens[rows, cols[k]][gap], data.completion_tokens[rows, cols[k]][gap]
            if not price.known or not np.isfinite(pt).all() or not np.isfinite(ct).all():
                raise ConfigError(f"the data has no cost for strategy '{name}' on some queries and no tokens x "
                                  "price to compute it (set the strategy's price and import with token counts)")
            cost[gap, k] = pt * price.input + ct * price.output
    splits = np.array([data.splits[i] if data.splits else None for i in rows], dtype=object)
    train, test = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")
    if train.size and test.size:
        select, report, reported_on = train, test, "test split (chosen on the train split)"
    else:
        select = report = np.arange(rows.size)
        reported_on = "the selection rows (no train/test split in the data)"
    return _Table(names, score, cost, rows, [outputs[data.ids[i]] for i in rows], select, report, reported_on)


def _fill_expected_cost(policy: Policy, data: ReplayData, table: _Table) -> dict[str, ExpectedCost]:
    """Expected tokens per strategy (mean over the selection rows), or USD where tokens are unknown."""
    out = dict(policy.expected_cost)
    for k, name in enumerate(table.names):
        col = data.candidates.index(policy.strategies[name].candidate)
        rows = table.rows[table.select]
        pt, ct = data.prompt_tokens[rows, col], data.completion_tokens[rows, col]
        if np.isfinite(pt).all() and np.isfinite(ct).all() and token_price(policy.strategies[name]).known:
            out[name] = ExpectedCost(prompt_tokens=round(float(pt.mean()), 1),
                                     completion_tokens=round(float(ct.mean()), 1))
        else:
            out[name] = ExpectedCost(usd=float(np.mean(table.cost[table.select, k])))
    return out


def _pick(acc: np.ndarray, cost: np.ndarray, closeness: np.ndarray, objective: Objective,
          target: float | None) -> tuple[int, bool]:
    """Index of the chosen point and whether the objective was met."""
    if objective.target_accuracy is not None:
        ok = acc >= target - 1e-12
        if ok.any():
            idx = np.flatnonzero(ok)
            order = np.lexsort((closeness[idx], -acc[idx], cost[idx]))
            return int(idx[order[0]]), True
        return int(np.lexsort((closeness, cost, -acc))[0]), False
    cap = objective.max_cost_per_query
    ok = cost <= cap + 1e-15
    if ok.any():
        idx = np.flatnonzero(ok)
        order = np.lexsort((closeness[idx], cost[idx], -acc[idx]))
        return int(idx[order[0]]), True
    return int(np.lexsort((closeness, -acc, cost))[0]), False


def _threshold_points(policy: Policy, table: _Table) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    """(settings, choice index per setting per row into table.names)."""
    tiers = policy.tiers
    rule = policy.rule
    assert isinstance(rule, ThresholdsRule)
    pn = np.array([o.tier_probs.get("normal", 0.0) for o in table.outputs], dtype=float)
    ph = np.array([o.tier_probs.get("hard", 0.0) for o in table.outputs], dtype=float)
    col = np.array([table.names.index(tiers.get(t)) for t in TIERS])
    sweep_normal = tiers.easy != tiers.normal or tiers.easy != tiers.hard
    sweep_hard = tiers.hard != tiers.normal
    if tiers.easy == tiers.normal == tiers.hard:
        raise ConfigError("every tier uses the same strategy: there is no threshold to calibrate")
    gn = GRID if sweep_normal else np.array([rule.thresholds.normal])
    gh = GRID if sweep_hard else np.array([rule.thresholds.hard])
    settings, choices = [], []
    for tn in gn:
        hard = ph[None, :] >= gh[:, None]
        normal = ~hard & ((pn + ph)[None, :] >= tn)
        tier = np.where(hard, 2, np.where(normal, 1, 0))
        choices.append(col[tier].astype(np.int16))
        settings.extend({"normal": float(tn), "hard": float(th)} for th in gh)
    return settings, np.concatenate(choices, axis=0), np.array(
        [abs(s["normal"] - rule.thresholds.normal) + abs(s["hard"] - rule.thresholds.hard) for s in settings])


def _lambda_points(policy: Policy, table: _Table) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    rule = policy.rule
    assert isinstance(rule, ExpectedUtilityRule)
    cands = policy.candidates()
    idx = np.array([table.names.index(c) for c in cands])
    labels = [policy.strategies[c].candidate for c in cands]
    for o in table.outputs[:1]:
        missing = [lab for lab in labels if lab not in o.success]
        if missing:
            raise ConfigError(f"the probe outputs have no success label for {', '.join(missing)} "
                              f"(they have: {', '.join(sorted(o.success))})")
    P = np.array([[o.success[lab] for lab in labels] for o in table.outputs], dtype=float)
    tier = np.array([max(range(3), key=lambda t: o.tier_probs.get(TIERS[t], 0.0)) for o in table.outputs])
    costs = np.array([[policy.expected_cost_usd(c, t) or 0.0 for c in cands] for t in TIERS])  # (3, K)
    row_cost = costs[tier]  # (n, K)
    positive = costs[costs > 0]
    if positive.size == 0:
        raise ConfigError("every candidate has an expected cost of 0: lambda has nothing to trade")
    lo, hi = np.log10(1e-4 / positive.max()), np.log10(1e3 / positive.min())
    grid = np.unique(np.concatenate([[0.0], [float(f"{v:.3g}") for v in np.logspace(lo, hi, 300)]]))
    choices = np.stack([idx[np.argmax(P - lam * row_cost, axis=1)] for lam in grid])
    current = rule.lambda_
    closeness = np.abs(np.log10(grid + 1e-300) - np.log10(current + 1e-300)) if current > 0 else grid
    return [{"lambda": float(v)} for v in grid], choices, closeness


def calibrate(policy: Policy, data: ReplayData, outputs: dict[str, ProbeOutput], objective: Objective, *,
              data_label: str, outputs_label: str = "", command: str | None = None) -> CalibrationResult:
    """Choose the rule's knob on ``data``; returns the updated policy and the figures."""
    rule = policy.rule
    if not isinstance(rule, ThresholdsRule | ExpectedUtilityRule):
        raise ConfigError(f"calibrate supports the thresholds and expected_utility rules, not '{rule.type}' "
                          "(replay data has no token logprobs to calibrate a cascade's uncertainty thresholds)")
    table = _strategy_table(policy, data, outputs)
    expected = _fill_expected_cost(policy, data, table)
    policy = policy.model_copy(update={"expected_cost": expected})

    sel, rep = table.select, table.report
    singles = {
        name: {"accuracy": float(table.score[rep, k].mean()), "cost_per_query_usd": float(table.cost[rep, k].mean())}
        for k, name in enumerate(table.names)
    }
    single_sel_acc = {name: float(table.score[sel, k].mean()) for k, name in enumerate(table.names)}
    pool = [n for n in table.names if n in set(policy.candidates()) | {policy.tiers.get(t) for t in TIERS}]
    if objective.of.upper() == "BEST":
        reference = max(pool, key=lambda n: (single_sel_acc[n], -singles[n]["cost_per_query_usd"]))
    elif objective.of in table.names:
        reference = objective.of
    else:
        raise ConfigError(f"--of must be BEST or a strategy of the policy with a replay column ({', '.join(pool)})")
    target = objective.target_accuracy * single_sel_acc[reference] if objective.target_accuracy is not None else None

    if isinstance(rule, ThresholdsRule):
        settings, choices, closeness = _threshold_points(policy, table)
    else:
        settings, choices, closeness = _lambda_points(policy, table)
    n_sel = np.arange(len(sel))
    acc_sel = table.score[sel][n_sel[None, :], choices[:, sel]].mean(axis=1)
    cost_sel = table.cost[sel][n_sel[None, :], choices[:, sel]].mean(axis=1)
    best, met = _pick(acc_sel, cost_sel, closeness, objective, target)
    chosen = settings[best]

    if isinstance(rule, ThresholdsRule):
        new_rule = ThresholdsRule(thresholds=TierThresholds(**chosen))
        knob = {"thresholds": chosen}
    else:
        new_rule = rule.model_copy(update={"lambda_": chosen["lambda"]})
        knob = {"lambda": chosen["lambda"]}
    policy = policy.model_copy(update={"rule": new_rule})

    # The figures come from decide() itself, so they are the policy's behaviour, not the search's.
    col = {n: k for k, n in enumerate(table.names)}
    picked = np.array([col[decide(policy, out).strategy] for out in table.outputs])
    if not np.array_equal(picked, choices[best]):
        raise AssertionError("calibration search and decide() disagree; please report this bug")
    r = np.arange(len(rep))
    acc = float(table.score[rep][r, picked[rep]].mean())
    cost = float(table.cost[rep][r, picked[rep]].mean())
    share = {n: float(np.mean(picked[rep] == k)) for n, k in col.items() if np.any(picked[rep] == k)}
    share_sel = {n: float(np.mean(picked[sel] == k)) for n, k in col.items() if np.any(picked[sel] == k)}
    ref = singles[reference]
    if objective.target_accuracy is not None:
        goal = (f"accuracy >= {objective.target_accuracy:g} x {reference} "
                f"({single_sel_acc[reference]:.4f} on the selection rows) at the lowest cost")
    else:
        goal = f"highest accuracy at <= {objective.max_cost_per_query:g} USD per query"
    figures: dict[str, Any] = {
        "data": data_label,
        "objective": goal,
        "knob": knob,
        "accuracy": round(acc, 6),
        "cost_per_query_usd": float(f"{cost:.6g}"),
        "target_met": bool(met),
        "best_single": {"strategy": reference, **{k: float(f"{v:.6g}") for k, v in ref.items()}},
        "accuracy_share_of_best": round(acc / ref["accuracy"], 6) if ref["accuracy"] else None,
        "cost_share_of_best": round(cost / ref["cost_per_query_usd"], 6) if ref["cost_per_query_usd"] else None,
        "singles": {n: {k: float(f"{v:.6g}") for k, v in f.items()} for n, f in singles.items()},
        "routed_share": {n: round(v, 4) for n, v in share.items()},
        "routed_share_selection": {n: round(v, 4) for n, v in share_sel.items()},
        "rows_selected": int(len(sel)),
        "rows_reported": int(len(rep)),
        "reported_on": table.reported_on,
        "probe_outputs": outputs_label,
        "calibrated_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
    if command:
        figures["command"] = command
    curve = [{**s, "accuracy": float(a), "cost_per_query_usd": float(c)}
             for s, a, c in zip(settings, acc_sel, cost_sel)]
    rule_dump = new_rule.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(rule, ExpectedUtilityRule) and rule.candidates is None:
        rule_dump.pop("candidates", None)
    updates = {
        "rule": rule_dump,
        "expected_cost": {n: e.model_dump(mode="json", exclude_none=True) for n, e in expected.items()},
        "calibration": figures,
    }
    policy = policy.model_copy(update={"calibration": None})
    return CalibrationResult(policy=policy, updates=updates, figures=figures, curve=curve)
