"""`triage replay evaluate`: registered on the `replay` sub-app defined in replay_cmd.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from triage.router.cli.common import console, err_console, fail, read_replay_or_fail, user_errors
from triage.router.cli.replay_cmd import app


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    data: Annotated[Path | None, typer.Argument(
        help="Replay JSON Lines file (see `triage replay schema`); omit with --logged.")] = None,
    router: Annotated[list[str] | None, typer.Option(
        "--router", "-r", help="Router spec NAME or NAME:key=value,... (repeatable), e.g. threshold:score=digits.")] = None,
    policy: Annotated[list[Path] | None, typer.Option(
        "--policy", "-p", help="Replay a policy file exactly (repeatable); same as --router policy:path=FILE.")] = None,
    folds: Annotated[int, typer.Option("--folds", help="Cross-fitting folds for learned routers (no train/test split).")] = 5,
    budget: Annotated[list[str] | None, typer.Option(
        "--budget", help="Completion-token cap CANDIDATE=TOKENS (repeatable): longer answers count as truncated.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Candidate TEP is measured against (default: the best one).")] = None,
    candidates: Annotated[str | None, typer.Option("--candidates", help="Comma-separated candidates to keep.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the table.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write report.html and PNG plots to this folder.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Report and skip bad lines instead of failing.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of folds and bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap replicates (0: no intervals).")] = 1000,
    wide: Annotated[bool, typer.Option("--wide", help="Print every column (tokens/query, AIQ, cost ratio).")] = False,
    exclude_trained: Annotated[bool, typer.Option(
        "--exclude-trained", help="Drop the rows (with --logged: the logged queries) a policy's probe was trained on "
                                  "(else they are flagged in-sample).")] = False,
    logged: Annotated[Path | None, typer.Option(
        "--logged", help="Off-policy evaluation of one --policy from logged bandit data (`triage ledger export`).")] = None,
    reward_model: Annotated[str, typer.Option(
        "--reward-model", help="--logged: DR reward model, `probe` (the target probe's P(success)) or `fitted`.")] = "probe",
    support_tolerance: Annotated[float, typer.Option(
        "--support-tolerance", help="--logged: share of target decisions allowed without logged support.")] = 0.01,
    null_propensity_as_one: Annotated[bool, typer.Option(
        "--null-propensity-as-one", help="--logged: records without a propensity were chosen with probability 1.")] = False,
) -> None:
    """Replay logged outcomes through baselines and routers; print the frontier table.

    With --logged: estimate one policy's accuracy and cost from logged bandit data (one outcome per
    query) by IPS, self-normalised IPS and doubly-robust estimators."""
    if logged is not None:
        from triage.router.cli.replay_ope_cmd import run_logged

        if data is not None or router or len(policy or []) != 1:
            fail("--logged evaluates exactly one --policy and takes no replay file or --router")
        assert policy is not None
        if not policy[0].is_file():
            fail(f"policy file not found: {policy[0]}")
        run_logged(logged, policy[0], reward_model=reward_model, tolerance=support_tolerance,
                   null_as_one=null_propensity_as_one, n_boot=bootstrap, seed=seed, json_out=json_out,
                   skip_invalid=skip_invalid, exclude_trained=exclude_trained)
        return
    if data is None:
        fail("give a replay file (or --logged EXPORT --policy P for off-policy evaluation)")
    assert data is not None
    from triage.eval.evaluation import apply_budgets, parse_budget
    from triage.eval.evaluation.table import print_frontier
    from triage.replay import ReplayData
    from triage.eval.routers import make_router

    # Check every option before reading the data, so a typo fails fast.
    budgets = [parse_budget(b) for b in budget or []]
    specs = list(router or [])
    for path in policy or []:
        if not path.is_file():
            fail(f"policy file not found: {path}")
        # A comma in the path would be read as the start of another router option.
        if "," in str(path):
            fail(f"policy path may not contain ',': {path}")
        specs.append(f"policy:path={path}")
    for spec in specs:
        make_router(spec)
    if folds < 2:
        fail(f"--folds must be at least 2, got {folds}")
    if bootstrap < 0:
        fail(f"--bootstrap must be >= 0, got {bootstrap}")
    if not data.exists():
        fail(f"replay file not found: {data}")
    if data.is_dir():
        fail(f"{data} is a folder; give a replay .jsonl file (make one with `triage replay import`)")

    records = read_replay_or_fail(data, skip_invalid=skip_invalid)
    dataset = ReplayData.from_records(records, name=data.stem)
    if candidates:
        names = [c.strip() for c in candidates.split(",") if c.strip()]
        if not names:
            fail("--candidates is empty")
        dataset = dataset.select_candidates(names)
    dataset = apply_budgets(dataset, budgets)
    dataset, flags = _trained_rows(dataset, specs, exclude=exclude_trained, folds=folds, seed=seed)
    result = _run(dataset, specs, folds=folds, seed=seed, n_boot=bootstrap, baseline=baseline,
                  budgets=dict(budgets), quiet=json_out)

    _flag_in_sample(result, flags)
    if json_out:
        typer.echo(json.dumps(result.to_json()))
    else:
        print_frontier(console, result, wide=wide)
    if report is not None:
        from triage.eval.report import write_report

        path = write_report([result], report)
        err_console.print(f"report: {path}", highlight=False)


def _run(dataset, specs, *, quiet: bool, **kwargs):  # noqa: ANN001, ANN202
    """evaluate() with a transient progress bar on stderr (a terminal only)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from triage.eval.evaluation import evaluate

    n_routers = dataset.m + 3 + (dataset.m >= 3) + len(specs)
    if quiet or not err_console.is_terminal:
        return evaluate(dataset, specs, **kwargs)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(f"evaluating {dataset.name}", total=n_routers)
        return evaluate(dataset, specs, progress=lambda name: progress.advance(task), **kwargs)


