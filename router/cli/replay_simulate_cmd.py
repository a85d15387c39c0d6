"""`triage replay simulate`: registered on the `replay` sub-app defined in replay_cmd.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from triage.router.cli.common import console, fail, user_errors
from triage.router.cli.learn_cmd import DEFAULT_OF, DEFAULT_TARGET_ACCURACY, OBJECTIVE_HELP, objective_from_options
from triage.router.cli.replay_cmd import app


@app.command("simulate")
@user_errors
def simulate_cmd(
    data: Annotated[Path, typer.Argument(help="Full-information replay JSON Lines (every strategy's outcome per query).")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy that routes the traffic (with its exploration).")],
    ledger: Annotated[str, typer.Option("--ledger", help="Ledger to write to: SQLite path or postgresql:// URL.")],
    n: Annotated[int | None, typer.Option("--n", help="Route only the first N queries (time order when every record has "
                                                       "a `time`, else file order).")] = None,
    skip: Annotated[int, typer.Option("--skip", help="Start after the first SKIP queries, in the same order (the next "
                                                    "round's traffic).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Goes into every request id (sim<seed>:<id>): other draws, no id clash.")] = 0,
    explore: Annotated[str | None, typer.Option(
        "--explore", help="Route with this exploration instead of the policy's block: epsilon:E, softmax:T or none "
                          "(the file is not changed; the propensities logged are this one's).")] = None,
    rounds: Annotated[int | None, typer.Option(
        "--rounds", help="Cut the traffic into this many rounds and run `triage learn --apply` after each: the next round "
                         "is routed by the version it wrote (round r's request ids use seed + r).")] = None,
    objective: Annotated[str | None, typer.Option("--objective", help="With --rounds: the learning step's " + OBJECTIVE_HELP
                                                  + " Default target-accuracy.")] = None,
    tier_shares: Annotated[str | None, typer.Option("--tier-shares", help="With --rounds: easy,normal,hard shares.")] = None,
    target_accuracy: Annotated[float | None, typer.Option("--target-accuracy", help="With --rounds: share of the reference's "
                                                                                     f"accuracy to reach (default {DEFAULT_TARGET_ACCURACY}).")] = None,
    of: Annotated[str | None, typer.Option("--of", help=f"With --rounds: reference of --target-accuracy (default {DEFAULT_OF}).")] = None,
    max_cost_per_query: Annotated[float | None, typer.Option("--max-cost-per-query", help="With --rounds: cost cap, USD per query.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Replay DATA as live traffic into a real ledger: the policy (exploration included) picks one
    strategy per query and only that strategy's recorded outcome is revealed (outcome source
    `simulated`); prompts are stored. A policy's `shadow:` block also reveals the shadow strategy's
    outcome on the sampled requests, as a linked shadow record. No model is called. With --rounds,
    `triage learn --apply` (its defaults, and the objective given here) runs after each round."""
    from triage.eval.simulate import in_order
    from triage.policies.exploration import parse_exploration
    from triage.replay import read_replay

    if not data.is_file():
        fail(f"replay file not found: {data}")
    if n is not None and n < 1:
        fail(f"--n must be at least 1, got {n}")
    if skip < 0:
        fail(f"--skip must be >= 0, got {skip}")
    learn_options = {"--objective": objective, "--tier-shares": tier_shares, "--target-accuracy": target_accuracy,
                     "--of": of, "--max-cost-per-query": max_cost_per_query}
    if rounds is None:
        given = [k for k, v in learn_options.items() if v is not None]
        if given:
            fail(f"{', '.join(given)} set the learning step of --rounds; without --rounds nothing is learned")
    elif rounds < 1:
        fail(f"--rounds must be at least 1, got {rounds}")
    exploration = "policy" if explore is None else parse_exploration(explore)
    records = in_order(read_replay(data))[skip:][:n]
    if not records:
        fail(f"no records to simulate: {data} has none after --skip {skip}")
    if rounds is None:
        _one_run(records, policy, ledger, seed, exploration, json_out)
        return
    obj = objective_from_options(objective or "target-accuracy", tier_shares,
                                 DEFAULT_TARGET_ACCURACY if target_accuracy is None else target_accuracy,
                                 of or DEFAULT_OF, max_cost_per_query)
    _rounds(records, policy, ledger, seed, exploration, rounds, obj, json_out)


def _one_run(records: list[Any], policy: Path, ledger: str, seed: int, exploration: Any, json_out: bool) -> None:
    from triage.eval.simulate import simulate

    result = simulate(records, policy, ledger, seed=seed, exploration=exploration)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
        return
    _say_simulation(result)


def _say_simulation(result: Any, prefix: str = "") -> None:
    share = ", ".join(f"{k} {v}" for k, v in sorted(result.chosen.items()))
    console.print(f"{prefix}simulated {result.queries:,} queries with {result.policy} v{result.policy_version} into "
                  f"{result.ledger}: {result.explored:,} explored; chosen {share}; accuracy {result.accuracy:.3f} "
                  f"(greedy {result.greedy_accuracy:.3f}); cost ${result.cost_usd:.4g} "
                  f"(greedy ${result.greedy_cost_usd:.4g}, exploration {result.exploration_cost_usd:+.4g})",
                  highlight=False, soft_wrap=True)
    if result.shadows or result.shadows_dropped_budget:  # the policy's `shadow:` block
        shadow_share = ", ".join(f"{k} {v}" for k, v in sorted(result.shadow_chosen.items()))
        console.print(f"{prefix}shadow calls: {result.shadows:,} ({shadow_share or 'none'}), ${result.shadow_cost_usd:.4g}; "
                      f"{result.shadows_dropped_budget:,} dropped by the daily cap", highlight=False, soft_wrap=True)


def _rounds(records: list[Any], policy: Path, ledger: str, seed: int, exploration: Any, rounds: int,
            objective: Any, json_out: bool) -> None:
    from triage.eval.learn import LearnConfig
    from triage.eval.simulate_rounds import simulate_rounds

    command = "triage " + " ".join(sys.argv[1:])
    configs = lambda r: [LearnConfig(ledger=ledger, policy=policy, objective=objective, apply=True,  # noqa: E731
                                     seed=seed + r, command=command)]
    done = []
    for rnd in simulate_rounds(records, policy, ledger, configs=configs, rounds=rounds, seed=seed,
                               exploration=exploration):
        done.append(rnd)
        if json_out:
            continue
        prefix = f"round {rnd.round}/{rnd.of}: "
        _say_simulation(rnd.simulation, prefix)
        for reason in rnd.refused:
            console.print(f"{prefix}learning refused: {reason}", highlight=False, soft_wrap=True)
        if rnd.learned is not None:
            res = rnd.learned
            console.print(f"{prefix}learned v{res.new_version} from {res.rows:,} logged queries and applied it "
                          f"({res.policy}); off-policy: {res.verdict}", highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps({"rounds": [r.to_json() for r in done]}, default=str))
    if not any(r.learned for r in done):
        fail(f"no round learned a new version; the last refusal: {done[-1].refused[-1]}")
