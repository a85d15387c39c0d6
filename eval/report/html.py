"""A self-contained HTML report: frontier tables and embedded PNG plots, one section per dataset."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from triage.eval.evaluation.result import EvaluationResult
from triage.eval.evaluation.table import frontier_rows
from triage.eval.report.plots import budget_png, frontier_png, strong_calls_png

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.85rem;margin:.8rem 0}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
tr.baseline td{background:#f3f8fc} tr.router td{font-weight:600}
.meta{color:#555;font-size:.9rem} img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
details{margin:.5rem 0} pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.75rem}
"""

_GLOSSARY = """
<ul class="meta">
<li><b>accuracy</b>: mean score at the router's default operating point, with a paired bootstrap 95% interval.</li>
<li><b>cost-of-pass</b>: cost / expected number of correct answers (Erol et al.).</li>
<li><b>TEP</b>: token elasticity of performance (EllieSQL): relative accuracy change over relative token change against the TEP baseline.</li>
<li><b>APGR</b> (two candidates): area under the performance-gap-recovered curve over the share of strong-model calls (RouteLLM); random mixing scores 0.5.</li>
<li><b>AIQ</b>: area under the non-decreasing convex hull of the router's (cost, accuracy) points, cost normalised over the candidates' range (RouterBench).</li>
<li><b>tokens saved at equal accuracy</b> (token-budget routers): 1 - the router's mean completion tokens over those of the cheapest uniform cap for the same model reaching its accuracy on the same queries; answers longer than their cap count as truncated and wrong.</li>
<li><b>cost ratio at best acc</b>: cheapest point of the router's curve reaching the best single candidate's accuracy, over that candidate's cost.</li>
</ul>
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "dataset"


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<a href="{html.escape(path.name)}"><img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{data}"></a>')


def _table(result: EvaluationResult) -> str:
    rows = frontier_rows(result)
    if not rows:
        return ""
    cols = [c for c in rows[0] if c != "kind"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f'<tr class="{r["kind"]}">' + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _budget(result: EvaluationResult, png: Path | None) -> str:
    """The budget curve with its headline and the truncation rule beside it (tier-budget routers)."""
    if png is None:
        return ""
    from triage.eval.metrics.budget import TRUNCATION_RULE

    lines = []
    for name, r in result.routers.items():
        b = r.metrics.get("budget")
        if not b or b["default"]["tokens_saved"] is None:
            continue
        d, ci = b["default"], b["default"]["tokens_saved_ci"]
        lines.append(f"{name} on {b['model']}: {d['tokens_saved']:+.1%} completion tokens saved"
                     + (f" (95% CI {ci[0]:+.1%} to {ci[1]:+.1%})" if ci else "")
                     + f" at accuracy {d['accuracy']:.3f} against the best uniform cap ({d['uniform_cap']:.0f} "
                     f"tokens, accuracy {d['uniform_accuracy']:.3f}); {d['truncated']:.1%} of answers truncated")
    return ("".join(f'<div class="meta">{html.escape(line)}</div>' for line in [*lines, TRUNCATION_RULE])
            + _img(png, f"{result.dataset} accuracy vs completion tokens under token caps"))


def _section(result: EvaluationResult, out_dir: Path) -> str:
    slug = _slug(result.dataset)
    frontier = frontier_png(result, out_dir / f"frontier-{slug}.png")
    calls = strong_calls_png(result, out_dir / f"strong-calls-{slug}.png")
    budget = budget_png(result, out_dir / f"budget-{slug}.png")
    proto = result.protocol
    how = (f"train/test split: routers trained on {proto.get('n_train', 0):,} train queries, all scored on "
           f"{proto['n_eval']:,} test queries" if proto["kind"] == "split"
           else f"{proto['folds']}-fold cross-fitting over {proto['n_eval']:,} queries")
    meta = [how, f"cost unit: {result.cost_unit}", f"TEP baseline: {result.tep_baseline}",
            f"candidates: {', '.join(result.candidates)}"]
    if result.pair:
        meta.append(f"weak: {result.pair['weak']}, strong: {result.pair['strong']}")
    if result.budgets:
        meta.append("budgets: " + ", ".join(f"{k}={v} tokens" for k, v in result.budgets.items()))
    meta.extend(result.notes)
    curves = {name: r.curve for name, r in result.routers.items() if len(r.curve) > 1}
    return (
        f'<h2 id="{slug}">{html.escape(result.dataset)}</h2>'
        + "".join(f'<div class="meta">{html.escape(line)}</div>' for line in meta)
        + _table(result)
        + _img(frontier, f"{result.dataset} cost-accuracy frontier")
        + _img(calls, f"{result.dataset} accuracy vs strong-model calls")
        + _budget(result, budget)
        + "<details><summary>curves (JSON)</summary><pre>"
        + html.escape(json.dumps(curves, indent=1, default=str))
        + "</pre></details>"
    )


def write_report(results: Sequence[EvaluationResult], out_dir: str | Path, *,
                 title: str = "Triage replay evaluation") -> Path:
    """Write ``out_dir/report.html`` (PNG plots embedded, and saved next to it); return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = " · ".join(f'<a href="#{_slug(r.dataset)}">{html.escape(r.dataset)}</a>' for r in results)
    sections = "".join(_section(r, out) for r in results)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<div class="meta">generated {stamp} · {toc}</div>{_GLOSSARY}{sections}</body></html>'
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
