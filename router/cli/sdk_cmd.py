"""`triage route` and `triage chat`: the SDK from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from triage.router.cli.common import console, user_errors

PolicyOption = Annotated[
    Path | None, typer.Option("--policy", "-p", help="Policy YAML (default: policies/examples/local.yaml).")
]


def _router(policy: Path | None):  # noqa: ANN202 - keeps the import lazy
    from triage.router.core import Router

    return Router.from_file(policy)


def route_cmd(
    question: Annotated[str, typer.Argument(help="The user's message.")],
    policy: PolicyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Print the routing decision for a question (no model is called)."""
    decision = _router(policy).route([{"role": "user", "content": question}])
    if as_json:
        typer.echo(decision.model_dump_json(indent=2))
        return
    probs = "  ".join(f"{t} {p:.2f}" for t, p in decision.tier_probs.items())
    cost = f"${decision.expected_cost_usd:.6f}" if decision.expected_cost_usd is not None else "n/a"
    console.print(f"tier [bold]{decision.tier}[/] ({probs})  ->  strategy [bold]{decision.strategy}[/] "
                  f"(model {decision.model}, max_tokens {decision.max_tokens}, rule {decision.rule}, "
                  f"expected cost {cost}; policy {decision.policy} v{decision.policy_version}, "
                  f"probe {decision.probe_version})", highlight=False, soft_wrap=True)


def chat_cmd(
    question: Annotated[str, typer.Argument(help="The user's message.")],
    policy: PolicyOption = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Cap the answer (tightens the strategy's budget).")
    ] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer and receipt as one JSON object.")] = False,
) -> None:
    """Route, call the chosen model and print the answer with a short receipt."""
    router = _router(policy)
    messages = [{"role": "user", "content": question}]
    kwargs = {"max_tokens": max_tokens} if max_tokens is not None else {}
    if stream and not as_json:
        s = router.completion(messages=messages, stream=True, **kwargs)
        for chunk in s:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                typer.echo(piece, nl=False)
        typer.echo("")
        info, text = s.triage, s.text
    else:
        response = router.completion(messages=messages, **kwargs)
        info, text = response._hidden_params["triage"], response.choices[0].message.content or ""
        if not as_json:
            typer.echo(text)
    if as_json:
        typer.echo(json.dumps({"answer": text, "triage": info}, indent=2, default=str))
        return
    console.print(receipt_line(info), highlight=False, style="dim", soft_wrap=True)


def receipt_line(info: dict) -> str:
    d = info["decision"]
    tokens = f"{info['prompt_tokens'] or 0}+{info['completion_tokens'] or 0} tokens"
    if info.get("reasoning_tokens"):
        tokens += f" ({info['reasoning_tokens']} reasoning)"
    cost = f"${info['cost_usd']:.6f}" if info.get("cost_usd") is not None else "cost n/a"
    extra = []
    if len(info["attempts"]) > 1:
        extra.append(" -> ".join(f"{a['reason']}:{a['strategy']}" for a in info["attempts"]))
    if info.get("truncated"):
        extra.append("truncated")
    tail = f"  [{'; '.join(extra)}]" if extra else ""
    return (f"-- tier {d['tier']} | strategy {info['strategy']} | model {info['model']} | {tokens} | {cost} | "
            f"{info['latency_s']:.2f} s (decision {info['decision_latency_s'] * 1000:.1f} ms){tail}")


def register(app: typer.Typer) -> None:
    """Add the top-level SDK commands to ``app``."""
    app.command("route")(user_errors(route_cmd))
    app.command("chat")(user_errors(chat_cmd))
