"""Reports of replay evaluations: self-contained HTML with PNG plots (matplotlib, Agg)."""

from triage.eval.report.html import write_report
from triage.eval.report.plots import budget_png, frontier_png, strong_calls_png

__all__ = ["budget_png", "frontier_png", "strong_calls_png", "write_report"]
