"""A strategy: how one query is answered (model, prompt, temperature, token budget, truncation rule).

Strategies are the unit a policy chooses between. They are pydantic models because they come from
policy files; every field is validated with a readable message and unknown keys are refused (a typo
in a policy file must not silently change behaviour).

What the model string means (``local/...``, ``token-routed/...``, a litellm model) is its *kind*
(:mod:`triage.policies.kinds`): the kind validates the model and its own options key (e.g.
``token_routing:``), which is why those keys are not fields here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from triage.policies.kinds.base import StrategyKind, kind_of, option_fields

OnTruncation = Literal["accept", "escalate", "retry"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]

QUERY_PLACEHOLDER = "{query}"

# Keys that would put a secret into a policy file. Credentials come from the environment
# (``api_key_env``) so a policy file can be committed and logged.
_SECRET_KWARGS = frozenset({"api_key", "aws_secret_access_key", "vertex_credentials", "azure_ad_token"})
# Keys the strategy sets itself (and every kind's options key); passing them through ``extra`` would
# make two sources of truth.
_OWNED_KWARGS = frozenset({"model", "messages", "temperature", "max_tokens", "reasoning_effort", "stream",
                           "api_base", "timeout", "stop"})


class Price(BaseModel):
    """A price override in USD per million tokens (hidden reasoning tokens bill as output)."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(ge=0.0, description="USD per 1M prompt tokens.")
    output_per_mtok: float = Field(ge=0.0, description="USD per 1M completion tokens (reasoning included).")

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


class Deployment(BaseModel):
    """One endpoint serving a strategy's model (several of them are load-balanced, like litellm's router).

    Where a call goes and with which key come from the policy only: a deployment names its base URL
    and the environment variable holding its key, never the key itself.
    """

    model_config = ConfigDict(extra="forbid")

    api_base: str = Field(min_length=1, description="Base URL of this deployment (http:// or https://).")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding this deployment's API key (never the key itself)."
    )
    weight: float = Field(default=1.0, gt=0.0, description="Share of the traffic, relative to the other deployments.")
    model: str | None = Field(default=None, min_length=1,
                              description="The model string this deployment is called with; default: the strategy's.")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        for key in data if isinstance(data, dict) else ():
            if key in _SECRET_KWARGS:
                raise ValueError(f"'{key}' must not be written in a policy file; use api_key_env: NAME_OF_ENV_VAR")
        return data

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_base must be an http:// or https:// URL")
        return value


def _kind_option_schemas(schema: dict[str, Any]) -> None:
    """The policy-file schema lists each kind's options key as if it were a field."""
    props = schema.setdefault("properties", {})
    for key, kind in option_fields().items():
        assert kind.options_model is not None
        props[key] = {"anyOf": [kind.options_model.model_json_schema(), {"type": "null"}], "default": None,
                      "description": f"Options of a `{kind.syntax}` model."}


