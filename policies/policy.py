"""A policy: the probe to read, strategies, tiers and the rule that turns a probe output into a choice.

One policy file drives the SDK, the sidecar and replay evaluation alike; :func:`triage.policies.decide.decide`
is the only code that interprets it. Decision rules:

``thresholds``
    Tier from cumulative tier probabilities: ``hard`` when P(hard) >= thresholds.hard, else ``normal``
    when P(normal) + P(hard) >= thresholds.normal, else ``easy``. The tier's strategy answers.
``expected_utility``
    The candidate strategy maximising P(success) - lambda * E[cost], with P(success) read from the
    probe's success label of the strategy (its ``replay_candidate``, default its model) and E[cost]
    from the policy's ``expected_cost`` table (tokens x price). ``lambda`` is utility per USD.
``cascade``
    Run ``start`` (a cheap strategy) first; escalate to ``escalate_to`` when the token-level
    uncertainty of its answer passes a threshold or it was truncated. With ``skip_threshold``, queries
    the probe already finds hard (P(hard) >= skip_threshold) go straight to ``escalate_to``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from triage.policies.exploration import Exploration, check_exploration
from triage.policies.grading import GraderSpec
from triage.policies.pricing import token_price
from triage.policies.shadow import Shadow, check_shadow
from triage.policies.strategy import ReasoningEffort, Strategy
from triage.probes.types import TIERS

Tier = Literal["easy", "normal", "hard"]


class TierMap(BaseModel):
    """Which strategy answers each tier."""

    model_config = ConfigDict(extra="forbid")

    easy: str
    normal: str
    hard: str

    def get(self, tier: str) -> str:
        return getattr(self, tier)


class TierThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    normal: float = Field(default=0.5, ge=0.0, le=1.0, description="Minimum P(normal) + P(hard) for `normal`.")
    hard: float = Field(default=0.5, ge=0.0, le=1.0, description="Minimum P(hard) for `hard`.")


class ThresholdsRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["thresholds"] = "thresholds"
    thresholds: TierThresholds = Field(default_factory=TierThresholds)

    def tier_for(self, tier_probs: dict[str, float]) -> str:
        p_hard = tier_probs["hard"]
        if p_hard >= self.thresholds.hard:
            return "hard"
        if tier_probs["normal"] + p_hard >= self.thresholds.normal:
            return "normal"
        return "easy"


class ExpectedUtilityRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["expected_utility"] = "expected_utility"
    lambda_: float = Field(default=0.0, ge=0.0, alias="lambda",
                           description="Utility given up per USD of expected cost.")
    candidates: list[str] | None = Field(
        default=None, min_length=1,
        description="Strategies to choose from, in tie-break order; default: the tiers' strategies easy->hard.",
    )


class CascadeRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["cascade"] = "cascade"
    start: str | None = Field(default=None, description="Cheap strategy run first; default: tiers.easy.")
    escalate_to: str | None = Field(default=None, description="Strategy on escalation; default: tiers.hard.")
    max_mean_entropy: float | None = Field(
        default=None, ge=0.0, description="Escalate when the mean token entropy (nats) of the answer exceeds this."
    )
    min_token_logprob: float | None = Field(
        default=None, le=0.0, description="Escalate when any token's log-probability is below this."
    )
    first_k_tokens: int | None = Field(default=None, ge=1, description="Measure uncertainty over the first k tokens only.")
    top_logprobs: int = Field(default=5, ge=1, le=20, description="Alternatives requested per token for the entropy.")
    escalate_on_truncation: bool = True
    skip_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="P(hard) at or above which the cheap step is skipped."
    )


Rule = Annotated[ThresholdsRule | ExpectedUtilityRule | CascadeRule, Field(discriminator="type")]


class TierBudget(BaseModel):
    """Difficulty-aware caps: a tier's budget tightens whatever strategy answers that tier."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: ReasoningEffort | None = None


