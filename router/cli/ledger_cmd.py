"""`triage ledger ...`: report, export, feedback, migrate, recover."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from triage.console import Col, make_table, print_table
from triage.router.cli.common import console, fail, user_errors
from triage.router.cli.ledger_grade_cmd import grade_cmd

app = typer.Typer(help="The ledger of routed calls: reports, exports, outcomes, schema.", no_args_is_help=True)

LedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="SQLite path or postgresql:// URL. Default: $TRIAGE_LEDGER_URL or "
                                  "triage-ledger.sqlite."),
]


class GroupBy(str, Enum):
    tier = "tier"
    strategy = "strategy"
    model = "model"
    day = "day"


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


class CandidateKey(str, Enum):
    strategy = "strategy"
    model = "model"


def _open(url: str | None, *, existing: bool = False) -> Any:
    """The ledger at ``url`` (default: the settings'). ``existing``: commands that only read or
    annotate records refuse a SQLite file that is not there, instead of creating an empty ledger
    and reporting nothing (a mistyped ``--ledger`` looked like a ledger with no traffic)."""
    from triage.router.ledger.sqlite_store import sqlite_path
    from triage.router.ledger.store import LedgerError, open_ledger, url_scheme
    from triage.settings import get_settings

    url = url or get_settings().ledger_url
    if existing and url and url_scheme(url) == "sqlite" and not sqlite_path(url).is_file():
        raise LedgerError(f"no ledger at {sqlite_path(url)}: check --ledger (or TRIAGE_LEDGER_URL); "
                          "commands that only read a ledger do not create one")
    return open_ledger(url)


def _fmt(v: Any, spec: str = ",.3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def _compact(n: float | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


@app.command("report")
@user_errors
def report_cmd(
    ledger: LedgerOpt = None,
    by: Annotated[GroupBy, typer.Option("--by", help="Group rows by tier, strategy, model or day.")] = GroupBy.strategy,
    since: Annotated[str | None, typer.Option("--since", help="Only records since: 7d, 12h, 30m or an ISO date.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Strategy TEP is measured against.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every column (scored, accuracy per 1k tokens, "
                                       "escalation and truncation rates), whatever the width.")] = False,
) -> None:
    """Requests, accuracy, tokens, accuracy per 1k tokens, cost, cost-of-pass, TEP, escalation, truncation,
    p50/p95 latency (the table fits 120 columns; --wide for all of them, --json for everything)."""
    from triage.router.ledger.report import ledger_report, parse_since

    since_dt = parse_since(since) if since else None
    with _open(ledger, existing=True) as store:
        report = ledger_report(store, by=by.value, since=since_dt, baseline=baseline)
        where = store.where
    if as_json:
        typer.echo(json.dumps({"ledger": where, **report}, indent=2))
        return
    window = f" since {report['since']}" if report["since"] else ""
    columns = [Col(""), Col("req", "right"), Col("scored", "right", wide_only=True), Col("acc", "right"),
               Col("tokens p/c/r", "right"), Col("acc/1k tok", "right", wide_only=True), Col("cost $", "right"),
               Col("$/pass", "right"), Col(f"TEP vs {baseline}" if baseline else "TEP", "right"),
               Col("esc", "right", wide_only=True), Col("trunc", "right", wide_only=True),
               Col("p50 s", "right"), Col("p95 s", "right")]
    rows = []
    for row in [*report["groups"], {"key": "[bold]all[/]", **report["overall"]}]:
        tok = row["tokens"]
        cop = row["cost_of_pass"]
        if cop is None and row["n_scored"] and row["expected_correct"] == 0 and row["total_cost"] is not None:
            cop = math.inf
        rows.append([
            str(row["key"]), f"{row['requests']:,}", f"{row['n_scored']:,}", _fmt(row["accuracy"]),
            "/".join(_compact(tok[k]) for k in ("prompt", "completion", "reasoning")),
            _fmt(row["accuracy_per_1k_tokens"]), _fmt(row["total_cost"], ",.4f"), _fmt(cop, ",.5f"),
            _fmt(row["tep"], ",.2f"), _fmt(row["escalation_rate"], ".0%"), _fmt(row["truncation_rate"], ".0%"),
            _fmt(row["latency"]["p50_s"], ",.2f"), _fmt(row["latency"]["p95_s"], ",.2f"),
        ])
    title = f"ledger {where}: {report['n']:,} requests{window}, by {report['by']}"
    caption = None if wide else "--wide: 4 more columns (scored, accuracy per 1k tokens, escalation, truncation)"
    print_table(console, make_table(columns, rows, wide=wide, title=title, caption=caption), wide=wide)
    stored = report["stored"]
    console.print(f"stored for training: prompts {stored['prompts']:,} / features {stored['features']:,} "
                  f"of {stored['records']:,} records ({stored['neither']:,} with neither)", highlight=False)
    shadow = report.get("shadow") or {}
    if shadow.get("requests"):  # background calls of the policy's `shadow:` block, not in the figures above
        console.print(f"shadow: {shadow['requests']:,} requests, ${shadow['cost_usd']:,.4f}", highlight=False)


@app.command("export")
@user_errors
def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="jsonl (the replay format) or parquet.")] = ExportFormat.jsonl,
    ledger: LedgerOpt = None,
    since: Annotated[str | None, typer.Option("--since", help="Only records since: 7d, 12h or an ISO date.")] = None,
    candidate: Annotated[CandidateKey, typer.Option("--candidate", help="Name the replay candidate by strategy or model.")] = CandidateKey.strategy,
    without_prompts: Annotated[bool, typer.Option(
        "--without-prompts", help="Export records that kept neither prompt text nor probe features "
        "(refused by default: nothing can be trained on them).")] = False,
) -> None:
    """Write records that have outcomes as replay data (for `triage replay evaluate`, recalibration and
    training); each row's `logged` field holds the logged action, its propensity and the probe output."""
    from triage.router.ledger.export import export_jsonl, export_parquet
    from triage.router.ledger.report import parse_since

    since_dt = parse_since(since) if since else None
    export = export_jsonl if fmt == ExportFormat.jsonl else export_parquet
    with _open(ledger, existing=True) as store:
        try:
            res = export(store, out, since=since_dt, candidate=candidate.value, require_prompts=not without_prompts)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"wrote {res.written:,} records to {res.path} ({fmt.value}); "
                  f"{res.skipped_unscored:,} without an outcome were left out")


