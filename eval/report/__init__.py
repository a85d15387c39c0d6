"""Reports of replay evaluations: self-contained HTML with PNG plots (matplotlib, Agg)."""

from triage.eval.report.html import write_report
from triage.eval.report.plots import frontier_png, strong_calls_png

__all__ = ["frontier_png", "strong_calls_png", "write_report"]