class ExpectedCost(BaseModel):
    """Expected cost of one query under a strategy: ``usd`` directly, or tokens priced by the strategy."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: float | None = Field(default=None, ge=0.0)
    completion_tokens: float | None = Field(default=None, ge=0.0, description="Hidden reasoning tokens included.")
    usd: float | None = Field(default=None, ge=0.0, description="Overrides tokens x price when set.")

    @model_validator(mode="after")
    def _something_to_price(self) -> "ExpectedCost":
        if self.usd is None and (self.prompt_tokens is None or self.completion_tokens is None):
            raise ValueError("give usd, or both prompt_tokens and completion_tokens")
        return self


class Calibration(BaseModel):
    """Figures written by `triage policy calibrate` (kept as written; extra keys allowed)."""

    model_config = ConfigDict(extra="allow")

    data: str
    objective: str
    knob: dict[str, Any] = Field(default_factory=dict)
    accuracy: float | None = None
    cost_per_query_usd: float | None = None
    best_single: dict[str, Any] = Field(default_factory=dict)
    rows_selected: int | None = None
    rows_reported: int | None = None
    reported_on: str | None = None


class LedgerOptions(BaseModel):
    """What this policy's records keep beyond the prompt's hash (``ledger:`` in the policy file).

    ``store_prompts`` set here wins over the router's / sidecar's ``store_prompts`` for this policy's
    records (the policy is the versioned statement of what is collected); unset, theirs applies.
    ``store_features`` keeps the probe's feature vector, enough to retrain the head without the text.
    """

    model_config = ConfigDict(extra="forbid")

    store_prompts: bool | None = Field(default=None, description="Keep prompt text (unset: the router's setting).")
    store_features: bool = Field(default=False, description="Keep the probe's feature vector in each record.")


class Policy(BaseModel):
    """A validated policy file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: Annotated[str, WithJsonSchema({"type": ["string", "integer"], "default": "1",
                                            "description": "Policy version (recorded with every decision)."})] = "1"
    description: str = ""
    probe: str = Field(default="default", description="`default` or the path of a probe card / artifact folder.")
    strategies: dict[str, Strategy] = Field(min_length=1)
    tiers: TierMap
    rule: Rule = Field(default_factory=ThresholdsRule)
    budgets: dict[Tier, TierBudget] = Field(default_factory=dict)
    expected_cost: dict[str, ExpectedCost] = Field(
        default_factory=dict, description="Per-strategy expected cost of a query (filled by calibrate)."
    )
    fallback: str | list[str] | None = Field(
        default=None,
        description="Strategy, or ordered list of strategies, tried when the chosen one's provider fails "
        "(a strategy's own `fallbacks` overrides it).",
    )
    calibration: Calibration | None = None
    exploration: Exploration | None = Field(
        default=None, description="Randomise the first call with a known propensity (off by default).")
    ledger: LedgerOptions = Field(default_factory=LedgerOptions)
    grader: GraderSpec | None = Field(
        default=None, description="Grade each answer at request time against metadata.gold (or with a judge).")
    shadow: Shadow | None = Field(
        default=None, description="Also run another strategy in the background for a share of requests (off by default).")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("strategies", mode="before")
    @classmethod
    def _names_from_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, spec in value.items():
                if isinstance(spec, dict):
                    if spec.get("name", key) != key:
                        raise ValueError(f"strategy '{key}' has a different name '{spec['name']}'")
                    spec = {**spec, "name": key}
                out[key] = spec
            return out
        return value

    @model_validator(mode="after")
    def _references_exist(self, info: ValidationInfo) -> "Policy":
        known = self.strategies

        def check(path: str, name: str | None) -> None:
            if name is not None and name not in known:
                raise ValueError(f"{path}: unknown strategy '{name}' (defined: {', '.join(known)})")

        for tier in TIERS:
            check(f"tiers.{tier}", self.tiers.get(tier))
        policy_chain = self._policy_chain()
        for i, name in enumerate(policy_chain):
            check("fallback" if isinstance(self.fallback, str) else f"fallback.{i}", name)
        if len(set(policy_chain)) != len(policy_chain):
            raise ValueError("fallback: a strategy is listed twice")
        for name, strategy in known.items():
            check(f"strategies.{name}.escalate_to", strategy.escalate_to)
            for i, target in enumerate(strategy.fallbacks or []):
                check(f"strategies.{name}.fallbacks.{i}", target)
                if target == name:
                    raise ValueError(f"strategies.{name}.fallbacks.{i}: a strategy cannot fall back to itself")
            if strategy.fallbacks and len(set(strategy.fallbacks)) != len(strategy.fallbacks):
                raise ValueError(f"strategies.{name}.fallbacks: a strategy is listed twice")
        for name in self.expected_cost:
            check(f"expected_cost.{name}", name)
        rule = self.rule
        if isinstance(rule, ExpectedUtilityRule):
            for i, name in enumerate(rule.candidates or []):
                check(f"rule.candidates.{i}", name)
            if rule.lambda_ > 0 and not (info.context or {}).get("expected_cost_optional"):
                for name in self.candidates():
                    if name not in self.expected_cost:
                        raise ValueError(
                            f"expected_cost.{name}: missing; expected_utility with lambda > 0 needs the expected "
                            "cost of every candidate (`triage policy calibrate` fills it from replay data)"
                        )
        if isinstance(rule, CascadeRule):
            check("rule.start", rule.start)
            check("rule.escalate_to", rule.escalate_to)
            if rule.max_mean_entropy is None and rule.min_token_logprob is None and not rule.escalate_on_truncation:
                raise ValueError("rule: a cascade needs max_mean_entropy, min_token_logprob or escalate_on_truncation")
            if self.cascade_start() == self.cascade_target():
                raise ValueError("rule: cascade start and escalate_to are the same strategy")
        check_exploration(self, expected_cost_optional=bool((info.context or {}).get("expected_cost_optional")))
        check_shadow(self)
        return self

    # -- lookups used by decide() and the router ------------------------------------------------

    def strategy(self, name: str) -> Strategy:
        return self.strategies[name]

    def _policy_chain(self) -> list[str]:
        fallback = self.fallback
        return [fallback] if isinstance(fallback, str) else list(fallback or [])

    def fallback_chain(self, name: str) -> list[str]:
        """Strategies tried, in order, when ``name``'s provider fails: its own ``fallbacks``, else the
        policy's ``fallback`` (``name`` itself left out)."""
        own = self.strategies[name].fallbacks
        chain = own if own is not None else self._policy_chain()
        return [n for n in chain if n != name]

    def fallback_names(self) -> list[str]:
        """Every strategy any fallback chain can run (policy-wide and per-strategy), each once."""
        names = self._policy_chain() + [n for s in self.strategies.values() for n in (s.fallbacks or [])]
        return list(dict.fromkeys(names))

    def candidates(self) -> list[str]:
        """Strategies the expected-utility rule chooses between (order = tie-break order)."""
        if isinstance(self.rule, ExpectedUtilityRule) and self.rule.candidates:
            return list(self.rule.candidates)
        return list(dict.fromkeys(self.tiers.get(t) for t in TIERS))

    def cascade_start(self) -> str:
        rule = self.rule
        return (rule.start if isinstance(rule, CascadeRule) else None) or self.tiers.easy

    def cascade_target(self) -> str:
        rule = self.rule
        return (rule.escalate_to if isinstance(rule, CascadeRule) else None) or self.tiers.hard

    def escalation_target(self, name: str) -> str | None:
        """Where a truncated answer of strategy ``name`` escalates: its ``escalate_to``, else the
        strategy of the next harder tier than the hardest tier ``name`` serves (None at the top)."""
        strategy = self.strategies[name]
        if strategy.escalate_to:
            return strategy.escalate_to
        served = [i for i, t in enumerate(TIERS) if self.tiers.get(t) == name]
        start = (max(served) + 1) if served else 0
        for tier in TIERS[start:]:
            candidate = self.tiers.get(tier)
            if candidate != name:
                return candidate
        return None

    def max_tokens_for(self, name: str, tier: str | None) -> int | None:
        """The strategy's budget tightened by the tier's budget (the smaller one wins)."""
        own = self.strategies[name].max_tokens
        cap = self.budgets[tier].max_tokens if tier in self.budgets else None  # type: ignore[index]
        if own is None or cap is None:
            return own if cap is None else cap
        return min(own, cap)

    def reasoning_effort_for(self, name: str, tier: str | None) -> str | None:
        budget = self.budgets.get(tier) if tier else None  # type: ignore[arg-type]
        if budget is not None and budget.reasoning_effort is not None:
            return budget.reasoning_effort
        return self.strategies[name].reasoning_effort

    def expected_cost_usd(self, name: str, tier: str | None = None) -> float | None:
        """E[cost] of one query under strategy ``name`` (None when the policy has no estimate).

        Expected completion tokens are capped by the budget the strategy gets in ``tier``.
        """
        entry = self.expected_cost.get(name)
        if entry is None:
            return None
        if entry.usd is not None:
            return entry.usd
        assert entry.prompt_tokens is not None and entry.completion_tokens is not None
        completion = entry.completion_tokens
        cap = self.max_tokens_for(name, tier)
        if cap is not None:
            completion = min(completion, float(cap))
        return token_price(self.strategies[name]).cost(entry.prompt_tokens, completion)

    def local_models(self) -> list[str]:
        """Names of the local models (``local/<name>``) the policy's strategies use."""
        return list(dict.fromkeys(s.local_name for s in self.strategies.values() if s.local_name))
