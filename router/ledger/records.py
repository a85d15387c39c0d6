"""Pydantic models of what the ledger stores: one record per routed request, outcomes attached later.

These are a boundary (database rows, exports, the sidecar's feedback body), hence pydantic.
Validation also enforces the ledger's two privacy rules, whoever builds the record:

* credentials never reach the ledger: every free-form string and mapping is scrubbed
  (:mod:`triage.scrub`), and an ``api_key_id`` that looks like a key is replaced by a hash;
* the prompt is identified by its SHA-256; its text is kept only when the writer is told to
  (``LedgerWriter(store_prompts=True)``), otherwise the writer drops it after hashing.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from triage.probes.types import ProbeOutput
from triage.scrub import looks_like_secret, opaque_id, scrub_text, scrub_value

AttemptKind = Literal["primary", "retry", "escalation", "fallback"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def prompt_sha256(prompt: str | list[Any]) -> str:
    """SHA-256 of a prompt: the UTF-8 string, or the chat messages as canonical JSON."""
    if isinstance(prompt, str):
        data = prompt.encode("utf-8")
    else:
        msgs = [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in prompt]
        data = json.dumps(msgs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


class ProbeRecord(BaseModel):
    """The probe's outputs as they were when the decision was made."""

    model_config = ConfigDict(extra="forbid")

    probe_version: str = ""
    tier: str | None = None
    tier_probs: dict[str, float] = Field(default_factory=dict)
    success: dict[str, float] = Field(default_factory=dict)
    extras: dict[str, float] = Field(default_factory=dict)
    features: list[float] | None = Field(
        default=None, description="The feature row the probe's head read (policy ledger.store_features).")

    @classmethod
    def from_output(cls, out: ProbeOutput, features: Any = None) -> "ProbeRecord":
        return cls(probe_version=out.probe_version, tier=out.tier, tier_probs=dict(out.tier_probs),
                   success=dict(out.success), extras=dict(out.extras),
                   features=list(features) if features is not None else None)

    @field_validator("extras", "tier_probs", "success")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        # JSON has no NaN/inf; a probe that emits one is reported as missing rather than crashing.
        return {k: v for k, v in value.items() if math.isfinite(v)}

    @field_validator("features")
    @classmethod
    def _finite_row(cls, value: list[float] | None) -> list[float] | None:
        # A row with a NaN cannot train anything; dropped whole (a partial row would misalign).
        return value if value is None or all(math.isfinite(v) for v in value) else None


class Attempt(BaseModel):
    """One upstream call made for a request: the first try, a retry, an escalation or a fallback."""

    model_config = ConfigDict(extra="forbid")

    model: str
    kind: AttemptKind = "primary"
    strategy: str | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0, description="Billed completion tokens, reasoning included.")
    reasoning_tokens: int = Field(default=0, ge=0, description="Hidden reasoning tokens as the provider reports them.")
    cost_usd: float | None = Field(default=None, ge=0.0)
    latency_s: float | None = Field(default=None, ge=0.0)
    finish_reason: str | None = None
    truncated: bool = False
    error: str | None = None

    @field_validator("error", "finish_reason")
    @classmethod
    def _scrub(cls, value: str | None) -> str | None:
        return scrub_text(value) if value else value


