"""Replay a policy file exactly: ``--router policy:path=policies/examples/two_model.yaml``.

Each query goes through the same code as a live request in the SDK or the sidecar: the chat is read
into the probe's text by :func:`triage.router.core.messages.probe_text`, the policy's probe runs (self-probe
included) and :func:`triage.policies.decide.decide` picks the strategy. The strategy's ``replay_candidate``
(default: its model) names the replay column that stands for it.

Operating points: by default one, the policy as written. ``points=N`` (N > 1) adds a curve around it
(thresholds shifted together, or lambda on a log grid); ``default`` stays the policy's own setting.

Options: ``path`` (policy file), ``probe`` (override the policy's probe), ``batch`` (queries per
probe call; 1 = one at a time exactly as the SDK does, larger only when the probe is batch-invariant).

What replay cannot show: the cascade's escalation on token-level uncertainty (replay data carries
final answers, not logprobs), so a cascade policy replays its first step (or the skip to the strong
strategy); per-tier token budgets are not applied to the logged answers.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep, register
from triage.policies.decide import Decision, decide
from triage.policies.loader import DEFAULT_POLICY, load_policy
from triage.policies.policy import ExpectedUtilityRule, Policy, ThresholdsRule, TierThresholds
from triage.probes.types import ProbeOutput


def record_messages(data: ReplayData, i: int) -> list[dict[str, Any]]:
    """Row ``i`` as the chat messages a live request would carry."""
    if data.records:
        return data.records[i].messages()
    return [{"role": "user", "content": data.texts[i]}]


@register
class PolicyRouter(ReplayRouter):
    name = "policy"
    learned = False

    def __init__(self, path: str = str(DEFAULT_POLICY), probe: str | None = None, points: int = 1,
                 batch: int = 1) -> None:
        self.path = path
        self.probe = probe
        self.points = points
        self.batch = batch

    @cached_property
    def policy(self) -> Policy:
        policy = load_policy(self.path)
        if self.probe is not None:
            policy = policy.model_copy(update={"probe": self.probe})
        return policy

    @cached_property
    def _runner(self) -> Any:
        from triage.router.core.probing import ProbeRunner

        return ProbeRunner(self.policy, None if self.probe is not None else self.path)

    def probe_outputs(self, data: ReplayData, rows: np.ndarray) -> list[ProbeOutput]:
        """The probe's output for each row, computed as a live request would compute it."""
        from triage.router.core.messages import probe_text

        runner = self._runner
        messages = [record_messages(data, int(i)) for i in rows]
        texts = [probe_text(m) for m in messages]
        if self.batch <= 1:
            return [runner.predict(t) for t in texts]
        out: list[ProbeOutput] = []
        for start in range(0, len(texts), self.batch):
            out.extend(runner.predict_many(texts[start:start + self.batch]))
        return out

    def decisions(self, data: ReplayData, rows: np.ndarray, outputs: list[ProbeOutput] | None = None,
                  policy: Policy | None = None) -> list[Decision]:
        outputs = outputs if outputs is not None else self.probe_outputs(data, rows)
        policy = policy or self.policy
        return [decide(policy, out) for out in outputs]

    def _columns(self, data: ReplayData, policy: Policy) -> dict[str, int]:
        cols = {}
        for name, strategy in policy.strategies.items():
            if strategy.candidate in data.candidates:
                cols[name] = data.candidates.index(strategy.candidate)
        return cols

    def _variants(self) -> tuple[list[Policy], np.ndarray, int, str]:
        """Policies at each operating point, their knob values, the default index, the knob's name."""
        policy = self.policy
        rule = policy.rule
        if self.points <= 1 or not isinstance(rule, ThresholdsRule | ExpectedUtilityRule):
            return [policy], np.array([0.0]), 0, "policy"
        if isinstance(rule, ThresholdsRule):
            t = rule.thresholds
            shifts = np.unique(np.concatenate([np.linspace(-1.0, 1.0, self.points), [0.0]]))
            variants = []
            for s in shifts:
                th = TierThresholds(normal=float(np.clip(t.normal + s, 0, 1)), hard=float(np.clip(t.hard + s, 0, 1)))
                variants.append(policy.model_copy(update={"rule": rule.model_copy(update={"thresholds": th})}))
            return variants, shifts, int(np.flatnonzero(shifts == 0.0)[0]), "threshold_shift"
        lam = rule.lambda_
        grid = np.unique(np.concatenate([[0.0, lam], np.logspace(-1, 6, max(self.points - 1, 1))]))
        variants = [policy.model_copy(update={"rule": rule.model_copy(update={"lambda_": float(v)})}) for v in grid]
        return variants, grid, int(np.flatnonzero(grid == lam)[0]), "lambda"

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        outputs = self.probe_outputs(data, rows)
        variants, knobs, default, knob_name = self._variants()
        choices = np.zeros((len(variants), len(rows)), dtype=np.int64)
        for k, policy in enumerate(variants):
            cols = self._columns(data, policy)
            for i, decision in enumerate(self.decisions(data, rows, outputs, policy)):
                if decision.strategy not in cols:
                    cand = policy.strategies[decision.strategy].candidate
                    raise KeyError(
                        f"policy '{policy.name}': strategy '{decision.strategy}' stands for replay candidate "
                        f"'{cand}', which the data does not have (candidates: {', '.join(data.candidates)}); "
                        "set the strategy's replay_candidate"
                    )
                choices[k, i] = cols[decision.strategy]
        return RouterSweep(choices=choices, knobs=knobs, default=default, knob_name=knob_name)
