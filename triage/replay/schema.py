"""Pydantic models of the replay format.

This is a contract with outside tools: fields may be added, never renamed. Unknown fields
are kept (``extra="allow"``) so a file written by a newer tool round-trips through an older one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from triage.probe_input import probe_input

SCHEMA_VERSION = 1


class ChatMessage(BaseModel):
    """One OpenAI-style chat message. ``content`` may be a string or a list of parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[Any] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)


class Outcome(BaseModel):
    """What one candidate (a model, or a strategy = model + settings) did on one query."""

    model_config = ConfigDict(extra="allow")

    score: float = Field(ge=0.0, le=1.0, description="Quality in 0..1 (1 = correct).")
    cost_usd: float | None = Field(default=None, ge=0.0)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(
        default=None, ge=0, description="Billed completion tokens, hidden reasoning tokens included."
    )
    reasoning_tokens: int | None = Field(
        default=None, ge=0, description="Hidden reasoning (thinking) tokens as the provider reports them."
    )
    latency_s: float | None = Field(default=None, ge=0.0)
    truncated: bool | None = None


class ReplayRecord(BaseModel):
    """One query with the outcome of every candidate that was run on it."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    prompt: str | list[ChatMessage]
    task: str | None = None
    split: Literal["train", "test"] | None = None
    gold: str | None = None
    outcomes: dict[str, Outcome]

    @field_validator("outcomes")
    @classmethod
    def _at_least_one(cls, value: dict[str, Outcome]) -> dict[str, Outcome]:
        if not value:
            raise ValueError("a record needs at least one candidate outcome")
        return value

    def prompt_text(self) -> str:
        """The text a probe reads: the prompt string, or the chat's last user turn
        (:func:`triage.probe_input.probe_input`, the rule the live router applies)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return probe_input(self.messages())

    def messages(self) -> list[dict[str, Any]]:
        """The prompt as chat messages (a bare string becomes one user message)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [m.model_dump(exclude_none=True) for m in self.prompt]