class Strategy(BaseModel):
    """One way of answering: a model plus the settings it is called with."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_kind_option_schemas)

    name: str = Field(default="", description="Filled from the key under `strategies:` in a policy file.")
    model: str = Field(min_length=1, description="A litellm model string (`openai/gpt-4o`), `local/<name>`, or "
                       "another strategy kind's (`token-routed/<small>+<large>`).")
    system_prompt: str | None = Field(default=None, description="Prepended as a system message.")
    template: str | None = Field(
        default=None,
        description="Rewrites the last user message; `{query}` stands for its text "
        "(e.g. `{query}\\nThink step by step.`).",
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Sampling temperature; unset: the caller's value or the provider's default."
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Completion token budget.")
    reasoning_effort: ReasoningEffort | None = Field(
        default=None, description="Passed as litellm's `reasoning_effort` where the provider supports it."
    )
    stop: list[str] | None = None
    on_truncation: OnTruncation = Field(
        default="accept",
        description="When the answer hits max_tokens: keep it, escalate to `escalate_to` "
        "(default: the next harder tier's strategy), or retry once with `retry_max_tokens`.",
    )
    retry_max_tokens: int | None = Field(default=None, ge=1)
    escalate_to: str | None = Field(default=None, description="Strategy used on escalation.")
    price: Price | None = Field(default=None, description="Overrides litellm's cost map.")
    replay_candidate: str | None = Field(
        default=None,
        description="Column of replay data (and success label of the probe) this strategy corresponds to; "
        "default: `model`.",
    )
    api_base: str | None = Field(default=None, description="Base URL of an OpenAI-compatible or self-hosted endpoint.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (never the key itself)."
    )
    api: Literal["openai", "litellm"] | None = Field(
        default=None,
        description="How calls are made: `openai` calls the api_base (or deployments) directly as an OpenAI-compatible "
        "server with a pooled HTTP client; `litellm` forces litellm; unset: direct for `openai/...` models with an "
        "api_base or deployments, litellm otherwise (docs/sidecar.md).",
    )
    timeout_s: float = Field(default=120.0, gt=0.0, description="Per-call timeout; no call waits longer.")
    deployments: list[Deployment] | None = Field(
        default=None, min_length=1,
        description="Several endpoints of this model, load-balanced by weight; a failing one cools down and "
        "the others are tried before the fallback chain (replaces the strategy's api_base/api_key_env).",
    )
    cooldown_s: float = Field(default=30.0, ge=0.0, description="How long a failing deployment gets no traffic.")
    allowed_fails: int = Field(default=1, ge=1, description="Consecutive failures before a deployment cools down.")
    fallbacks: list[str] | None = Field(
        default=None,
        description="This strategy's own fallback chain, tried in order on a provider failure (overrides the "
        "policy's `fallback`; `[]`: none).",
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="Further litellm keyword arguments (top_p, seed...).")
    # The kind's validated options (its own key in the policy file, e.g. `token_routing:`).
    _options: BaseModel | None = PrivateAttr(default=None)
    # kind_of scans every registered kind; every call asks for the kind several times (arguments,
    # price, provider), so it is kept, with the model string it was derived from.
    _kind: tuple[str, StrategyKind] | None = PrivateAttr(default=None)

    @field_validator("template")
    @classmethod
    def _template_has_query(cls, value: str | None) -> str | None:
        if value is not None and QUERY_PLACEHOLDER not in value:
            raise ValueError(f"template must contain {QUERY_PLACEHOLDER} where the user's message goes")
        return value

    @field_validator("extra")
    @classmethod
    def _no_secrets_or_owned_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _SECRET_KWARGS:
                raise ValueError(f"'{key}' must not be written in a policy file; use api_key_env: NAME_OF_ENV_VAR")
            if key in _OWNED_KWARGS or key in option_fields():
                raise ValueError(f"'{key}' is a strategy field; set it directly, not under extra")
        return value

    @model_validator(mode="after")
    def _retry_needs_a_larger_budget(self) -> "Strategy":
        if self.on_truncation == "retry":
            if self.retry_max_tokens is None:
                raise ValueError("on_truncation: retry needs retry_max_tokens")
            if self.max_tokens is not None and self.retry_max_tokens <= self.max_tokens:
                raise ValueError(
                    f"retry_max_tokens ({self.retry_max_tokens}) must be larger than max_tokens ({self.max_tokens})"
                )
        return self

    @model_validator(mode="after")
    def _deployments_own_the_destination(self) -> "Strategy":
        if self.api == "openai" and (self.api_base is None and not self.deployments or kind_of(self.model).is_local):
            raise ValueError("api: openai calls an OpenAI-compatible server: set api_base (or deployments) "
                             "on a remote model")
        if self.deployments is None:
            if {"cooldown_s", "allowed_fails"} & self.model_fields_set:
                raise ValueError("cooldown_s and allowed_fails apply only to a strategy with deployments")
            return self
        if self.api_base is not None or self.api_key_env is not None:
            raise ValueError("with deployments, set api_base and api_key_env on each deployment, not on the strategy")
        kind = kind_of(self.model)
        if kind.is_local:
            raise ValueError(f"deployments apply to remote models only, not to '{self.model}'")
        for i, dep in enumerate(self.deployments):
            if dep.model is not None and kind_of(dep.model) is not kind:
                raise ValueError(f"deployments.{i}.model: '{dep.model}' is not the same kind of model as '{self.model}'")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _kind_and_options(cls, data: Any, handler: Any) -> "Strategy":
        """The kind validates the model string and its options key; another kind's key is refused."""
        if not isinstance(data, dict):
            return handler(data)  # type: ignore[no-any-return]  # a Strategy already checked
        data = dict(data)
        raw = {key: data.pop(key) for key in option_fields() if key in data}
        strategy: Strategy = handler(data)
        kind = kind_of(strategy.model)
        for key, value in raw.items():
            if key != kind.options_field and value is not None:
                owner = option_fields()[key]
                raise ValueError(f"{key} applies only to a '{owner.syntax}' model")
        try:
            strategy._options = kind.parse_options(raw.get(kind.options_field)) if kind.options_field else None
        except ValidationError as exc:  # keep the place of each error (`strategies.x.token_routing.tau`)
            errors: list[Any] = []
            for e in exc.errors():
                line = {"type": e["type"], "loc": (kind.options_field, *e["loc"]), "input": e["input"]}
                if "ctx" in e:
                    line["ctx"] = e["ctx"]
                errors.append(line)
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        kind.validate(strategy.model, strategy._options)
        return strategy

    @property
    def kind(self) -> StrategyKind:
        """What the model string means (:mod:`triage.policies.kinds`)."""
        if self._kind is None or self._kind[0] != self.model:
            self._kind = (self.model, kind_of(self.model))
        return self._kind[1]

    @property
    def options(self) -> BaseModel | None:
        """The kind's validated options (e.g. a token-routed strategy's ``token_routing``), or None."""
        return self._options

    @property
    def is_token_routed(self) -> bool:
        return self.kind.name == "token-routed"

    @property
    def is_local(self) -> bool:
        """Runs on this machine (``local/`` or a ``token-routed/`` pair): no key, no per-token price."""
        return self.kind.is_local

    @property
    def local_name(self) -> str | None:
        """The local model a ``local/<name>`` strategy runs (what the probe may share)."""
        names = self.kind.local_models(self.model)
        return names[0] if names else None

    @property
    def candidate(self) -> str:
        """The replay column / probe success label this strategy stands for."""
        return self.replay_candidate or self.model

    def apply_to_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages sent to the model: system prompt prepended, template applied to the last user turn.

        The caller's list is not modified.
        """
        out = [dict(m) for m in messages]
        if self.template is not None:
            for m in reversed(out):
                if m.get("role") == "user" and isinstance(m.get("content"), str):
                    m["content"] = self.template.replace(QUERY_PLACEHOLDER, m["content"])
                    break
        if self.system_prompt:
            out.insert(0, {"role": "system", "content": self.system_prompt})
        return out
