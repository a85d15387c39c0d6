"""Routing metrics: outcome summaries, bootstrap intervals, cost-quality curves, APGR/CPT/AIQ."""

from triage.eval.metrics.bootstrap import Bootstrap, percentile_interval
from triage.eval.metrics.cost import CostAxis, cost_axis
from triage.eval.metrics.curve import aiq, apgr, cost_ratio_at_accuracy, cpt, nondecreasing_hull, pgr
from triage.replay.summary import cost_of_pass, summarize_outcomes, tep, tep_array

__all__ = [
    "Bootstrap",
    "CostAxis",
    "aiq",
    "apgr",
    "cost_axis",
    "cost_of_pass",
    "cost_ratio_at_accuracy",
    "cpt",
    "nondecreasing_hull",
    "percentile_interval",
    "pgr",
    "summarize_outcomes",
    "tep",
    "tep_array",
]
