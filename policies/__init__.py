"""Policies: strategies, tiers and the decision rule that maps a probe output to a strategy."""

from triage.policies.decide import CascadePlan, Decision, DecisionError, action_distribution, decide
from triage.policies.exploration import Exploration
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
    "Exploration",
    "Policy",
    "Price",
    "Strategy",
    "ThresholdsRule",
    "action_distribution",
    "decide",
    "load_policy",
    "policy_from_dict",
]
