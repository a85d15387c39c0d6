"""`triage learn`: ledger -> export -> bandit-trained probe -> calibrated new policy version -> OPE report
[-> applied atomically, running routers reloaded].

Every step is an existing piece; this module chains them and refuses at the first one that fails:

1. export the ledger as logged bandit data (:func:`triage.router.ledger.export.export_jsonl`, prompts
   required: :class:`~triage.router.ledger.logged.PromptsMissingError`);
2. train a probe on it (:mod:`triage.probes.bandit_training`: per label an inverse-propensity weighted
   or unweighted fit - for a cheap/strong pair the two whose gain ranks the logged queries best by
   doubly-robust value; labels with too few logged outcomes are refused: the logging policy never
   explored them);
3. calibrate the new policy to the objective. Tier shares need only the probe outputs. A target
   accuracy or cost cap needs every strategy's outcome on every query, which logged data lacks; it
   is calibrated on doubly-robust pseudo-outcomes instead: ``G[i, a] = q(x_i, a) + 1[a = a_i] /
   mu_i * (r_i - q(x_i, a_i))`` with ``q`` the cross-fitted reward/cost models of
   :mod:`triage.eval.ope`. The mean of ``G[i, pi(x_i)]`` over the rows is exactly the DR estimate of
   a deterministic policy ``pi``, so :func:`triage.eval.calibrate.calibrate`'s search over the knob
   maximises the DR estimate. Degenerate results are refused (:func:`degenerate_reason`);
4. write the new version (version bumped, ``probe:`` naming the new probe) and compare old and new by
   off-policy evaluation (IPS, SNIPS, DR with bootstrap intervals) on held-out logged queries
   (``holdout``, 30% by a hash of the query id; steps 2-3 never see them); improvement is claimed
   only when the intervals do not overlap. With ``refit`` (default) the version described by that
   report stays in ``evaluated/`` and steps 2-3 run again on every logged query for the version that
   is written and applied - as a model is refit on all its data after cross-validation. Logged data
   has one outcome per query, so the 30% matter: in the learning-loop bench (3 seeds) the final
   router's share of the full-information router's gain over random rose from 0.41 to 0.63 on
   average (RouterBench) and from 0.56 to 0.89 (SimpleQA);
5. ``apply``: keep the old file as ``<stem>.v<old>.yaml``, replace the policy file atomically
   (``os.replace``) and ask a running sidecar to reload (``POST /v1/admin/reload``); a sidecar with
   ``watch_policies_s`` or a SIGHUP picks the new file up by itself, an SDK router by ``reload()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from triage.eval.calibrate import Objective, calibrate, calibrate_tier_shares, degenerate_reason
from triage.eval.learn_write import LearnError, apply_policy, bump_version, policy_header, request_reload, yaml_text
from triage.logging import get_logger
from triage.policies.loader import load_policy, read_policy_yaml
from triage.policies.policy import Policy
from triage.specs import format_spec

log = get_logger("triage.eval.learn")

#: Features of the new probe when the old probe is the default one (its aux regressors need a build).
DEFAULT_FEATURES = "text:aux=false"


@dataclass
class LearnConfig:
    ledger: str
    policy: Path
    objective: Objective
    out: Path | None = None
    apply: bool = False
    features: str | None = None
    folds: int = 5
    max_weight: float = 20.0
    weighting: str = "auto"  # per-label fit weighting (triage.probes.bandit_training): auto, ips or none
    min_rows: int = 30
    assume_propensity: float | None = None
    support_tolerance: float = 0.01
    holdout: float = 0.3  # share of logged queries kept out of training/calibration for the OPE report
    refit: bool = True  # after the report, fit the version that is written and applied on every logged query
    C: float | str = 0.02  # the logistic head's inverse L2 strength; "auto": chosen by inner cross-validation
    n_boot: int = 500
    seed: int = 0
    allow_degenerate: bool = False
    reload_url: str | None = None
    admin_key: str | None = None
    command: str | None = None


@dataclass
class LearnResult:
    old_version: str
    new_version: str
    out: Path
    export: Path
    rows: int
    probe: Path
    policy: Path  # the new version's file (in ``out``)
    calibration: dict[str, Any]
    # the written probe's logged-data training summary: rows and effective sample size per label,
    # the weighting each label got and what chose it (probes.bandit_training.describe_weighting)
    training: dict[str, Any]
    ope_old: dict[str, Any]
    ope_new: dict[str, Any]
    verdict: str
    improved: bool | None  # None: the intervals overlap, no claim either way
    holdout_ids: list[str] = field(default_factory=list)  # the queries the OPE report is computed on
    # The version the OPE report describes (fitted without the held-out queries). With ``refit`` it
    # differs from ``probe``/``policy``, the same procedure fitted on every logged query.
    evaluated_probe: Path | None = None
    evaluated_policy: Path | None = None
    applied: Path | None = None
    backup: Path | None = None
    reload: str = "not applied"
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "old_version": self.old_version, "new_version": self.new_version, "out": str(self.out),
            "export": str(self.export), "rows": self.rows, "holdout_rows": len(self.holdout_ids), "probe": str(self.probe), "policy": str(self.policy),
            "refit": self.evaluated_policy is not None and self.evaluated_policy != self.policy,
            "evaluated": {"probe": str(self.evaluated_probe or self.probe), "policy": str(self.evaluated_policy or self.policy)},
            "training": self.training, "calibration": self.calibration, "ope": {"old": self.ope_old, "new": self.ope_new},
            "verdict": self.verdict, "improved": self.improved,
            "applied": str(self.applied) if self.applied else None,
            "backup": str(self.backup) if self.backup else None, "reload": self.reload, "notes": self.notes,
        }


# -- steps -----------------------------------------------------------------------------------------


def export_ledger(url: str, path: Path) -> int:
    """Step 1: the ledger as logged bandit data at ``path``; the number of rows."""
    from triage.router.ledger.export import export_jsonl
    from triage.router.ledger.sqlite_store import sqlite_path
    from triage.router.ledger.store import open_ledger, url_scheme

    if url_scheme(url) == "sqlite" and not sqlite_path(url).is_file():
        raise LearnError(f"no ledger at {sqlite_path(url)}: check --ledger")
    with open_ledger(url, migrate=False) as store:
        res = export_jsonl(store, path, require_prompts=True)  # PromptsMissingError: one line
    if res.written == 0:
        raise LearnError(f"the ledger has no record with an outcome ({res.skipped_unscored} without): attach "
                         "outcomes (feedback, a grader) before learning")
    return res.written


def _features(cfg: LearnConfig, policy: Policy) -> str:
    if cfg.features:
        return cfg.features
    if policy.probe == "default":
        return DEFAULT_FEATURES
    from triage.probes.card import ProbeArtifactError, read_card
    from triage.policies.loader import resolve_probe_path

    try:
        card, _ = read_card(resolve_probe_path(policy, cfg.policy))
    except ProbeArtifactError:
        return DEFAULT_FEATURES
    # With their options: by name alone a learned probe's `text:aux=false` came back as `text` (aux
    # regressors on) from the second round on - other features than the first round's, and a build.
    return ",".join(format_spec(f.name, f.params or {}, separator=";") for f in card.features)


def logreg_head(C: float | str, seed: int) -> tuple[str, dict[str, Any]]:
    """The probe head `triage learn` fits: logistic regression with ``C``, or (``auto``) one C for
    every label chosen by inner cross-validation on the training rows."""
    if str(C) == "auto":
        return "auto", {"heads": "logreg", "seed": seed}
    return "logreg", {"C": float(C)}


def train_probe_on_export(cfg: LearnConfig, policy: Policy, records: list[Any], export: Path, out: Path,
                          split: str = "all") -> tuple[Path, dict[str, Any]]:
    """Step 2: a probe trained on the logged rows (labels: the policy's strategies' success labels);
    its folder and what its training saw of the logged data (the card's ``training_data.logged``:
    rows per label, effective sample sizes, the weighting chosen per label and why)."""
    from triage.probes.bandit import make_logged_labels
    from triage.probes.bandit_training import train_logged_probe
    from triage.probes.export import export_probe, jsonable
    from triage.probes.labels import LabelRule
    from triage.probes.training import TrainConfig, file_fingerprint, parse_features

    keep = list(dict.fromkeys(s.candidate for s in policy.strategies.values()))
    labels = make_logged_labels(records, LabelRule(), assume_propensity=cfg.assume_propensity,
                                max_weight=cfg.max_weight, min_rows=cfg.min_rows, candidates=keep)
    feats = parse_features(_features(cfg, policy))
    head, params = logreg_head(cfg.C, cfg.seed)
    config = TrainConfig(features=[f.name for f in feats], folds=cfg.folds, seed=cfg.seed, n_boot=100,
                         head=head, head_params=params)
    trained = train_logged_probe(labels, config, features=feats, weighting=cfg.weighting, data_name=export.stem)
    trained.data_fingerprint = file_fingerprint(export)
    trained.data_fingerprint["split"] = split  # which of the export's queries it was trained on
    export_probe(trained, out, command=cfg.command or "triage learn", plot=False)
    return out, jsonable(trained.logged or {})


def dr_pseudo_data(view: Any, policy: Policy, ids: list[str]) -> Any:
    """Full-information-shaped replay arrays of doubly-robust pseudo-outcomes (module docstring, 3)."""
    from triage.replay.matrix import ReplayData

    a = view.arrays
    n, k = a.n, len(a.actions)
    rows = np.arange(n)
    logged = a.chosen >= 0
    c = np.maximum(a.chosen, 0)
    inv = np.where(logged, 1.0 / a.propensity, 0.0)

    def pseudo(value: np.ndarray, q: np.ndarray) -> np.ndarray:
        g = q.astype(float).copy()
        resid = np.nan_to_num(value, nan=0.0) - q[rows, c]
        g[rows[logged], c[logged]] += inv[logged] * resid[logged]
        return g

    score = pseudo(a.reward, a.q_reward)
    cost = pseudo(a.cost, a.q_cost) if a.q_cost is not None and not np.isnan(a.cost).any() else np.zeros((n, k))
    nan = np.full((n, k), np.nan)
    return ReplayData(ids=list(ids), candidates=[policy.strategies[x].candidate for x in a.actions], score=score,
                      cost=cost, prompt_tokens=nan, completion_tokens=nan.copy(), reasoning_tokens=nan.copy(),
                      latency_s=nan.copy(), truncated=np.zeros((n, k), dtype=bool), name="dr-pseudo-outcomes")


def calibrate_logged(cfg: LearnConfig, policy: Policy, policy_path: Path, rows: list[Any], records: list[Any],
                     export: Path) -> Any:
    """Step 3: the calibrated policy (CalibrationResult); LearnError on a degenerate result."""
    from triage.eval.ope_data import bandit_arrays, target_outputs
    from triage.replay.matrix import ReplayData

    outputs, source = target_outputs(rows, policy, str(policy_path))
    by_id = {r.record.id: o for r, o in zip(rows, outputs, strict=True)}
    label = f"{export} (logged bandit data, {len(rows)} queries)"
    if cfg.objective.tier_shares is not None:
        data = ReplayData.from_records(records, name=export.stem)
        result = calibrate_tier_shares(policy, data, by_id, cfg.objective.tier_shares, data_label=label,
                                       outputs_label=source, command=cfg.command)
    else:
        view = bandit_arrays(rows, policy, str(policy_path), reward_model="fitted", seed=cfg.seed, outputs=outputs)
        data = dr_pseudo_data(view, policy, [r.record.id for r in rows])
        result = calibrate(policy, data, by_id, cfg.objective, data_label=label,
                           outputs_label=source + "; scores and costs: doubly-robust pseudo-outcomes",
                           command=cfg.command)
    reason = degenerate_reason(result, cfg.objective)
    if reason and not cfg.allow_degenerate:
        raise LearnError(reason)
    return result


def ope(policy: Policy, policy_path: Path, rows: list[Any], cfg: LearnConfig) -> dict[str, Any]:
    """Step 4: IPS / SNIPS / DR estimates of ``policy`` on the logged rows (SupportError: one line)."""
    from triage.eval.ope import check_support, estimate
    from triage.eval.ope_data import bandit_arrays

    view = bandit_arrays(rows, policy, str(policy_path), reward_model="fitted", seed=cfg.seed)
    check_support(view.arrays, cfg.support_tolerance, policy.name)
    res = estimate(view.arrays, n_boot=cfg.n_boot, seed=cfg.seed, reward_model=view.reward_model)
    res.notes[:0] = view.notes
    return {"policy": policy.name, "version": policy.version, "probe_outputs": view.probe_source, **res.to_json()}


def compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, bool | None]:
    """Claim a change only where the DR intervals do not overlap (accuracy first, then cost)."""
    parts, verdicts, claimed = [], [], []
    for metric, better_high in (("accuracy", True), ("cost", False)):
        o, n = old["estimators"]["dr"][metric], new["estimators"]["dr"][metric]
        if o["value"] is None or n["value"] is None or not o["ci"] or not n["ci"]:
            parts.append(f"{metric}: not estimated")
            continue
        fmt = (lambda v: f"{v:.3f}") if metric == "accuracy" else (lambda v: f"${v:.4g}")
        desc = f"{metric} {fmt(o['value'])} [{fmt(o['ci'][0])}, {fmt(o['ci'][1])}] -> {fmt(n['value'])} " \
               f"[{fmt(n['ci'][0])}, {fmt(n['ci'][1])}]"
        if n["ci"][0] > o["ci"][1]:
            verdicts.append(better_high)
            claimed.append(metric)
            parts.append(desc + (" (better)" if better_high else " (worse)"))
        elif n["ci"][1] < o["ci"][0]:
            verdicts.append(not better_high)
            claimed.append(metric)
            parts.append(desc + (" (worse)" if better_high else " (better)"))
        else:
            parts.append(desc + " (intervals overlap: no difference claimed)")
    improved: bool | None = None
    if verdicts and all(verdicts):
        improved = True
    elif verdicts and not any(verdicts):
        improved = False
    # "better" on cost alone must not read as better on accuracy too: name what the claim rests on
    rest = [m for m in ("accuracy", "cost") if m not in claimed]
    scope = f" in {' and '.join(claimed)}, no claim on {' and '.join(rest)}" if rest else ""
    tail = {True: f"the new version is better{scope}", False: f"the new version is worse{scope}",
            None: "no improvement claimed (DR 95% intervals overlap or disagree)"}[improved]
    return "; ".join(parts) + f" - {tail}", improved


def split_holdout(records: list[Any], share: float) -> tuple[list[Any], list[Any]]:
    """(fit, holdout) by a hash of each query id: the same query (a shadow row with its primary)
    always falls on the same side.

    The OPE report must not be computed on the rows the probe and the knob were chosen on: the
    calibration picks the setting whose estimate is highest, noise included, and the same rows
    would then report that noise as accuracy (a winner's curse; measured in the learning-loop bench)."""
    import hashlib

    from triage.probes.bandit import query_id

    if share <= 0:
        return list(records), list(records)
    cut = int(share * 2**32)
    # A shadow row goes where its query goes (keyed by `shadow_of`): the report's queries are unseen.
    hold = [int.from_bytes(hashlib.sha256(query_id(r).encode()).digest()[:4], "big") < cut for r in records]
    return [r for r, h in zip(records, hold, strict=True) if not h], [r for r, h in zip(records, hold, strict=True) if h]


@dataclass
class FittedVersion:
    """What steps 2-3 wrote: the probe folder, the calibrated policy file and its text."""

    probe: Path
    policy: Path
    text: str
    calibration: Any  # CalibrationResult
    training: dict[str, Any]  # the probe's logged-data training summary (train_probe_on_export)


def fit_version(cfg: LearnConfig, old: Policy, policy_path: Path, new_version: str, records: list[Any],
                export: Path, where: Path, n_all: int) -> FittedVersion:
    """Steps 2-3 on ``records``: a probe in ``where/probe`` and the calibrated policy file
    ``where/<stem>.yaml``."""
    from triage.eval.ope_data import parse_logged

    where.mkdir(parents=True, exist_ok=True)
    split = "all" if len(records) == n_all else f"{len(records)} of {n_all} (the rest held out for the OPE report)"
    header = policy_header(old.name, new_version, len(records), n_all, cfg.ledger)
    probe_dir, training = train_probe_on_export(cfg, old, records, export, where / "probe", split=split)
    raw = read_policy_yaml(policy_path)
    raw["version"] = new_version
    raw["probe"] = str(probe_dir)
    raw.pop("calibration", None)
    path = where / f"{policy_path.stem}.yaml"
    path.write_text(yaml_text(raw, header), encoding="utf-8")
    result = calibrate_logged(cfg, load_policy(path), path, parse_logged(records), records, export)
    raw.update(result.updates)
    text = yaml_text(raw, header)
    path.write_text(text, encoding="utf-8")
    return FittedVersion(probe=probe_dir, policy=path, text=text, calibration=result, training=training)


def check_weighting(value: str) -> None:
    """``weighting`` is one of train_logged_probe's (LearnError otherwise, before any work)."""
    from triage.probes.bandit_training import WEIGHTINGS

    if value not in WEIGHTINGS:
        raise LearnError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {value!r}")


def check_C(value: float | str) -> None:
    """``C`` is ``auto`` or a positive finite number (LearnError otherwise, before any work)."""
    if str(value) == "auto":
        return
    try:
        ok = 0 < float(value) < float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LearnError(f"--C must be a positive number or auto, got {value!r}")


def learn(cfg: LearnConfig) -> LearnResult:
    """Run every step (module docstring); raises a one-line error at the first that fails."""
    from triage.eval.ope_data import parse_logged
    from triage.probes.bandit import is_shadow, query_id
    from triage.replay import read_replay

    check_C(cfg.C)
    check_weighting(cfg.weighting)
    policy_path = cfg.policy
    old = load_policy(policy_path)
    new_version = bump_version(old.version)
    out = (cfg.out or policy_path.parent / f"{policy_path.stem}.learn" / f"v{new_version}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    export = out / "export.jsonl"
    n = export_ledger(cfg.ledger, export)
    records = read_replay(export)
    parse_logged(records)  # refuses records without a propensity
    n_queries = len({query_id(r) for r in records})  # a shadow row is another outcome of its query
    fit, held = split_holdout(records, cfg.holdout)
    if not held or not fit:
        raise LearnError(f"{n_queries} logged queries are too few to keep {cfg.holdout:.0%} out for the report")
    refit = cfg.refit and cfg.holdout > 0
    # With refit, the version the report describes is kept in evaluated/ and the applied one is
    # fitted afterwards on every logged query: bandit data is scarce (one outcome per query), and the
    # held-out 30% would otherwise never train anything (measured in eval/bench/learning_loop.py).
    where = out / "evaluated" if refit else out
    evaluated = fit_version(cfg, old, policy_path, new_version, fit, export, where, n)

    eval_rows = parse_logged(held)
    ope_old = ope(old, policy_path, eval_rows, cfg)
    ope_new = ope(load_policy(evaluated.policy), evaluated.policy, eval_rows, cfg)
    verdict, improved = compare(ope_old, ope_new)
    written, notes = evaluated, []
    if refit:
        written = fit_version(cfg, old, policy_path, new_version, records, export, out, n)
        n_fit = len({query_id(r) for r in fit})
        notes.append(f"the written version is refit on all {n_queries} logged queries; the off-policy report "
                     f"describes the same procedure fitted on the {n_fit} not held out ({evaluated.policy})")
    res = LearnResult(old_version=old.version, new_version=new_version, out=out, export=export, rows=n,
                      probe=written.probe, policy=written.policy, training=written.training,
                      calibration=written.calibration.figures,
                      ope_old=ope_old, ope_new=ope_new, verdict=verdict, improved=improved,
                      holdout_ids=[r.id for r in held if not is_shadow(r)], evaluated_probe=evaluated.probe,
                      evaluated_policy=evaluated.policy, notes=notes)
    if cfg.apply:
        res.backup = apply_policy(policy_path, written.text, old.version)
        res.applied = policy_path
        if cfg.reload_url:
            res.reload = request_reload(cfg.reload_url, cfg.admin_key)
        else:
            res.reload = ("file replaced; a sidecar reloads with `POST /v1/admin/reload`, SIGHUP or "
                          "watch_policies_s; an SDK router with router.reload()")
    (out / "report.json").write_text(json.dumps(res.to_json(), indent=2, default=str), encoding="utf-8")
    log.debug("learned", policy=old.name, old=old.version, new=new_version, rows=n, improved=improved,
             applied=cfg.apply)
    return res
