"""Pydantic bodies of the sidecar's HTTP API (OpenAI chat completions plus Triage's own endpoints).

Request models validate what the sidecar interprets (model, messages, stream, budgets, sampling
ranges) and keep everything else (tools, tool_choice, response_format, seed, logprobs, user...) as
extra fields; only those on the allowlist of :mod:`triage.router.core.fields` reach the upstream call
(anything else is a 400 ``unsupported_field``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# Caller fields the sidecar interprets itself and never forwards as-is.
INTERPRETED = frozenset({"model", "messages", "stream", "stream_options", "n", "max_completion_tokens"})

# Limits on what a JSON body may hold beyond what json.loads accepts. Python's parser takes lone UTF-16
# surrogates ("\\ud800"), NaN/Infinity, integers of any size up to 4300 digits and nesting up to its
# recursion limit; each of these later breaks a tokenizer, the ledger or the upstream's JSON encoder,
# so the body is refused at the door (400 invalid_json) instead.
MAX_JSON_DEPTH = 64
MAX_JSON_INT = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
# Content-part types litellm accepts in a user message (litellm.types.llms.openai.ValidUserMessageContentTypes);
# anything else fails inside litellm and would reach the client as an upstream error.
USER_PART_TYPES = frozenset({"text", "image_url", "input_audio", "audio_url", "document", "guarded_text",
                             "grounding_source", "query", "video_url", "file"})


def _json_problem(value: Any, path: str, depth: int) -> str | None:
    """The first thing in a parsed JSON body that is not portable JSON text, or None."""
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        if m is None:
            return None
        return f"{path or 'body'} holds a lone UTF-16 surrogate (\\u{ord(m.group()):04x}), which is not Unicode text"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -MAX_JSON_INT - 1 <= value <= MAX_JSON_INT else f"{path or 'body'} holds an integer over 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'body'} holds NaN or Infinity, which JSON does not have"
    if depth >= MAX_JSON_DEPTH:
        return f"the body is nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            return f"{path or 'body'} has a key with a lone UTF-16 surrogate, which is not Unicode text"
        problem = _json_problem(item, f"{path}.{key}" if path else str(key), depth + 1)
        if problem is not None:
            return problem
    return None


class _JsonBody(BaseModel):
    """A request body: refuses what json.loads lets through but is not portable JSON text (400)."""

    @model_validator(mode="before")
    @classmethod
    def _portable_json(cls, data: Any) -> Any:
        problem = _json_problem(data, "", 0)
        if problem is not None:
            raise PydanticCustomError("json_invalid", "{error}", {"error": problem})
        return data


class ChatMessage(BaseModel):
    """One message. ``content`` is text or a list of parts (``{"type": "text", "text": ...}``...)."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)

    @field_validator("content")
    @classmethod
    def _parts_have_a_type(cls, value: Any) -> Any:
        # A part without a usable type fails inside litellm or the local model (it used to reach the
        # client as a 502); it is the caller's mistake, so it is refused here with the part's place.
        for i, part in enumerate(value if isinstance(value, list) else ()):
            kind = part.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError(f"content part {i} needs a 'type' (e.g. 'text')")
            if kind == "text" and not isinstance(part.get("text"), str):
                raise ValueError(f"content part {i} of type 'text' needs a 'text' string")
        return value

    @model_validator(mode="after")
    def _content_where_required(self) -> "ChatMessage":
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a '{self.role}' message needs content")
        if self.role == "assistant" and self.content is None and not (self.model_extra or {}).get("tool_calls"):
            raise ValueError("an 'assistant' message needs content or tool_calls")
        if self.role == "user" and isinstance(self.content, list):
            for i, part in enumerate(self.content):
                if part["type"] not in USER_PART_TYPES:
                    raise ValueError(f"content part {i}: a user message cannot hold parts of type {part['type']!r} "
                                     f"(use one of {', '.join(sorted(USER_PART_TYPES))})")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(_JsonBody):
    """``POST /v1/chat/completions``. ``model``: ``triage/<policy>`` (routed) or a concrete model."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"model": "triage", "max_tokens": 12,
                                         "messages": [{"role": "user", "content": "What is 2 + 2?"}]}]},
    )

    model: str = Field(min_length=1, max_length=256, description="`triage/<policy>` or a concrete model name.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000,
                                   description="Can only tighten the strategy's token budget.")
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000, description="Alias of max_tokens.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice per request is supported.")
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)

    def messages_as_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]

    def passthrough(self) -> dict[str, Any]:
        """Keyword arguments for the upstream call: every field the caller set, except those interpreted."""
        out = {k: v for k, v in self.model_dump(exclude_unset=True).items() if k not in INTERPRETED}
        budget = self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
        if budget is not None:
            out["max_tokens"] = budget
        if isinstance(out.get("stop"), str):
            out["stop"] = [out["stop"]]
        return {k: v for k, v in out.items() if v is not None}


class RouteRequest(_JsonBody):
    """``POST /v1/route``: the decision for these messages, without calling a model."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, max_length=256, description="`triage/<policy>`; default: the first policy.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)

    def messages_as_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]


class RouteResponse(BaseModel):
    request_id: str
    policy: str
    decision: dict[str, Any] = Field(description="Tier, probabilities, strategy, model, budget, expected cost...")
    decision_token: str = Field(description="Send as header x-triage-decision-token on the chat call with the "
                                "same model and messages: it then draws this decision's strategy.")
    decision_token_ttl_s: float = Field(description="Seconds the token is accepted for.")


class FeedbackRequest(_JsonBody):
    """``POST /v1/feedback``: attach an outcome (score in 0..1) to a completed request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    source: str = Field(default="user", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")


class FeedbackResponse(BaseModel):
    request_id: str
    recorded: bool = True


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "triage"
    target: str | None = Field(default=None, description="An alias's target (`triage/<policy>` or a model).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChoiceMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = "assistant"
    content: str | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    message: ChoiceMessage
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    """The OpenAI chat completion object (documented shape; extra provider fields pass through)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Malformed request (not HTTP, invalid JSON text, not an object)"),
        (401, "Missing or unknown API key"),
        (403, "Key not allowed this model, or its spend budget is used up"),
        (404, "Unknown model, policy or request id"),
        (408, "Headers or body not received within request_read_timeout_s"),
        (413, "Request body over the size limit"),
        (422, "Valid JSON of the wrong shape (wrong types, empty messages...)"),
        (429, "Rate limit of the key (see Retry-After)"),
        (431, "Request headers over max_header_bytes"),
        (502, "Upstream failed and the policy had no working fallback"),
        (504, "Upstream timed out and the policy had no working fallback"),
    )
}
