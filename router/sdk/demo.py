"""The end of `make demo`: route a handful of real queries (easy and hard) through the local model.

    from triage.router.sdk.demo import route_demo
    rows = route_demo(out_dir="demo-output")   # prints a table, writes routing_demo.json

Also runnable alone: ``python -m triage.router.sdk.demo [--out DIR] [--max-tokens N]``.
"""

from __future__ import annotations

import argparse
import json
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


def route_demo(router: Any = None, *, out_dir: str | Path | None = None, max_tokens: int = 48,
               queries: tuple[tuple[str, str], ...] = DEMO_QUERIES, echo: bool = True) -> list[dict[str, Any]]:
    """Route and answer ``queries`` with the default (local) policy; returns one row per query."""
    from triage.router.core import Router

    router = router or Router.from_file()
    rows = []
    for label, question in queries:
        response = router.completion(messages=[{"role": "user", "content": question}], max_tokens=max_tokens)
        info = response._hidden_params["triage"]
        d = info["decision"]
        rows.append({
            "label": label, "question": question, "probe_version": d["probe_version"], "tier": d["tier"], "tier_probs": d["tier_probs"],
            "strategy": info["strategy"], "model": info["model"], "max_tokens": d["max_tokens"],
            "prompt_tokens": info["prompt_tokens"], "completion_tokens": info["completion_tokens"],
            "truncated": info["truncated"], "attempts": len(info["attempts"]),
            "latency_s": round(info["latency_s"], 3), "decision_ms": round(info["decision_latency_s"] * 1000, 2),
            "answer": response.choices[0].message.content,
        })
    if echo:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Routing demo: policy {router.policy.name}, probe {rows[0]['probe_version']}")
        for col in ("label", "tier", "P(hard)", "strategy", "budget", "tokens", "latency", "question"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["label"], r["tier"], f"{r['tier_probs']['hard']:.2f}", r["strategy"], str(r["max_tokens"]),
                          f"{r['prompt_tokens']}+{r['completion_tokens']}", f"{r['latency_s']:.1f}s",
                          r["question"][:48] + ("..." if len(r["question"]) > 48 else ""))
        Console().print(table)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "routing_demo.json").write_text(json.dumps(rows, indent=2))
    return rows


def demo_step(ctx: Any) -> None:
    """A step for :mod:`triage.eval.demo` (``add_step(Step("route", "...", demo_step), before=None)``):
    route the demo queries through the default local policy, write OUT/routing_demo.json."""
    rows = route_demo(out_dir=ctx.out, echo=False)
    from rich.table import Table

    table = Table(title=f"routing real queries through the local model (probe {rows[0]['probe_version']})")
    for col in ("label", "tier", "P(hard)", "strategy", "budget", "tokens", "latency", "answer"):
        table.add_column(col)
    for r in rows:
        answer = (r["answer"] or "").replace("\n", " ")
        table.add_row(r["label"], r["tier"], f"{r['tier_probs']['hard']:.2f}", r["strategy"], str(r["max_tokens"]),
                      f"{r['prompt_tokens']}+{r['completion_tokens']}", f"{r['latency_s']:.1f}s",
                      answer[:60] + ("..." if len(answer) > 60 else ""))
    ctx.console.print(table)
    ctx.artifacts["routing_demo"] = ctx.out / "routing_demo.json"


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - thin CLI
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--policy", default=None)
    args = parser.parse_args(argv)
    from triage.router.core import Router

    route_demo(Router.from_file(args.policy), out_dir=args.out, max_tokens=args.max_tokens)


if __name__ == "__main__":  # pragma: no cover
    main()
