"""PNG plots of evaluation results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from triage.eval.evaluation.result import EvaluationResult  # noqa: E402

__all__ = ["budget_png", "frontier_png", "strong_calls_png"]

_UNIT_LABEL = {"usd": "mean cost per query (USD)", "tokens": "mean tokens per query", "calls": "calls per query"}


def _use_log(values: list[float]) -> bool:
    pos = [v for v in values if v and v > 0]
    return len(pos) >= 2 and max(pos) / min(pos) > 30


def frontier_png(result: EvaluationResult, path: str | Path) -> Path:
    """Cost-accuracy frontier: every candidate as a point, the oracle as a star, and every
    sweeping router (random included) as a curve with its default point marked."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    xs: list[float] = []
    for r in result.routers.values():
        m = r.metrics
        if r.kind == "candidate":
            ax.scatter(m["mean_cost"], m["accuracy"], s=40, color="0.35", zorder=3)
            ax.annotate(r.name.split("/")[-1], (m["mean_cost"], m["accuracy"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points", color="0.25")
            xs.append(m["mean_cost"])
    for r in result.routers.values():
        m = r.metrics
        if r.kind == "candidate" or r.name == "best-single":
            continue
        costs = [p["cost"] for p in r.curve]
        accs = [p["accuracy"] for p in r.curve]
        xs.extend(costs)
        if r.name == "oracle":
            ax.scatter(costs, accs, marker="*", s=220, color="gold", edgecolor="black", zorder=4, label="oracle")
            continue
        if len(costs) == 1:
            ax.scatter(costs, accs, marker="D", s=45, zorder=4, label=r.name)
            continue
        order = sorted(range(len(costs)), key=lambda i: costs[i])
        style = "--" if r.name.startswith("random") else "-"
        (line,) = ax.plot([costs[i] for i in order], [accs[i] for i in order], style, marker=".", lw=1.5,
                          label=r.name, zorder=2)
        ax.scatter([m["mean_cost"]], [m["accuracy"]], s=70, facecolor="none", edgecolor=line.get_color(),
                   linewidth=1.8, zorder=5)
    best = result.routers.get("best-single")
    if best is not None:
        ax.axhline(best.metrics["accuracy"], color="0.6", lw=0.8, ls=":", zorder=1)
    if _use_log(xs):
        ax.set_xscale("log")
    ax.set_xlabel(_UNIT_LABEL.get(result.cost_unit, result.cost_unit))
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result.dataset}: cost-accuracy frontier ({result.n:,} queries)")
    return _save(fig, ax, path)


def _save(fig: "plt.Figure", ax: "plt.Axes", path: Path) -> Path:
    """Grid, legend, layout; write ``path`` and free the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def strong_calls_png(result: EvaluationResult, path: str | Path) -> Path | None:
    """Two candidates only: accuracy against the share of calls to the strong one (RouteLLM's plot)."""
    if result.pair is None:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    weak, strong = result.pair["weak"], result.pair["strong"]
    for r in result.routers.values():
        if r.kind == "candidate" or r.name == "best-single":
            continue
        pts = sorted(r.curve, key=lambda p: p["strong_pct"])
        x, y = [p["strong_pct"] for p in pts], [p["accuracy"] for p in pts]
        if r.name == "oracle":
            ax.scatter(x, y, marker="*", s=200, color="gold", edgecolor="black", zorder=4, label="oracle")
        elif len(x) == 1:
            ax.scatter(x, y, marker="D", s=40, label=r.name)
        else:
            label = r.name + (f" (APGR {r.metrics['apgr']:.3f})" if r.metrics.get("apgr") is not None else "")
            ax.plot(x, y, "--" if r.name.startswith("random") else "-", marker=".", label=label)
    for name, color in ((weak, "grey"), (strong, "red")):
        key = name if name in result.routers else f"single:{name}"
        ax.axhline(result.routers[key].metrics["accuracy"], color=color, ls="--", lw=1, label=name.split("/")[-1])
    ax.set_xlabel(f"calls to {strong.split('/')[-1]} (%)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result.dataset}: accuracy vs strong-model calls")
    return _save(fig, ax, path)


def budget_png(result: EvaluationResult, path: str | Path) -> Path | None:
    """Token-budget routers (``tier-budget``): accuracy against mean completion tokens, each router's
    curve beside the uniform-cap curve of its model; None when no router reports a budget."""
    from triage.eval.metrics.budget import TRUNCATION_RULE

    budgets = {name: r.metrics["budget"] for name, r in result.routers.items() if r.metrics.get("budget")}
    if not budgets:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    models: set[str] = set()
    for name, b in budgets.items():
        if b["model"] not in models:
            models.add(b["model"])
            u = b["uniform_curve"]
            ax.step([p["mean_completion_tokens"] for p in u], [p["accuracy"] for p in u], where="post", ls="--",
                    lw=1.2, label=f"uniform cap ({b['model'].split('/')[-1]})")
            ax.scatter([b["uncapped"]["mean_completion_tokens"]], [b["uncapped"]["accuracy"]], marker="s", s=50,
                       color="0.3", zorder=4, label=f"{b['model'].split('/')[-1]} uncapped")
        pts = sorted(b["curve"], key=lambda p: p["mean_completion_tokens"])
        d = b["default"]
        saved = "" if d["tokens_saved"] is None else f", {d['tokens_saved']:+.0%} tokens at equal accuracy"
        (line,) = ax.plot([p["mean_completion_tokens"] for p in pts], [p["accuracy"] for p in pts], "-",
                          marker=".", lw=1.5, label=name + saved)
        ax.scatter([d["mean_completion_tokens"]], [d["accuracy"]], s=70, facecolor="none",
                   edgecolor=line.get_color(), linewidth=1.8, zorder=5)
    ax.set_xlabel("mean completion tokens per query (reasoning included)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result.dataset}: token budgets ({result.n:,} queries)")
    fig.text(0.01, 0.005, TRUNCATION_RULE, fontsize=7, color="0.3")
    return _save(fig, ax, path)
