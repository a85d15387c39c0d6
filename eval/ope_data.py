"""Logged bandit data (``triage ledger export`` rows) read against a target policy for off-policy evaluation.

A ledger export row is a :class:`ReplayRecord` with one outcome, keyed by the strategy that answered,
and a ``logged`` block (docs/sidecar.md): the strategy, its propensity, the strategies the logging
policy gave positive mass (``candidates``), the probe output it decided on. The target policy's
``pi(a|x)`` comes from :func:`triage.policies.decide.action_distribution` on *its* probe's output:
the logged output when the logged probe version is the target's, else its probe run on the prompt.

Strategies are matched by name (a new version of a policy keeps its strategy names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from triage.eval.ope import (
    BanditArrays,
    as_columns,
    fitted_mean_model,
    fitted_reward_model,
    probe_features,
)
from triage.policies.decide import action_distribution
from triage.policies.loader import resolve_probe_path
from triage.policies.policy import Policy
from triage.probes.bandit import is_shadow
from triage.probes.types import TIERS, ProbeOutput

from triage.replay.schema import ReplayRecord

REWARD_MODELS = ("probe", "fitted")


class LoggedBlock(BaseModel):
    """The ``logged`` field of a ledger export row (the #15 contract)."""

    model_config = ConfigDict(extra="allow")

    strategy: str = Field(min_length=1)
    candidate: str | None = None
    propensity: float | None = Field(default=None, gt=0.0, le=1.0)
    candidates: list[str] = Field(default_factory=list)
    explored: bool = False
    greedy_strategy: str | None = None
    policy: str = ""
    policy_version: str = ""
    probe_version: str = ""
    tier_probs: dict[str, float] = Field(default_factory=dict)
    success: dict[str, float] = Field(default_factory=dict)
    features: list[float] | None = None


@dataclass
class LoggedRow:
    record: ReplayRecord
    logged: LoggedBlock
    score: float
    cost: float  # NaN: unknown


@dataclass
class TargetView:
    """The bandit arrays plus how they were made (for the report)."""

    arrays: BanditArrays
    probe_source: str  # "logged probe outputs" or "probe <version> run on the prompts"
    reward_model: str
    notes: list[str] = field(default_factory=list)


def parse_logged(records: Sequence[ReplayRecord], *, null_propensity_as_one: bool = False) -> list[LoggedRow]:
    """Validate every record's ``logged`` block; one-line errors name the first bad record."""
    rows: list[LoggedRow] = []
    null = 0
    for rec in records:
        raw = (rec.model_extra or {}).get("logged")
        if not isinstance(raw, dict):
            raise ValueError(f"record {rec.id!r} has no `logged` block: not a ledger export (full-information "
                             "replay data is evaluated with `triage replay evaluate FILE --policy P`)")
        if is_shadow(rec):  # not a decision of the logging policy (the bandit trainer uses it; docs/sdk.md)
            continue
        try:
            block = LoggedBlock.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ValueError(f"record {rec.id!r}: logged.{where}: {first['msg']}") from None
        outcome = rec.outcomes.get(block.strategy)
        if outcome is None:
            if len(rec.outcomes) != 1:
                raise ValueError(f"record {rec.id!r}: no outcome for the logged strategy '{block.strategy}'")
            outcome = next(iter(rec.outcomes.values()))
        if block.propensity is None:
            null += 1
            if null_propensity_as_one:
                block = block.model_copy(update={"propensity": 1.0, "candidates": block.candidates or [block.strategy]})
        rows.append(LoggedRow(rec, block, float(outcome.score),
                              float("nan") if outcome.cost_usd is None else float(outcome.cost_usd)))
    if null and not null_propensity_as_one:
        raise ValueError(f"{null} of {len(records)} logged records have no propensity (routed before propensities "
                         "were logged); --null-propensity-as-one treats them as chosen without exploration")
    return rows


def target_probe_version(policy: Policy, policy_path: str | None) -> str | None:
    """The version on the target probe's card, read without loading the probe (None: no card)."""
    from triage.probes.card import ProbeArtifactError, read_card

    where = resolve_probe_path(policy, policy_path)
    if where == "default":
        from triage.probes.runtime import default_probe_path

        where = str(default_probe_path())
    try:
        card, _ = read_card(where)
    except ProbeArtifactError:
        return None
    return card.probe_version


def target_outputs(rows: Sequence[LoggedRow], policy: Policy, policy_path: str | None) -> tuple[list[ProbeOutput], str]:
    """The target probe's output per row: logged when the logged probe is the target's, else computed."""
    version = target_probe_version(policy, policy_path)
    if version is not None and all(r.logged.probe_version == version and r.logged.tier_probs for r in rows):
        outs = [ProbeOutput(tier_probs=dict(r.logged.tier_probs), success=dict(r.logged.success), probe_version=version)
                for r in rows]
        return outs, f"logged outputs of probe {version}"
    empty = sum(1 for r in rows if not r.record.prompt_text().strip())
    if empty:
        raise ValueError(f"{empty} of {len(rows)} logged records have no prompt and were probed by another probe "
                         f"than the target's ({version or 'unknown'}): export with prompts to evaluate this policy")
    from triage.router.core.messages import probe_text
    from triage.router.core.probing import ProbeRunner

    runner = ProbeRunner(policy, policy_path)
    texts = [probe_text(r.record.messages()) for r in rows]
    outs: list[ProbeOutput] = []
    for start in range(0, len(texts), 64):
        outs.extend(runner.predict_many(texts[start:start + 64]))
    return outs, f"probe {runner.probe.version} run on the prompts"


def bandit_arrays(rows: Sequence[LoggedRow], policy: Policy, policy_path: str | None, *,
                  reward_model: str = "probe", folds: int = 5, seed: int = 0,
                  outputs: Sequence[ProbeOutput] | None = None) -> TargetView:
    """``rows`` against ``policy``: pi, weights' inputs, support, and the DR reward/cost models."""
    if reward_model not in REWARD_MODELS:
        raise ValueError(f"unknown reward model {reward_model!r}; use {' or '.join(REWARD_MODELS)}")
    if not rows:
        raise ValueError("no logged records")
    actions = list(policy.strategies)
    logged_names = {r.logged.strategy for r in rows}
    if not logged_names & set(actions):
        raise ValueError(f"policy '{policy.name}' has none of the logged strategies ({', '.join(sorted(logged_names))}); "
                         f"its strategies: {', '.join(actions)} (strategies are matched by name)")
    if outputs is None:
        outputs, source = target_outputs(rows, policy, policy_path)
    else:
        source = "given probe outputs"
    col = {a: j for j, a in enumerate(actions)}
    pi = as_columns(actions, [action_distribution(policy, out) for out in outputs])
    chosen = np.array([col.get(r.logged.strategy, -1) for r in rows], dtype=np.int64)
    supported = np.array([[a == r.logged.strategy or a in r.logged.candidates for a in actions] for r in rows], dtype=bool)
    reward = np.array([r.score for r in rows])
    cost = np.array([r.cost for r in rows])
    notes: list[str] = []
    labels = [policy.strategies[a].candidate for a in actions]
    used = reward_model
    if reward_model == "probe":
        missing = sorted({lab for lab in labels if any(lab not in out.success for out in outputs)})
        if missing:
            notes.append(f"probe has no success label for {', '.join(missing)}: DR uses the fitted reward model")
            used = "fitted"
    if used == "probe":
        q_reward = as_columns(labels, [out.success for out in outputs])
    else:
        names = sorted({k for out in outputs for k in out.success})
        feats = probe_features(as_columns(names, [out.success for out in outputs]),
                               as_columns(list(TIERS), [out.tier_probs for out in outputs]))
        q_reward = fitted_reward_model(feats, chosen, reward, len(actions), folds=folds, seed=seed)
    q_cost = fitted_mean_model(chosen, cost, len(actions), folds=folds, seed=seed)
    arrays = BanditArrays(actions=actions, chosen=chosen, propensity=np.array([r.logged.propensity for r in rows], dtype=float),
                          reward=reward, cost=cost, pi=pi, supported=supported, q_reward=q_reward, q_cost=q_cost)
    return TargetView(arrays, source, used, notes)

