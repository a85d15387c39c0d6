"""What to call next after each call of a request: a small state machine, free of I/O.

The sync, async and streaming drivers in :mod:`triage.router.core.router` all follow it, so escalation,
retry and fallback behave the same whichever way a request is made. Rules, in order:

1. a provider failure -> the policy's fallback strategy (once), else :class:`TriageProviderError`;
2. the cheap step of a cascade -> escalate when :func:`triage.policies.decide.should_escalate` says so;
3. a truncated answer -> the strategy's ``on_truncation``: accept, retry once with
   ``retry_max_tokens``, or escalate (each strategy at most once, so it always terminates).
"""

from __future__ import annotations

from typing import Any

from triage.policies.decide import Decision, should_escalate, token_uncertainty, truncation_action
from triage.policies.policy import Policy
from triage.router.core.calls import Attempt, Step, classify, falls_back, provider_error, token_logprobs


class CallPlan:
    def __init__(self, policy: Policy, decision: Decision, request_id: str | None = None) -> None:
        self.policy = policy
        self.decision = decision
        self.request_id = request_id
        self.attempts: list[Attempt] = []
        self._visited: set[str] = set()
        self._retried: set[str] = set()
        self._fell_back = False

    def first(self) -> Step:
        d = self.decision
        want = d.cascade.top_logprobs if d.cascade is not None else None
        step = Step(d.strategy, "primary", d.max_tokens, d.reasoning_effort, want_logprobs=want)
        self._visited.add(step.strategy)
        return step

    def _step_for(self, name: str, reason: str, max_tokens: int | None) -> Step:
        self._visited.add(name)
        return Step(name, reason, max_tokens, self.policy.reasoning_effort_for(name, None))

    def failed(self, step: Step, attempt: Attempt, exc: BaseException) -> Step:
        """Next step after a provider failure, or raise TriageProviderError."""
        kind, _ = classify(exc)
        attempt.error_kind = kind
        fallback = self.policy.fallback
        strategy = self.policy.strategies[step.strategy]
        if falls_back(kind) and fallback and not self._fell_back and fallback != step.strategy:
            self._fell_back = True
            return self._step_for(fallback, "fallback", self.policy.max_tokens_for(fallback, self.decision.tier))
        note = ""
        if self._fell_back:
            note = " (after the policy's fallback)"
        elif fallback is None:
            note = " (the policy has no fallback strategy)"
        raise provider_error(exc, strategy, self.attempts, note, self.request_id)

    def succeeded(self, step: Step, attempt: Attempt, response: Any) -> Step | None:
        """Next step after an answer, or None when the answer is final."""
        cascade = self.decision.cascade
        if cascade is not None and step.reason == "primary":
            uncertainty = token_uncertainty(token_logprobs(response), cascade.first_k_tokens)
            attempt.uncertainty = uncertainty.model_dump()
            why = should_escalate(cascade, uncertainty, attempt.truncated)
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
                return Step(step.strategy, "retry", max_tokens, step.reasoning_effort)
            if action == "escalate" and target is not None and target not in self._visited:
                attempt.escalated_because = "truncated"
                return self._step_for(target, "escalation", max_tokens)
        return None
