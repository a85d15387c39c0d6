"""What to call next after each call of a request: a small state machine, free of I/O.

The sync, async and streaming drivers in :mod:`triage.router.core.router` all follow it, so escalation,
retry and fallback behave the same whichever way a request is made. Rules, in order:

1. a provider failure -> another deployment of the same strategy when the failure is the endpoint's
   (:mod:`triage.router.core.deployments`), else the next untried strategy of the fallback chain (the
   failing strategy's ``fallbacks``, else the policy's ``fallback``; each at most once), else
   :class:`TriageProviderError` naming what was tried. A strategy whose deployments are all cooling
   down is skipped the same way (called anyway when nothing else is left);
2. the cheap step of a cascade -> escalate when :func:`triage.policies.decide.should_escalate` says so;
3. a truncated answer -> the strategy's ``on_truncation``: accept, retry once with
   ``retry_max_tokens``, or escalate (each strategy at most once, so it always terminates).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from triage.ids import new_request_id
from triage.policies.decide import Decision, should_escalate, token_uncertainty, truncation_action
from triage.policies.policy import Policy
from triage.router.core.calls import (
    Attempt,
    Step,
    classify,
    falls_back,
    provider_error,
    token_logprobs,
    tool_calls_of,
)
from triage.router.core.deployments import DeploymentPool, deployment_fault


class CallPlan:
    def __init__(self, policy: Policy, decision: Decision, request_id: str | None = None,
                 deployments: DeploymentPool | None = None) -> None:
        self.policy = policy
        self.decision = decision
        self.request_id = request_id
        # Without the router's pool (a bare plan), cooldowns last this request only.
        self.pool = deployments if deployments is not None else DeploymentPool()
        self._seed = request_id or new_request_id()  # the deployment order is reproducible per request
        self.attempts: list[Attempt] = []
        self._visited: set[str] = set()
        self._retried: set[str] = set()
        self._failed: set[str] = set()  # strategies that failed (or were skipped) in this request
        self._skipped: list[str] = []  # strategies skipped: every deployment cooling down
        self._fallen_back: set[str] = set()  # chain entries used (each at most once)
        self._chain: list[str] = []
        self._chain_of: str | None = None
        self._tried: dict[str, set[int]] = {}  # deployments that failed, per strategy

    def first(self) -> Step:
        d = self.decision
        want = d.cascade.top_logprobs if d.cascade is not None else None
        step = Step(d.strategy, "primary", d.max_tokens, d.reasoning_effort, want_logprobs=want)
        self._visited.add(step.strategy)
        return self._placed(step)

    def _step_for(self, name: str, reason: str, max_tokens: int | None) -> Step:
        self._visited.add(name)
        return self._placed(Step(name, reason, max_tokens, self.policy.reasoning_effort_for(name, None)))

    def _placed(self, step: Step) -> Step:
        """``step`` with the deployment to call; a strategy whose deployments all cool down passes
        the request on to the next fallback, and is called anyway when there is none."""
        strategy = self.policy.strategies[step.strategy]
        if strategy.deployments is None:
            return step
        tried = self._tried.setdefault(step.strategy, set())
        index = self.pool.choose(strategy, self._seed, tried)
        if index is None:
            self._failed.add(step.strategy)
            nxt = self._next_in_chain(step.strategy, step.reason)
            if nxt is not None:
                self._skipped.append(step.strategy)
                return nxt
            self._failed.discard(step.strategy)
            index = self.pool.last_resort(strategy, tried)
        return replace(step, deployment=index)

    def _next_in_chain(self, name: str, reason: str) -> Step | None:
        """The next untried strategy of the fallback chain; a failure of anything but a fallback
        starts the failing strategy's own chain."""
        if reason != "fallback" or self._chain_of is None:
            self._chain_of = name
            self._chain = self.policy.fallback_chain(name)
        for target in self._chain:
            if target in self._fallen_back or target in self._failed or target == self._chain_of:
                continue
            self._fallen_back.add(target)
            return self._step_for(target, "fallback", self.policy.max_tokens_for(target, self.decision.tier))
        return None

    def failed(self, step: Step, attempt: Attempt, exc: BaseException) -> Step:
        """Next step after a provider failure, or raise TriageProviderError."""
        kind, _ = classify(exc)
        attempt.error_kind = kind
        strategy = self.policy.strategies[step.strategy]
        if step.deployment is not None:
            tried = self._tried.setdefault(step.strategy, set())
            tried.add(step.deployment)
            if deployment_fault(kind):
                self.pool.failed(strategy, step.deployment)
                index = self.pool.choose(strategy, self._seed, tried)
                if index is not None:
                    return replace(step, deployment=index)
        self._failed.add(step.strategy)
        if falls_back(kind):
            nxt = self._next_in_chain(step.strategy, step.reason)
            if nxt is not None:
                return nxt
        raise provider_error(exc, strategy, self.attempts, self._note(step, kind), self.request_id)

    def _note(self, step: Step, kind: str) -> str:
        """What the error adds about the fallback chain: what was tried, or that there is none."""
        counts: dict[str, int] = {}
        for a in self.attempts:
            counts[a.strategy] = counts.get(a.strategy, 0) + 1
        counts.setdefault(step.strategy, 1)  # a bare plan (no execution) keeps no attempts
        tried = ", ".join(f"{name} ({n} deployments)" if n > 1 and self.policy.strategies[name].deployments
                          else name for name, n in counts.items())
        skipped = [s for s in self._skipped if s not in counts]
        cooling = f"; skipped, every deployment cooling down: {', '.join(skipped)}" if skipped else ""
        if self._fallen_back:
            return f" (after the policy's fallback chain; tried: {tried}{cooling})"
        if not falls_back(kind):
            return ""
        if not self.policy.fallback_chain(self._chain_of or step.strategy):
            return f" (the policy has no fallback strategy; tried: {tried})"
        return f" (tried: {tried}{cooling})"

    def deployment_outcome(self, step: Step, error_kind: str | None) -> None:
        """What a streamed call that got past its first chunk tells about its deployment."""
        if step.deployment is None:
            return
        if error_kind is None:
            self.pool.succeeded(step.strategy, step.deployment)
        elif deployment_fault(error_kind):
            self.pool.failed(self.policy.strategies[step.strategy], step.deployment)

    def succeeded(self, step: Step, attempt: Attempt, response: Any) -> Step | None:
        """Next step after an answer, or None when the answer is final."""
        if step.deployment is not None:
            self.pool.succeeded(step.strategy, step.deployment)
        cascade = self.decision.cascade
        if cascade is not None and step.reason == "primary":
            uncertainty = token_uncertainty(token_logprobs(response), cascade.first_k_tokens)
            attempt.uncertainty = uncertainty.model_dump()
            why = should_escalate(cascade, uncertainty, attempt.truncated, calls_tools=bool(tool_calls_of(response)))
            if why is not None and cascade.escalate_to not in self._visited:
                attempt.escalated_because = why
                target = cascade.escalate_to
                return self._step_for(target, "escalation", self.policy.strategies[target].max_tokens)
            if why == "truncated":
                return None  # nowhere left to escalate: keep the truncated answer
        if attempt.truncated:
            action, target, max_tokens = truncation_action(self.policy, step.strategy)
            if action == "retry" and step.strategy not in self._retried:
                self._retried.add(step.strategy)
                attempt.escalated_because = "truncated"
                return Step(step.strategy, "retry", max_tokens, step.reasoning_effort, deployment=step.deployment)
            if action == "escalate" and target is not None and target not in self._visited:
                attempt.escalated_because = "truncated"
                return self._step_for(target, "escalation", max_tokens)
        return None