def _trained_rows(dataset, specs, *, exclude: bool, folds: int, seed: int):  # noqa: ANN001, ANN202
    """Policies whose probe trained on evaluated rows: drop those rows (``exclude``) or return the flags."""
    import numpy as np

    from triage.eval.evaluation import make_protocol
    from triage.eval.insample import trained_rows

    flags = trained_rows(specs, dataset)
    if not flags:
        return dataset, []
    full_rows = np.flatnonzero(~np.isnan(dataset.score).any(axis=1))  # evaluate() scores complete rows only
    if exclude:
        seen = np.zeros(dataset.n, dtype=bool)
        for f in flags:
            seen |= f.mask
        if seen.any():
            keep = np.flatnonzero(~seen)
            if not np.isin(full_rows, keep).any():
                fail(f"--exclude-trained: the policies' probes were trained on every evaluated query of {dataset.name}")
            err_console.print(f"--exclude-trained: {int(seen[full_rows].sum()):,} queries a policy's probe was "
                              "trained on are left out", highlight=False)
            dataset = dataset.subset(keep)
        return dataset, [f for f in flags if not f.known]
    full = dataset.subset(full_rows)
    evaluated = full_rows[make_protocol(full, folds=folds, seed=seed).eval_rows]
    return dataset, [(f, evaluated) for f in flags if not f.known or f.mask[evaluated].any()]


def _flag_in_sample(result, flags) -> None:  # noqa: ANN001
    """Mark in-sample policy rows (the table prints the mark, --json carries ``in_sample``)."""
    import numpy as np

    for item in flags:
        flag, evaluated = item if isinstance(item, tuple) else (item, np.zeros(0, dtype=np.int64))
        result.notes.append(flag.describe(evaluated))
        for r in result.routers.values():
            if r.spec == flag.spec:
                r.metrics["in_sample"] = ({"rows": int(flag.mask[evaluated].sum()), "of": int(len(evaluated)),
                                           "probe": flag.probe} if flag.known else "unknown")
