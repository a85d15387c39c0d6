"""One call of one strategy through litellm: the keyword arguments, and what came back.

Kept apart from the router so the sidecar can build the same calls. Nothing here decides anything.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from triage.policies.pricing import import_litellm, token_price
from triage.policies.strategy import Strategy
from triage.router.core.errors import TriageProviderError, UpstreamProtocolError
from triage.router.core.fields import caller_fields
from triage.errors import ConfigError
from triage.scrub import scrub_text, scrub_value

# Per-call defaults that keep a failing provider from hanging a request: no hidden client retries
# (the policy's fallback is the retry), a bounded timeout (the strategy's timeout_s).
_DEFAULTS: dict[str, Any] = {"num_retries": 0, "max_retries": 0}
# Caller keyword arguments the router owns or interprets itself.
_ROUTER_KWARGS = frozenset({"model", "messages", "stream", "metadata_triage"})
# The key sent to a strategy's own api_base when it names no api_key_env: never the provider's
# default key from the environment (litellm would send OPENAI_API_KEY to a self-hosted server).
NO_KEY = "triage-no-key"


@dataclass
class Step:
    """A planned call: which strategy, why, and with which budget."""

    strategy: str
    reason: str  # primary | retry | escalation | fallback (the ledger's attempt kinds)
    max_tokens: int | None
    reasoning_effort: str | None = None
    want_logprobs: int | None = None  # top-k alternatives requested (cascade), None = no logprobs
    deployment: int | None = None  # index into the strategy's deployments (None: it has none)


@dataclass
class Attempt:
    """One call made while answering a request (escalations, retries and fallbacks each add one)."""

    strategy: str
    model: str
    reason: str
    max_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float = 0.0
    finish_reason: str | None = None
    truncated: bool = False
    error: str | None = None
    error_kind: str | None = None
    escalated_because: str | None = None
    uncertainty: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        # Provider error text can quote the key it was sent (receipts, exceptions, the ledger).
        return scrub_value(asdict(self))


def supports_reasoning(model: str) -> bool:
    litellm = import_litellm()
    try:
        return bool(litellm.supports_reasoning(model=model))
    except Exception:
        return False


def build_kwargs(strategy: Strategy, step: Step, messages: list[dict[str, Any]],
                 caller: dict[str, Any]) -> dict[str, Any]:
    """litellm keyword arguments for ``step``; the caller's OpenAI fields pass through.

    Only the fields of :mod:`triage.router.core.fields` are taken from the caller (anything else raises
    :class:`~triage.router.core.fields.UnsupportedFieldError`), so the key and the destination always come
    from the strategy. The strategy wins on what it sets (temperature, stop); a caller's
    ``max_tokens`` can only tighten the budget and a caller's ``timeout`` only shorten the strategy's.
    """
    caller = caller_fields(caller)
    kind = strategy.kind
    kwargs: dict[str, Any] = dict(_DEFAULTS)
    kwargs.update(strategy.extra)
    kwargs.update({k: v for k, v in caller.items() if k not in _ROUTER_KWARGS})
    # Where the call goes and with which key: the strategy's, or the chosen deployment's (never the caller's).
    model, api_base, api_key_env = strategy.model, strategy.api_base, strategy.api_key_env
    if step.deployment is not None:
        assert strategy.deployments is not None
        dep = strategy.deployments[step.deployment]
        model, api_base, api_key_env = dep.model or strategy.model, dep.api_base, dep.api_key_env
    kwargs["model"] = model
    kwargs["messages"] = strategy.apply_to_messages(messages)
    caller_max = caller.get("max_tokens")
    budget = step.max_tokens
    if caller_max is not None:
        budget = int(caller_max) if budget is None else min(budget, int(caller_max))
    if budget is not None:
        kwargs["max_tokens"] = budget
    if strategy.temperature is not None:
        kwargs["temperature"] = strategy.temperature
    if strategy.stop is not None:
        kwargs["stop"] = list(strategy.stop)
    if api_base is not None:
        kwargs["api_base"] = api_base
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:  # unset since start-up: never let litellm pick another provider's key
            raise ConfigError(f"strategy '{strategy.name}': environment variable {api_key_env} "
                              "(api_key_env) is not set")
        kwargs["api_key"] = key
    elif api_base is not None and not kind.is_local:
        kwargs["api_key"] = NO_KEY
    timeout = float(strategy.timeout_s)
    if caller.get("timeout") is not None:
        timeout = min(timeout, float(caller["timeout"]))
    kwargs["timeout"] = timeout
    if step.reasoning_effort is not None and (kind.is_local or supports_reasoning(model)):
        kwargs["reasoning_effort"] = step.reasoning_effort
    else:
        kwargs.pop("reasoning_effort", None)
    kwargs.update(kind.call_kwargs(strategy.model, strategy.options))  # e.g. a token-routed pair's options
    if step.want_logprobs is not None:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = step.want_logprobs
    return kwargs


# -- reading responses -----------------------------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def usage_of(usage: Any) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, reasoning) tokens; completion includes hidden reasoning tokens."""
    if usage is None:
        return None, None, None
    details = _get(usage, "completion_tokens_details")
    # 0 is recorded as None ("no hidden reasoning"): litellm invents reasoning_tokens=0 on every
    # streamed usage while a non-streamed answer (and the direct path) has none, and the record of
    # an answer must not depend on how it was asked for or which client made the call.
    reasoning = _get(details, "reasoning_tokens") or None
    return _get(usage, "prompt_tokens"), _get(usage, "completion_tokens"), reasoning