class LedgerRecord(BaseModel):
    """One routed request. Totals default to the sums over ``attempts`` when not given."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    time: datetime = Field(default_factory=utcnow)
    tenant: str | None = Field(default=None, max_length=200)
    api_key_id: str | None = Field(default=None, max_length=200,
                                   description="An id of the caller's key (never the key itself).")
    policy_name: str | None = None
    policy_version: str | None = None
    probe: ProbeRecord | None = None
    tier: str | None = None
    strategy: str = Field(min_length=1)
    model: str = Field(min_length=1, description="The model whose answer reached the caller.")
    attempts: list[Attempt] = Field(default_factory=list)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    reasoning_tokens: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0.0)
    latency_s: float | None = Field(default=None, ge=0.0, description="Wall time of the whole request.")
    decision_latency_s: float | None = Field(default=None, ge=0.0, description="Probe + policy time.")
    truncated: bool = False
    escalated: bool | None = None
    error: str | None = None
    prompt_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    prompt: str | list[dict[str, Any]] | None = Field(
        default=None, description="Prompt text: kept only when the writer runs with store_prompts=True.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    # The logged bandit data (what learning from one outcome per query needs); None on records
    # written before Triage logged them (propensity unknown, not 1).
    decided_strategy: str | None = Field(default=None, description="The first call the decision chose "
                                         "(the logged action; `strategy` is who answered).")
    propensity: float | None = Field(default=None, ge=0.0, le=1.0,
                                     description="P(decided_strategy) under the policy's exploration.")
    decided_candidate: str | None = Field(default=None, description="decided_strategy's probe success label.")
    greedy_strategy: str | None = Field(default=None, description="The rule's choice without exploration.")
    explored: bool | None = None
    candidates: list[str] | None = Field(default=None, description="Strategies that had probability > 0.")

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @field_validator("api_key_id")
    @classmethod
    def _key_id_not_key(cls, value: str | None) -> str | None:
        if value and looks_like_secret(value):
            return opaque_id(value)
        return value

    @field_validator("tenant", "error", "policy_name", "policy_version")
    @classmethod
    def _scrub_text(cls, value: str | None) -> str | None:
        return scrub_text(value) if value else value

    @field_validator("metadata")
    @classmethod
    def _scrub_meta(cls, value: dict[str, Any]) -> dict[str, Any]:
        return scrub_value(value)

    @model_validator(mode="after")
    def _derive(self) -> "LedgerRecord":
        if self.prompt is not None:
            if self.prompt_sha256 is None:
                self.prompt_sha256 = prompt_sha256(self.prompt)
            self.prompt = scrub_value(self.prompt)
        a = self.attempts
        if self.prompt_tokens is None:
            self.prompt_tokens = sum(x.prompt_tokens for x in a)
        if self.completion_tokens is None:
            self.completion_tokens = sum(x.completion_tokens for x in a)
        if self.reasoning_tokens is None:
            self.reasoning_tokens = sum(x.reasoning_tokens for x in a)
        if self.cost_usd is None and a and any(x.cost_usd is not None for x in a):
            self.cost_usd = float(sum(x.cost_usd or 0.0 for x in a))
        if self.escalated is None:
            self.escalated = any(x.kind == "escalation" for x in a)
        if self.tier is None and self.probe is not None:
            self.tier = self.probe.tier
        return self

    def without_prompt_text(self) -> "LedgerRecord":
        """The record as stored by default: the prompt's hash, not its text."""
        if self.prompt is None and "answer" not in self.metadata:
            return self
        # The answer text (metadata.answer, kept for graders) is as private as the prompt.
        meta = {k: v for k, v in self.metadata.items() if k != "answer"}
        return self.model_copy(update={"prompt": None, "metadata": meta})


OutcomeSource = str


class OutcomeRecord(BaseModel):
    """A judgement of a request's answer, attached after the fact. The latest one counts in reports."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0.0, le=1.0, description="Quality in 0..1 (1 = correct).")
    source: str = Field(default="user", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$",
                        description="Who judged: user, judge, exact-match, ...")
    time: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(
        default_factory=dict, description="What a grader says about its verdict: grader and prompt versions, "
        "a judge's model, tokens and cost (router/ledger/graders).")

    @field_validator("detail")
    @classmethod
    def _scrub_detail(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A judge's reply is model output: scrubbed like any free text, and kept small.
        if len(json.dumps(value, default=str)) > 16_384:
            raise ValueError("detail is larger than 16 KiB")
        return scrub_value(value)

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("score must be a finite number in 0..1")
        return value

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)
