"""Pydantic bodies of the sidecar's HTTP API (OpenAI chat completions plus Triage's own endpoints).

Request models validate what the sidecar interprets (model, messages, stream, budgets, sampling
ranges) and keep everything else (tools, tool_choice, response_format, seed, logprobs, user...) as
extra fields that are passed to the upstream call unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# Caller fields the sidecar interprets itself and never forwards as-is.
INTERPRETED = frozenset({"model", "messages", "stream", "stream_options", "n", "max_completion_tokens"})


class ChatMessage(BaseModel):
    """One message. ``content`` is text or a list of parts (``{"type": "text", "text": ...}``...)."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _content_where_required(self) -> "ChatMessage":
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a '{self.role}' message needs content")
        if self.role == "assistant" and self.content is None and not (self.model_extra or {}).get("tool_calls"):
            raise ValueError("an 'assistant' message needs content or tool_calls")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
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


class RouteRequest(BaseModel):
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


class FeedbackRequest(BaseModel):
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
        (400, "Malformed request (invalid JSON, not an object)"),
        (401, "Missing or unknown API key"),
        (403, "Key not allowed this model, or its spend budget is used up"),
        (404, "Unknown model, policy or request id"),
        (413, "Request body over the size limit"),
        (422, "Valid JSON of the wrong shape (wrong types, empty messages...)"),
        (429, "Rate limit of the key (see Retry-After)"),
        (502, "Upstream failed and the policy had no working fallback"),
        (504, "Upstream timed out and the policy had no working fallback"),
    )
}
