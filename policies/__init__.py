"""Policies: strategies, tiers and the decision rule that maps a probe output to a strategy."""

from triage.policies.decide import CascadePlan, Decision, DecisionError, decide
from triage.policies.loader import DEFAULT_POLICY, load_policy, policy_from_dict
from triage.policies.policy import CascadeRule, ExpectedUtilityRule, Policy, ThresholdsRule
from triage.policies.strategy import Price, Strategy

__all__ = [
    "DEFAULT_POLICY",
    "CascadePlan",
    "CascadeRule",
    "Decision",
    "DecisionError",
    "ExpectedUtilityRule",
    "Policy",
    "Price",
    "Strategy",
    "ThresholdsRule",
    "decide",
    "load_policy",
    "policy_from_dict",
]
