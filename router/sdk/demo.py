"""The end of `make demo`: route a handful of real queries (easy and hard) through the local model.

    from triage.router.sdk.demo import route_demo
    rows = route_demo(out_dir="demo-output")   # prints a table, writes routing_demo.json

Also runnable alone: ``python -m triage.router.sdk.demo [--out DIR] [--max-tokens N]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_QUERIES: tuple[tuple[str, str], ...] = (
    ("easy", "What is 7 + 5?"),
    ("easy", "What is the capital of France?"),
    ("easy", "Name a colour of the rainbow."),
    ("hard", "John buys 3 notebooks at $2.50 each, 2 pens at $1.20 each and a backpack that costs 4 times as "
             "much as one notebook and one pen together. He has a 15% discount coupon for the whole purchase. "
             "How much does he pay?"),
    ("hard", "Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20."),
    ("hard", "A bag has 4 red, 5 blue and 6 green marbles. Three are drawn without replacement. What is the "
             "probability that all three are different colours? Give the answer as a fraction in lowest terms."),
)


def _cap(sent: int | None, budget: int | None, demo_cap: int | None) -> str:
    """Why the answer got ``sent`` tokens at most: the strategy's budget, or the demo's tighter cap."""
    if sent is None:
        return "no cap"
    if budget is not None and sent < budget:
        return f"demo cap {sent} < budget {budget}" if sent == demo_cap else f"cap {sent} < budget {budget}"
    return f"budget {sent}"


def route_demo(router: Any = None, *, out_dir: str | Path | None = None, max_tokens: int = 48,
               queries: tuple[tuple[str, str], ...] = DEMO_QUERIES, echo: bool = True, wide: bool = False,
               on_answer: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Route and answer ``queries`` with the default (local) policy; returns one row per query.

    ``max_tokens`` caps every call (seconds per answer on 2 cores): a strategy whose budget is
    larger gets the cap, and the rows say so (``max_tokens_sent``, ``cap``). ``on_answer`` is
    called with each row as it is answered (the demo's progress bar)."""
    from triage.router.core import Router

    router = router or Router.from_file()
    rows = []
    for label, question in queries:
        response = router.completion(messages=[{"role": "user", "content": question}], max_tokens=max_tokens)
        info = response._hidden_params["triage"]
        d = info["decision"]
        sent = info["attempts"][-1]["max_tokens"]  # what the answering call was sent, not the budget
        budget = router.policy.strategies[info["strategy"]].max_tokens
        rows.append({
            "label": label, "question": question, "probe_version": d["probe_version"], "tier": d["tier"], "tier_probs": d["tier_probs"],
            "strategy": info["strategy"], "model": info["model"], "budget": budget, "max_tokens_sent": sent,
            "cap": _cap(sent, budget, max_tokens),
            "prompt_tokens": info["prompt_tokens"], "completion_tokens": info["completion_tokens"],
            "truncated": info["truncated"], "attempts": len(info["attempts"]),
            "latency_s": round(info["latency_s"], 3), "decision_ms": round(info["decision_latency_s"] * 1000, 2),
            "answer": response.choices[0].message.content,
        })
        if on_answer is not None:
            on_answer(rows[-1])
    if echo:
        from rich.console import Console

        from triage.console import print_table

        print_table(Console(), routing_table(
            rows, title=f"Routing demo: policy {router.policy.name}, probe {rows[0]['probe_version']}", wide=wide),
            wide=wide)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "routing_demo.json").write_text(json.dumps(rows, indent=2))
    return rows


def _short(text: str | None, n: int | None) -> str:
    text = (text or "").replace("\n", " ")
    return text if n is None or len(text) <= n else text[:n] + "..."


def routing_table(rows: list[dict[str, Any]], *, title: str, wide: bool = False) -> Any:
    """The demo's routing table; ``wide`` adds the model, attempts, decision time and the question."""
    from triage.console import Col, make_table

    cols = [Col("label"), Col("tier"), Col("P(hard)", "right"), Col("strategy"), Col("model", wide_only=True),
            Col("max tokens sent"), Col("tokens", "right"), Col("attempts", "right", wide_only=True),
            Col("decision", "right", wide_only=True), Col("latency", "right"),
            Col("question", wide_only=True), Col("answer")]
    cells = [[r["label"], r["tier"], f"{r['tier_probs']['hard']:.2f}", r["strategy"], r["model"], r["cap"],
              f"{r['prompt_tokens']}+{r['completion_tokens']}" + (" cut" if r["truncated"] else ""),
              r["attempts"], f"{r['decision_ms']:.0f} ms", f"{r['latency_s']:.1f}s",
              _short(r["question"], None), _short(r["answer"], None if wide else 60)] for r in rows]
    caption = ("max tokens sent: the cap of the answering call (the strategy's budget, or the demo's "
               "tighter --max-tokens); tokens: prompt+completion, 'cut' when the cap cut the answer")
    if not wide:
        caption += "; --wide adds model, attempts, decision time, question"
    return make_table(cols, cells, wide=wide, title=title, caption=caption)


def demo_step(ctx: Any) -> None:
    """A step for :mod:`triage.eval.demo` (``add_step(Step("route", "...", demo_step), before=None)``):
    route the demo queries through the default local policy, write OUT/routing_demo.json."""
    from triage.console import print_table, progress_bar

    with progress_bar(ctx.console) as bar:
        task = bar.add_task("answering the demo queries with the local model", total=len(DEMO_QUERIES))
        rows = route_demo(out_dir=ctx.out, echo=False, on_answer=lambda _row: bar.advance(task))
    title = f"routing real queries through the local model (probe {rows[0]['probe_version']})"
    wide = bool(getattr(ctx, "wide", False))
    print_table(ctx.console, routing_table(rows, title=title, wide=wide), wide=wide)
    ctx.artifacts["routing_demo"] = ctx.out / "routing_demo.json"


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - thin CLI
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--policy", default=None)
    parser.add_argument("--wide", action="store_true", help="every column (model, attempts, decision time, question)")
    args = parser.parse_args(argv)
    from triage.router.core import Router

    route_demo(Router.from_file(args.policy), out_dir=args.out, max_tokens=args.max_tokens, wide=args.wide)


if __name__ == "__main__":  # pragma: no cover
    main()
