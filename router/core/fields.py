"""Which caller fields may reach an upstream call: one allowlist for the sidecar and the SDK.

litellm reads many keyword arguments besides the OpenAI ones (``api_base``, ``api_key``,
``fallbacks``, ``extra_headers``, ``mock_response``, ``litellm_*``...), and some of them reuse the
strategy's credentials for a destination the caller picks: ``fallbacks=[{"api_base": attacker}]``
sends the upstream key there. So callers may set OpenAI chat-completions fields only (checked
against the API reference's CreateChatCompletionRequest); everything about where a call goes and
with which key comes from the policy. Anything else is refused by name, never silently dropped,
so a client learns that its field had no effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from triage.errors import TriageError

# OpenAI chat-completions request fields a caller may set.
CHAT_FIELDS: frozenset[str] = frozenset({
    # interpreted by Triage: the policy picks the model; max_tokens can only tighten the budget;
    # the sidecar accepts n = 1 only
    "model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
    # sampling (the strategy's own temperature and stop win when it sets them)
    "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs",
    # what the answer looks like
    "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "response_format",
    "modalities", "audio", "prediction", "verbosity",
    # accepted for compatibility, decided by the policy (the strategy's effort, or none)
    "reasoning_effort",
    # end-user identifiers the provider uses for abuse detection and cache bucketing
    "user", "safety_identifier", "prompt_cache_key",
})
# OpenAI fields accepted and not forwarded: stored completions would keep tenants' data under the
# operator's upstream account (and litellm reads ``metadata`` for its own bookkeeping). Clients
# and agent frameworks send them routinely, so they are dropped rather than refused.
DROPPED_FIELDS: frozenset[str] = frozenset({"store", "metadata"})
# OpenAI fields refused on purpose, with the reason the caller is told.
REFUSED_FIELDS: Mapping[str, str] = {
    "service_tier": "the service tier changes what the operator's upstream account is billed; "
                    "set it in the strategy's extra",
    "web_search_options": "web search is billed per call outside token accounting; set it in the strategy's extra",
    "prompt_cache_retention": "it changes how long the operator's upstream account keeps tenants' prompts",
}
# Triage's own keyword arguments (SDK and sidecar): ``timeout`` can only shorten the strategy's
# ``timeout_s``; ``metadata_triage`` is ignored.
INTERNAL_FIELDS: frozenset[str] = frozenset({"timeout", "metadata_triage"})
# Tool types of chat completions. Others (``mcp``...) make litellm act on the caller's behalf.
TOOL_TYPES: frozenset[str] = frozenset({"function", "custom"})


class UnsupportedFieldError(TriageError):
    """A caller field that Triage does not forward; ``field`` names it (the sidecar's ``param``)."""

    def __init__(self, field: str, reason: str | None = None) -> None:
        why = reason or ("only OpenAI chat-completions fields are accepted; upstream connections and "
                         "credentials are configured in the policy")
        super().__init__(f"field '{field}' is not accepted by Triage: {why}")
        self.field = field


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise UnsupportedFieldError("tools", "tools must be a list of function tools")
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in TOOL_TYPES:
            raise UnsupportedFieldError("tools", f"tool type {kind!r} is not accepted; use 'function' tools")


def caller_fields(kwargs: Mapping[str, Any], *, internal: Iterable[str] = INTERNAL_FIELDS) -> dict[str, Any]:
    """``kwargs`` without the dropped fields; raises :class:`UnsupportedFieldError` on the first
    field that is neither an allowed OpenAI field nor one of ``internal``."""
    extra = frozenset(internal)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in DROPPED_FIELDS:
            continue
        if key not in CHAT_FIELDS and key not in extra:
            raise UnsupportedFieldError(str(key), REFUSED_FIELDS.get(key))
        out[key] = value
    _check_tools(out.get("tools"))
    return out
