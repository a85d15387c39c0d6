"""Offline replay evaluation of routers (``triage replay evaluate``)."""

from triage.eval.evaluation.core import apply_budgets, evaluate, parse_budget
from triage.eval.evaluation.protocol import Protocol, make_protocol, run_router
from triage.eval.evaluation.result import EvaluationResult, RouterResult

__all__ = [
    "EvaluationResult",
    "Protocol",
    "RouterResult",
    "apply_budgets",
    "evaluate",
    "make_protocol",
    "parse_budget",
    "run_router",
]
