"""The router core's pure pieces, without a model or a server: what is called next (``CallPlan``),
with which keyword arguments (``build_kwargs``), what it cost (``cost_of``) and what a failure was
(``classify`` / ``falls_back``). Everything goes through public functions, with policies built from
the same YAML dictionaries users write, so the tests survive refactors of the strategy internals.
The end-to-end behaviour (real sidecar, real local model) is in test_router_failures.py and friends.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest
from triage.policies.decide import decide
from triage.policies.loader import policy_from_dict
from triage.policies.policy import Policy
from triage.probes.types import ProbeOutput
from triage.router.core.calls import (
    Attempt,
    Step,
    build_kwargs,
    classify,
    cost_of,
    falls_back,
)
from triage.router.core.errors import TriageProviderError
from triage.router.core.fields import UnsupportedFieldError
from triage.router.core.plan import CallPlan

from triage.errors import ConfigError

EASY = ProbeOutput(tier_probs={"easy": 0.8, "normal": 0.15, "hard": 0.05}, probe_version="unit")
HARD = ProbeOutput(tier_probs={"easy": 0.05, "normal": 0.15, "hard": 0.8}, probe_version="unit")
REQ = httpx.Request("POST", "http://upstream.invalid/v1/chat/completions")


def _policy(strategies: dict[str, dict[str, Any]], tiers: dict[str, str], **extra: Any) -> Policy:
    obj: dict[str, Any] = {"name": "unit", "version": 1, "probe": "default", "strategies": strategies,
                           "tiers": tiers, "rule": {"type": "thresholds"}}
    obj.update(extra)
    return policy_from_dict(obj)


def _two_tier(cheap: dict[str, Any] | None = None, big: dict[str, Any] | None = None, **extra: Any) -> Policy:
    return _policy({"cheap": {"model": "openai/gpt-4o-mini", "max_tokens": 64, **(cheap or {})},
                    "big": {"model": "openai/gpt-4o", "max_tokens": 1024, **(big or {})}},
                   {"easy": "cheap", "normal": "cheap", "hard": "big"}, **extra)


def _status_error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    return cls("upstream said no", response=httpx.Response(status, request=REQ), body=None)


def _answer(tokens: list[tuple[float, list[float]]]) -> dict[str, Any]:
    content = [{"logprob": lp, "top_logprobs": [{"logprob": a} for a in alts]} for lp, alts in tokens]
    return {"choices": [{"message": {"content": "x"}, "finish_reason": "stop", "logprobs": {"content": content}}]}


# ---- CallPlan: fallback -------------------------------------------------------------------------


def test_a_provider_failure_falls_back_once_then_raises_naming_the_fallback() -> None:
    policy = _two_tier(fallback="big")
    plan = CallPlan(policy, decide(policy, EASY), request_id="r1")
    first = plan.first()
    assert (first.strategy, first.reason, first.max_tokens) == ("cheap", "primary", 64)
    attempt = Attempt("cheap", "openai/gpt-4o-mini", "primary")
    nxt = plan.failed(first, attempt, openai.APIConnectionError(request=REQ))
    assert attempt.error_kind == "connection"
    assert (nxt.strategy, nxt.reason, nxt.max_tokens) == ("big", "fallback", 1024)
    with pytest.raises(TriageProviderError, match=r"after the policy's fallback") as info:
        plan.failed(nxt, Attempt("big", "openai/gpt-4o", "fallback"), _status_error(openai.RateLimitError, 429))
    assert info.value.kind == "rate_limit" and info.value.request_id == "r1"


def test_a_bad_request_never_falls_back() -> None:
    policy = _two_tier(fallback="big")
    plan = CallPlan(policy, decide(policy, EASY))
    with pytest.raises(TriageProviderError) as info:
        plan.failed(plan.first(), Attempt("cheap", "m", "primary"), _status_error(openai.BadRequestError, 400))
    assert info.value.kind == "bad_request"


def test_no_fallback_when_the_failing_strategy_is_the_fallback_or_none_is_set() -> None:
    policy = _two_tier(fallback="cheap")
    plan = CallPlan(policy, decide(policy, EASY))
    with pytest.raises(TriageProviderError):
        plan.failed(plan.first(), Attempt("cheap", "m", "primary"), openai.APITimeoutError(request=REQ))
    policy = _two_tier()
    plan = CallPlan(policy, decide(policy, EASY))
    with pytest.raises(TriageProviderError, match="has no fallback strategy"):
        plan.failed(plan.first(), Attempt("cheap", "m", "primary"), openai.APITimeoutError(request=REQ))


# ---- CallPlan: cascade --------------------------------------------------------------------------


def _cascade(**rule: Any) -> Policy:
    return _two_tier(rule={"type": "cascade", "start": "cheap", "escalate_to": "big", "max_mean_entropy": 1.2,
                           "min_token_logprob": -6.0, "first_k_tokens": 4, "top_logprobs": 5, **rule})


def test_cascade_asks_for_logprobs_and_keeps_a_confident_answer() -> None:
    policy = _cascade()
    plan = CallPlan(policy, decide(policy, EASY))
    first = plan.first()
    assert first.want_logprobs == 5
    attempt = Attempt("cheap", "m", "primary")
    assert plan.succeeded(first, attempt, _answer([(-0.01, [-0.01, -6.0, -7.0])] * 3)) is None
    assert attempt.uncertainty is not None and attempt.uncertainty["tokens"] == 3


@pytest.mark.parametrize(("tokens", "why"), [
    ([(math.log(0.2), [math.log(0.2)] * 5)] * 3, "entropy"),  # five equally likely alternatives: ~1.6 nats
    ([(-0.01, [-0.01, -9.0]), (-8.0, [-0.01, -8.0])], "logprob"),  # one very unlikely token
    ([], "empty"),  # no answer at all
])
def test_cascade_escalates_once_on_uncertainty(tokens: list[tuple[float, list[float]]], why: str) -> None:
    policy = _cascade()
    plan = CallPlan(policy, decide(policy, EASY))
    first, attempt = plan.first(), Attempt("cheap", "m", "primary")
    nxt = plan.succeeded(first, attempt, _answer(tokens))
    assert nxt is not None and (nxt.strategy, nxt.reason, nxt.max_tokens) == ("big", "escalation", 1024)
    assert attempt.escalated_because == why
    # the escalated step is final even when it is uncertain too
    assert plan.succeeded(nxt, Attempt("big", "m", "escalation"), _answer(tokens)) is None


def test_cascade_truncation_escalates_and_the_skip_threshold_goes_straight_to_the_target() -> None:
    policy = _cascade(skip_threshold=0.7)
    plan = CallPlan(policy, decide(policy, EASY))
    attempt = Attempt("cheap", "m", "primary", truncated=True)
    nxt = plan.succeeded(plan.first(), attempt, _answer([(-0.01, [-0.01])]))
    assert nxt is not None and nxt.strategy == "big" and attempt.escalated_because == "truncated"
    hard = CallPlan(policy, decide(policy, HARD))
    step = hard.first()
    assert (step.strategy, step.want_logprobs) == ("big", None)


# ---- CallPlan: truncation -----------------------------------------------------------------------


def test_truncation_retry_happens_once_with_the_retry_budget() -> None:
    policy = _two_tier(cheap={"on_truncation": "retry", "retry_max_tokens": 256})
    plan = CallPlan(policy, decide(policy, EASY))
    first = plan.first()
    attempt = Attempt("cheap", "m", "primary", truncated=True)
    retry = plan.succeeded(first, attempt, _answer([]))
    assert retry is not None and (retry.strategy, retry.reason, retry.max_tokens) == ("cheap", "retry", 256)
    assert attempt.escalated_because == "truncated"
    assert plan.succeeded(retry, Attempt("cheap", "m", "retry", truncated=True), _answer([])) is None


def test_truncation_escalates_to_the_next_harder_tier_once_and_accept_keeps_it() -> None:
    policy = _two_tier(cheap={"on_truncation": "escalate"}, big={"on_truncation": "escalate"})
    plan = CallPlan(policy, decide(policy, EASY))
    nxt = plan.succeeded(plan.first(), Attempt("cheap", "m", "primary", truncated=True), _answer([]))
    assert nxt is not None and (nxt.strategy, nxt.reason, nxt.max_tokens) == ("big", "escalation", 1024)
    # the top tier has nowhere to go: its truncated answer is kept
    assert plan.succeeded(nxt, Attempt("big", "m", "escalation", truncated=True), _answer([])) is None
    accept = _two_tier()
    plan = CallPlan(accept, decide(accept, EASY))
    assert plan.succeeded(plan.first(), Attempt("cheap", "m", "primary", truncated=True), _answer([])) is None


# ---- build_kwargs -------------------------------------------------------------------------------


def _kwargs(strategy: dict[str, Any], caller: dict[str, Any], max_tokens: int | None = 100) -> dict[str, Any]:
    policy = _policy({"s": {"model": "openai/gpt-4o-mini", **strategy}}, {"easy": "s", "normal": "s", "hard": "s"})
    return build_kwargs(policy.strategies["s"], Step("s", "primary", max_tokens),
                        [{"role": "user", "content": "hi"}], caller)


@pytest.mark.parametrize(("step_max", "caller_max", "sent"), [(100, 500, 100), (100, 40, 40), (None, 70, 70),
                                                              (None, None, None)])
def test_a_callers_max_tokens_only_tightens_the_budget(step_max: int | None, caller_max: int | None,
                                                       sent: int | None) -> None:
    caller = {} if caller_max is None else {"max_tokens": caller_max}
    assert _kwargs({}, caller, step_max).get("max_tokens") == sent


@pytest.mark.parametrize(("caller_timeout", "sent"), [(None, 30.0), (300, 30.0), (5, 5.0)])
def test_a_callers_timeout_only_shortens_the_strategys(caller_timeout: float | None, sent: float) -> None:
    caller = {} if caller_timeout is None else {"timeout": caller_timeout}
    kw = _kwargs({"timeout_s": 30}, caller)
    assert kw["timeout"] == sent
    assert kw["num_retries"] == 0 and kw["max_retries"] == 0  # the policy's fallback is the retry


def test_the_strategy_wins_on_temperature_and_stop_and_the_caller_fills_the_rest() -> None:
    caller = {"temperature": 0.9, "stop": ["caller"], "top_p": 0.5, "seed": 7, "model": "evil/model"}
    kw = _kwargs({"temperature": 0.0, "stop": ["END"], "system_prompt": "Be brief."}, caller)
    assert (kw["temperature"], kw["stop"], kw["top_p"], kw["seed"]) == (0.0, ["END"], 0.5, 7)
    assert kw["model"] == "openai/gpt-4o-mini"  # the policy picks the model, never the caller
    assert kw["messages"][0] == {"role": "system", "content": "Be brief."}
    assert _kwargs({}, {"temperature": 0.9})["temperature"] == 0.9  # unset in the strategy: the caller's


@pytest.mark.parametrize("field", ["api_base", "api_key", "fallbacks", "extra_headers", "mock_response",
                                   "service_tier"])
def test_caller_fields_outside_the_allowlist_are_refused_by_name(field: str) -> None:
    with pytest.raises(UnsupportedFieldError) as info:
        _kwargs({}, {field: "x"})
    assert info.value.field == field


def test_dropped_fields_never_reach_the_call_and_keys_come_from_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    kw = _kwargs({"api_base": "http://127.0.0.1:9/v1"}, {"store": True, "metadata": {"a": 1}})
    assert "store" not in kw and "metadata" not in kw
    assert kw["api_key"] == "triage-no-key"  # never the provider's default key from the environment
    monkeypatch.delenv("UNIT_KEY", raising=False)
    with pytest.raises(ConfigError, match="UNIT_KEY"):
        _kwargs({"api_key_env": "UNIT_KEY"}, {})
    monkeypatch.setenv("UNIT_KEY", "sk-unit")
    assert _kwargs({"api_key_env": "UNIT_KEY"}, {})["api_key"] == "sk-unit"


# ---- cost_of ------------------------------------------------------------------------------------


def _strategy(**fields: Any) -> Any:
    return _policy({"s": fields}, {"easy": "s", "normal": "s", "hard": "s"}).strategies["s"]


def test_cost_uses_the_price_override_before_litellms_figure() -> None:
    s = _strategy(model="openai/gpt-4o-mini", price={"input_per_mtok": 1.0, "output_per_mtok": 4.0})
    assert cost_of(s, 1_000_000, 500_000, {"response_cost": 99.0}) == pytest.approx(3.0)
    assert cost_of(s, None, None) is None  # no usage reported: unknown, not free


def test_local_models_cost_nothing_and_unknown_models_are_unknown() -> None:
    assert cost_of(_strategy(model="local/smollm2-135m"), 100, 100) == 0.0
    unknown = _strategy(model="openai/no-such-model-in-the-cost-map")
    assert cost_of(unknown, 100, 100) is None
    # litellm's own figure is never read (issue 16): Triage's price table on both paths, or unknown
    assert cost_of(unknown, 100, 100, {"response_cost": 0.25}) is None
    known = cost_of(_strategy(model="openai/gpt-4o-mini"), 1000, 1000)
    assert known is not None and known > 0.0


# ---- classify / falls_back ----------------------------------------------------------------------


def _wrapped_connect_error() -> Exception:
    try:
        try:
            raise httpx.ConnectError("connection refused", request=REQ)
        except httpx.ConnectError as inner:
            raise _status_error(openai.InternalServerError, 500) from inner
    except openai.InternalServerError as outer:
        return outer


@pytest.mark.parametrize(("make", "kind", "status"), [
    (lambda: openai.APITimeoutError(request=REQ), "timeout", None),
    (lambda: openai.APIConnectionError(request=REQ), "connection", None),
    (lambda: _status_error(openai.AuthenticationError, 401), "auth", 401),
    (lambda: _status_error(openai.PermissionDeniedError, 403), "auth", 403),
    (lambda: _status_error(openai.RateLimitError, 429), "rate_limit", 429),
    (lambda: _status_error(openai.NotFoundError, 404), "not_found", 404),
    (lambda: _status_error(openai.BadRequestError, 400), "bad_request", 400),
    (lambda: _status_error(openai.UnprocessableEntityError, 422), "bad_request", 422),
    (lambda: _status_error(openai.InternalServerError, 503), "server", 503),
    (_wrapped_connect_error, "connection", None),  # litellm's 500 around a refused connection
    (lambda: TimeoutError("read timed out"), "timeout", None),
    (lambda: RuntimeError("something else"), "other", None),
])
def test_classify_names_the_kind_and_keeps_only_real_upstream_statuses(make: Any, kind: str,
                                                                       status: int | None) -> None:
    assert classify(make()) == (kind, status)


def test_only_a_malformed_request_does_not_fall_back() -> None:
    assert not falls_back("bad_request")
    for kind in ("timeout", "connection", "auth", "rate_limit", "context_window", "not_found", "server", "other"):
        assert falls_back(kind), kind
