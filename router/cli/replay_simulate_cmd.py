"""`triage replay simulate`: registered on the `replay` sub-app defined in replay_cmd.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from triage.router.cli.common import console, fail, user_errors
from triage.router.cli.replay_cmd import app


@app.command("simulate")
@user_errors
def simulate_cmd(
    data: Annotated[Path, typer.Argument(help="Full-information replay JSON Lines (every strategy's outcome per query).")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy that routes the traffic (with its exploration).")],
    ledger: Annotated[str, typer.Option("--ledger", help="Ledger to write to: SQLite path or postgresql:// URL.")],
    n: Annotated[int | None, typer.Option("--n", "--rounds", help="Route only the first N queries (file/time order).")] = None,
    skip: Annotated[int, typer.Option("--skip", help="Start after the first SKIP queries (the next round's traffic).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Goes into every request id (sim<seed>:<id>): other draws, no id clash.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Replay DATA as live traffic into a real ledger: the policy (exploration included) picks one
    strategy per query and only that strategy's recorded outcome is revealed (outcome source
    `simulated`); prompts are stored. A policy's `shadow:` block also reveals the shadow strategy's
    outcome on the sampled requests, as a linked shadow record. No model is called."""
    from triage.eval.simulate import simulate
    from triage.replay import read_replay

    if not data.is_file():
        fail(f"replay file not found: {data}")
    if n is not None and n < 1:
        fail(f"--n must be at least 1, got {n}")
    if skip < 0:
        fail(f"--skip must be >= 0, got {skip}")
    records = read_replay(data)[skip:]
    result = simulate(records, policy, ledger, n=n, seed=seed)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
        return
    share = ", ".join(f"{k} {v}" for k, v in sorted(result.chosen.items()))
    console.print(f"simulated {result.queries:,} queries with {result.policy} v{result.policy_version} into "
                  f"{result.ledger}: {result.explored:,} explored; chosen {share}; accuracy {result.accuracy:.3f} "
                  f"(greedy {result.greedy_accuracy:.3f}); cost ${result.cost_usd:.4g} "
                  f"(greedy ${result.greedy_cost_usd:.4g}, exploration {result.exploration_cost_usd:+.4g})",
                  highlight=False)
    if result.shadows or result.shadows_dropped_budget:  # the policy's `shadow:` block
        shadow_share = ", ".join(f"{k} {v}" for k, v in sorted(result.shadow_chosen.items()))
        console.print(f"shadow calls: {result.shadows:,} ({shadow_share or 'none'}), ${result.shadow_cost_usd:.4g}; "
                      f"{result.shadows_dropped_budget:,} dropped by the daily cap", highlight=False)
