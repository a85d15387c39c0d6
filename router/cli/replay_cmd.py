"""`triage replay ...` commands: `import` and `schema` here; `evaluate` lives in replay_eval_cmd.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from triage.router.cli.common import console, err_console, fail, user_errors

app = typer.Typer(help="Replay data: import logged outcomes, print the schema, evaluate routers.", no_args_is_help=True)

SOURCES_HELP = "pricing-reversal, routerbench, routellm or gsm8k-solutions"


@app.command("import")
@user_errors
def import_cmd(
    source: Annotated[str, typer.Argument(help=f"Dataset source: {SOURCES_HELP}.")],
    path: Annotated[Path, typer.Argument(help="Dataset folder (e.g. ../shared/data/routellm) or one file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Replay JSON Lines file to write.")],
    prices: Annotated[
        Path | None, typer.Option("--prices", help="Price table (YAML/JSON). Default: the shipped table.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="One sub-dataset, e.g. aime-hybrid (pricing-reversal) or gsm8k (routellm)."),
    ] = None,
) -> None:
    """Convert a public logged-outcome dataset to the replay format."""
    from triage.eval.importers import make_importer
    from triage.eval.prices import load_prices

    importer = make_importer(source, dataset=dataset)  # unknown source -> one line, exit 2
    if not path.exists():
        raise FileNotFoundError(f"path not found: {path}")
    table = load_prices(prices)
    started = time.perf_counter()
    records = list(_with_progress(importer.load(path, prices=table), f"importing {source}"))
    if not records:
        fail(f"no records found for source {source!r} at {path}")
    from triage.replay import write_replay

    try:
        n = write_replay(records, out)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    elapsed = time.perf_counter() - started
    title = f"{source}: {n:,} records -> {out} ({elapsed:.1f} s)"
    tables = _summary(records, title=title)
    if len(tables) > 1:
        console.print(f"[bold]{title}[/]")
    for table in tables:
        console.print(table)
    if prices is not None and not importer.uses_prices:
        console.print(f"[dim]{source} logs its own USD costs; --prices was only validated.[/]")


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON schema of one replay record (one JSON document)."""
    from triage.replay.schema import SCHEMA_VERSION, ReplayRecord

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **ReplayRecord.model_json_schema()}
    schema["x-triage-schema-version"] = SCHEMA_VERSION
    typer.echo(json.dumps(schema, indent=2))


def _with_progress(items: Iterable, label: str) -> Iterator:
    """Yield ``items`` while a transient spinner on stderr counts them."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        for i, item in enumerate(items, start=1):
            if i % 256 == 0:
                progress.update(task, completed=i)
            yield item


def _summary(records: list, *, title: str) -> list[Table]:
    """One table per task (pooled accuracy across benchmarks means little): runs, accuracy, cost, tokens."""
    import numpy as np  # here, not at module level: `triage --help` and the other commands need none of it

    from triage.replay import ReplayData

    data = ReplayData.from_records(records, keep_records=False)
    tasks = sorted({t for t in data.tasks if t is not None})
    groups: list[tuple[str | None, ReplayData]] = [(None, data)]
    if len(tasks) > 1:
        groups = [(t, data.subset(np.flatnonzero([x == t for x in data.tasks]))) for t in tasks]
    tables = []
    for task, part in groups:
        splits = {s: part.splits.count(s) for s in ("train", "test") if s in part.splits}
        caption = f"{part.n:,} records, {part.m} candidates"
        if splits:
            caption += "; split: " + ", ".join(f"{k} {v:,}" for k, v in splits.items())
        table = Table(title=title if task is None else f"task {task}", caption=caption)
        table.add_column("candidate", overflow="fold")
        for col in ("runs", "accuracy", "mean $", "total $", "compl. tok"):
            table.add_column(col, justify="right", no_wrap=True)
        for j, name in enumerate(part.candidates):
            ran = ~np.isnan(part.score[:, j])
            if not ran.any():
                continue
            cost, tokens = part.cost[ran, j], part.completion_tokens[ran, j]
            table.add_row(
                name,
                f"{int(ran.sum()):,}",
                f"{np.mean(part.score[ran, j]):.3f}",
                _money(float(np.nanmean(cost))) if np.isfinite(cost).any() else "-",
                _money(float(np.nansum(cost))) if np.isfinite(cost).any() else "-",
                f"{np.nanmean(tokens):,.0f}" if np.isfinite(tokens).any() else "-",
            )
        tables.append(table)
    return tables


def _money(x: float) -> str:
    return f"{x:,.2f}" if x >= 1 else f"{x:.5f}"