def cost_of(strategy: Strategy, prompt_tokens: int | None, completion_tokens: int | None,
            hidden: dict[str, Any] | None = None) -> float | None:
    """USD of one call from Triage's own price table (:func:`~triage.policies.pricing.token_price`:
    the strategy's price override, its kind's price rule - 0 for local models - or the cost map's
    per-token prices, looked up once per model); None when nothing knows.

    litellm's own ``response_cost`` is never read: the direct path has none, and both paths must
    price the same answer alike (``hidden`` is kept for the kinds' per-attempt metadata callers).
    """
    price = token_price(strategy)
    if not price.known or (prompt_tokens is None and completion_tokens is None):
        return None
    return price.cost(prompt_tokens or 0, completion_tokens or 0)


def token_logprobs(response: Any) -> list[tuple[float, list[float], float | None]]:
    """``(logprob of the token, logprobs of its top alternatives, exact entropy if the provider
    reports one)`` for each generated token."""
    choices = _get(response, "choices") or []
    if not choices:
        return []
    logprobs = _get(choices[0], "logprobs")
    content = _get(logprobs, "content") or []
    out = []
    for item in content:
        lp = _get(item, "logprob")
        if lp is None:
            continue
        alts = [float(_get(a, "logprob")) for a in (_get(item, "top_logprobs") or []) if _get(a, "logprob") is not None]
        entropy = _get(item, "entropy")
        out.append((float(lp), alts, float(entropy) if isinstance(entropy, int | float) else None))
    return out


def message_text(response: Any) -> str:
    choices = _get(response, "choices") or []
    if not choices:
        return ""
    return _get(_get(choices[0], "message"), "content") or ""


def tool_calls_of(response: Any) -> list[Any]:
    """The first choice's tool calls (empty when the answer is text)."""
    choices = _get(response, "choices") or []
    if not choices:
        return []
    return list(_get(_get(choices[0], "message"), "tool_calls") or [])


def finish_reason_of(response: Any) -> str | None:
    choices = _get(response, "choices") or []
    return _get(choices[0], "finish_reason") if choices else None


# -- classifying provider failures -----------------------------------------------------------------

_KINDS: tuple[tuple[str, str], ...] = (
    ("UpstreamProtocolError", "server"),
    ("Timeout", "timeout"),
    ("APITimeoutError", "timeout"),
    ("AuthenticationError", "auth"),
    ("PermissionDeniedError", "auth"),
    ("RateLimitError", "rate_limit"),
    ("ContextWindowExceededError", "context_window"),
    ("NotFoundError", "not_found"),
    ("BadRequestError", "bad_request"),
    ("UnprocessableEntityError", "bad_request"),
    ("InternalServerError", "server"),
    ("ServiceUnavailableError", "server"),
    ("BadGatewayError", "server"),
    ("APIConnectionError", "connection"),
)


def is_provider_error(exc: BaseException) -> bool:
    """Errors raised by a provider call (litellm maps them all onto openai's exception classes)."""
    import httpx
    import openai

    return isinstance(exc, openai.OpenAIError | httpx.HTTPError | TimeoutError | ConnectionError
                      | UpstreamProtocolError)


def _transport_kind(exc: BaseException) -> str | None:
    """``timeout`` or ``connection`` when a transport error is among the causes of ``exc``."""
    import httpx

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < 16:
        seen.add(id(cur))
        names = {c.__name__ for c in type(cur).__mro__}
        if isinstance(cur, httpx.TimeoutException | TimeoutError) or "APITimeoutError" in names:
            return "timeout"
        if isinstance(cur, httpx.NetworkError | ConnectionError) or "APIConnectionError" in names:
            return "connection"
        cur = cur.__cause__ or cur.__context__
    return None


def classify(exc: BaseException) -> tuple[str, int | None]:
    """(kind, HTTP status) of a provider failure."""
    names = [c.__name__ for c in type(exc).__mro__]
    kind = "other"
    for name, k in _KINDS:
        if name in names:
            kind = k
            break
    if kind == "other" and isinstance(exc, TimeoutError):
        kind = "timeout"
    if kind in ("server", "other"):
        # litellm reports a refused or dropped connection as InternalServerError (status 500);
        # the transport error it wraps says the upstream never answered.
        kind = _transport_kind(exc) or kind
    status = getattr(exc, "status_code", None)
    if kind == "other" and isinstance(status, int) and status >= 500:
        kind = "server"
    if kind in ("timeout", "connection"):
        status = None  # litellm labels these 408/500 itself; the upstream never answered
    return kind, status if isinstance(status, int) else None


def falls_back(kind: str) -> bool:
    """Whether the policy's fallback should answer after this kind of failure.

    A malformed request fails on every provider alike; everything else (timeouts, outages, a bad
    key, an exhausted quota, a context window too small) is specific to the provider.
    """
    return kind != "bad_request"


def provider_error(exc: BaseException, strategy: Strategy, attempts: list[Attempt],
                   fallback_note: str = "", request_id: str | None = None) -> TriageProviderError:
    kind, status = classify(exc)
    # The provider's text can quote the key it was sent: scrubbed here, and left out of `summary`.
    detail = scrub_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
    if len(detail) > 300:
        detail = detail[:300] + "..."
    where = f"strategy '{strategy.name}' (model {strategy.model})"
    status_txt = f" HTTP {status}" if status else ""
    summary = f"provider call failed for {where}: {kind}{status_txt}{fallback_note}"
    return TriageProviderError(f"{summary}: {detail}", kind=kind, status_code=status, strategy=strategy.name,
                               model=strategy.model, attempts=[a.as_dict() for a in attempts],
                               request_id=request_id, summary=summary)
