"""The frontier table: one row per router, as printed by ``triage replay evaluate``."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from triage.console import print_table
from triage.eval.evaluation.result import EvaluationResult, RouterResult

__all__ = ["format_cost", "frontier_rows", "frontier_table", "print_frontier"]


def format_cost(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    if unit == "usd":
        return f"${value:,.2f}" if value >= 100 else f"${value:.4g}"
    if unit == "tokens":
        return f"{value:,.0f} tok"
    return f"{value:,.2f} calls"


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return fmt.format(value)


def _acc(m: dict[str, Any]) -> str:
    text = _num(m.get("accuracy"))
    ci = m.get("accuracy_ci")
    return f"{text} [{_num(ci[0])}, {_num(ci[1])}]" if ci else text


def _in_sample_mark(flag: Any) -> str:
    """A policy whose probe trained on evaluated rows: its figures are not held-out results."""
    if flag == "unknown":
        return " [in-sample?]"
    if isinstance(flag, dict):
        return f" [IN-SAMPLE {flag['rows']:,}/{flag['of']:,}]"
    return ""


def _ordered(result: EvaluationResult) -> list[RouterResult]:
    """Candidates by mean cost, then baselines, then the routers asked for."""
    rank = {"candidate": 0, "baseline": 1, "router": 2}
    rows = list(result.routers.values())
    return sorted(rows, key=lambda r: (rank[r.kind], r.metrics.get("mean_cost") or 0.0 if r.kind == "candidate" else 0.0))


def frontier_rows(result: EvaluationResult) -> list[dict[str, str]]:
    """The table as plain strings (shared by the rich table and the HTML report)."""
    unit = result.cost_unit
    out = []
    for r in _ordered(result):
        m = r.metrics
        row = {
            "router": r.name + (f" ({m['candidate']})" if r.name == "best-single" and m.get("candidate") else "")
            + _in_sample_mark(m.get("in_sample")),
            "kind": r.kind,
            "accuracy [95% CI]": _acc(m),
            "cost/query": format_cost(m.get("mean_cost"), unit),
            "tokens/query": _num((m.get("tokens") or {}).get("mean_total"), "{:,.0f}")
            if m.get("accuracy_per_1k_tokens") is not None else "-",
            "cost-of-pass": format_cost(m.get("cost_of_pass"), unit),
            "TEP": _num(m.get("tep"), "{:.2f}"),
        }
        if result.pair is not None:
            row["APGR"] = _num(m.get("apgr"))
        row["AIQ"] = _num(m.get("aiq"))
        row["cost ratio at best acc"] = _num(m.get("cost_ratio_at_best_accuracy"), "{:.2f}")
        out.append(row)
    return out


#: Printed with ``--wide`` only (the HTML report and ``--json`` always have them): the table fits 100
#: columns without them.
WIDE_ONLY = ("tokens/query", "AIQ", "cost ratio at best acc")


def frontier_table(result: EvaluationResult, *, wide: bool = False) -> Table:
    rows = frontier_rows(result)
    proto = result.protocol
    how = (f"train/test split: scored on {proto['n_eval']:,} test queries" if proto["kind"] == "split"
           else f"{proto['folds']}-fold cross-fitting on {proto['n_eval']:,} queries")
    caption = [f"{how}; cost in {result.cost_unit}; TEP vs {result.tep_baseline}; "
               f"{result.bootstrap['n_boot']} bootstrap replicates"]
    if result.pair:
        caption.append(f"weak {result.pair['weak']}, strong {result.pair['strong']}")
    caption.extend(result.notes)
    if result.budgets:
        caption.append("budgets: " + ", ".join(f"{k}={v}" for k, v in result.budgets.items()))
    if not wide:
        caption.append("--wide adds " + ", ".join(WIDE_ONLY))
    table = Table(title=f"{result.dataset}: {result.n:,} queries, {len(result.candidates)} candidates",
                  caption="\n".join(caption))
    if not rows:
        return table
    skip = {"kind"} if wide else {"kind", *WIDE_ONLY}
    for col in rows[0]:
        if col in skip:
            continue
        # Wrap at spaces rather than cut: "0.638 [0.612, 0.664]" becomes two lines when narrow.
        table.add_column(col, justify="left" if col == "router" else "right", overflow="fold")
    for row in rows:
        style = {"candidate": None, "baseline": "cyan", "router": "bold"}[row["kind"]]
        table.add_row(*[v for k, v in row.items() if k not in skip], style=style)
    return table


def print_frontier(console: Console, result: EvaluationResult, *, wide: bool = False) -> None:
    """Print the table at ``COLUMNS``, the terminal's width, or 120 columns when piped (not rich's 80);
    ``wide``: every column, up to 200 columns."""
    print_table(console, frontier_table(result, wide=wide), wide=wide)
