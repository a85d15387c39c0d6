"""Reports of replay evaluations: self-contained HTML with PNG plots (matplotlib, Agg)."""

from eval.report.html import write_report
from eval.report.plots import frontier_png, strong_calls_png

__all__ = ["frontier_png", "strong_calls_png", "write_report"]