@app.command("feedback")
@user_errors
def feedback_cmd(
    request_id: Annotated[str, typer.Argument(help="The request id (x-triage-request-id).")],
    score: Annotated[float, typer.Argument(help="Quality in 0..1 (1 = correct).")],
    source: Annotated[str, typer.Option("--source", help="Who judged: user, judge, exact-match, ...")] = "user",
    ledger: LedgerOpt = None,
) -> None:
    """Attach an outcome to a recorded request (the latest outcome counts in reports)."""
    from triage.router.ledger.records import OutcomeRecord

    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        fail(f"score must be a number in 0..1, got {score}")
    try:
        outcome = OutcomeRecord(request_id=request_id, score=score, source=source)
    except ValidationError as exc:  # a bad source or request id
        err = exc.errors()[0]
        fail(f"invalid {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
    with _open(ledger, existing=True) as store:
        store.add_outcome(outcome)
        where = store.where
    console.print(f"recorded score {score:g} ({source}) for {request_id} in {where}")


@app.command("migrate")
@user_errors
def migrate_cmd(ledger: LedgerOpt = None) -> None:
    """Create the ledger or upgrade its schema to this Triage's version."""
    from triage.router.ledger.store import open_ledger

    with open_ledger(ledger, migrate=False) as store:
        before, after = store.migrate()
        where = store.where
    if before == after:
        console.print(f"ledger {where}: schema version {after}, up to date")
    else:
        console.print(f"ledger {where}: schema version {before} -> {after}")


@app.command("recover")
@user_errors
def recover_cmd(
    ledger: LedgerOpt = None,
    spool: Annotated[Path | None, typer.Option("--spool", help="Spool file to replay. Default: the ledger's "
                                               "(beside a SQLite file, or in the cache dir).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Replay the spool (records the ledger could not take while it was down) into the ledger.

    Safe to run at any time, also while `triage serve` runs: a record already in the ledger is
    skipped, and records the ledger refuses are moved to the .rejected.jsonl file beside the spool.
    """
    from triage.router.ledger.spool import LedgerSpool, default_spool_path

    with _open(ledger) as store:
        target = LedgerSpool(spool if spool is not None else default_spool_path(store))
        try:
            result = target.replay(store)
        except Exception as exc:  # the store's own error classes (disk full, server gone)
            if not store.is_unavailable(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(f"ledger {store.where} is unavailable ({type(exc).__name__}: {first}); the spool was left as it is")
        where = store.where
    if as_json:
        typer.echo(json.dumps({"ledger": where, "spool": str(target.path), **result.as_dict(),
                               "rejected_file": str(target.rejected_path) if result.rejected or result.corrupt_lines
                               else None}))
        return
    console.print(f"spool {target.path}: {result.read:,} records replayed into {where} "
                  f"({result.inserted:,} new, {result.already_present:,} already there)")
    if result.rejected or result.corrupt_lines:
        console.print(f"{result.rejected:,} records refused by the ledger and {result.corrupt_lines:,} unreadable "
                      f"lines were set aside in {target.rejected_path}")
app.command("grade")(grade_cmd)
