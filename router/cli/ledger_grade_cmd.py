"""`triage ledger grade`: attach graders' outcomes to recorded requests that have none yet.

A record can be graded when it has a gold answer (``metadata.gold``, from the request's
``metadata``) and its answer text was stored (``metadata.answer``, kept with ``store_prompts``);
a judge also needs the stored prompt (and uses the gold as a reference when there is one).
Outcomes get source ``grader:<name>`` and the verdict's detail (grader version, a judge's prompt
version, tokens and cost). Records with an outcome already, failed requests and records missing
what the grader needs are skipped and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from enum import Enum
from typing import Annotated, Any

import typer

from triage.router.cli.common import console, fail, user_errors

#: Outcomes written per transaction (a crash loses at most one batch of work, never half of one).
BATCH = 100
#: A judge that fails this many times before any success is misconfigured: stop, say why.
FIRST_ERRORS = 3


class GraderName(str, Enum):
    exact = "exact"
    regex = "regex"
    numeric = "numeric"
    judge = "judge"


def _options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value is read as JSON when it parses (numbers, objects), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _open_existing(url: str | None) -> Any:
    from triage.router.ledger.sqlite_store import sqlite_path
    from triage.router.ledger.store import LedgerError, open_ledger, url_scheme
    from triage.settings import get_settings

    url = url or get_settings().ledger_url
    if url and url_scheme(url) == "sqlite" and not sqlite_path(url).is_file():
        raise LedgerError(f"no ledger at {sqlite_path(url)}: check --ledger (or TRIAGE_LEDGER_URL)")
    return open_ledger(url)


def _skip_reason(entry: Any, grader: Any) -> str | None:
    rec = entry.record
    if entry.outcome is not None:
        return "already_scored"
    if rec.error is not None:
        return "failed_request"
    if grader.needs_gold and not rec.metadata.get("gold"):
        return "no_gold"
    if not isinstance(rec.metadata.get("answer"), str) or not rec.metadata["answer"]:
        return "no_answer"
    if grader.needs_question and rec.prompt is None:
        return "no_prompt"
    return None


@user_errors
def grade_cmd(
    grader_name: Annotated[GraderName, typer.Option("--grader", help="exact, regex, numeric or judge.")],
    ledger: Annotated[str | None, typer.Option("--ledger", help="SQLite path or postgresql:// URL.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only records since: 7d, 12h, 30m or an ISO date.")] = None,
    pattern: Annotated[str | None, typer.Option("--pattern", help="regex: picks the final answer (group "
                                                "'answer', else 1, else the match).")] = None,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="numeric: absolute tolerance.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="judge: litellm model or local/<name>.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Another grader option, KEY=VALUE "
                                                     "(JSON values parsed), e.g. api_base=..., relative=0.01.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Grade at most this many records.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Grade recorded answers against their gold (or with an LLM judge) and attach the outcomes."""
    from triage.router.ledger.graders import GradeInput, build_grader
    from triage.router.ledger.records import OutcomeRecord
    from triage.router.ledger.report import parse_since

    spec: dict[str, Any] = {"type": grader_name.value, **_options(option or [])}
    for key, value in (("pattern", pattern), ("tolerance", tolerance), ("model", model)):
        if value is not None:
            spec[key] = value
    grader = build_grader(spec)
    since_dt = parse_since(since) if since else None
    counts: Counter[str] = Counter()
    judge = Counter({"prompt_tokens": 0, "completion_tokens": 0})
    judge_cost = 0.0
    scores: list[float] = []
    batch: list[OutcomeRecord] = []
    with _open_existing(ledger) as store:
        where = store.where
        for entry in store.iter_entries(since=since_dt):
            if limit is not None and counts["graded"] + counts["ungraded"] >= limit:
                break
            reason = _skip_reason(entry, grader)
            if reason is not None:
                counts[reason] += 1
                continue
            rec = entry.record
            try:
                verdict = grader(GradeInput(answer=rec.metadata["answer"], gold=rec.metadata.get("gold"),
                                            question=rec.prompt))
            except Exception as exc:  # noqa: BLE001 - a judge's provider error: counted, or fatal at first
                counts["error"] += 1
                if counts["error"] >= FIRST_ERRORS and not counts["graded"]:
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    fail(f"grader {grader.name!r} failed {counts['error']} times and graded nothing "
                         f"({type(exc).__name__}: {text})")
                continue
            d = verdict.detail
            judge["prompt_tokens"] += d.get("judge_prompt_tokens") or 0
            judge["completion_tokens"] += d.get("judge_completion_tokens") or 0
            judge_cost += d.get("judge_cost_usd") or 0.0
            if verdict.score is None:
                counts["ungraded"] += 1
                counts[verdict.reason or "ungraded"] += 1
                continue
            counts["graded"] += 1
            scores.append(verdict.score)
            batch.append(OutcomeRecord(request_id=rec.request_id, score=verdict.score, source=grader.source,
                                       detail=d))
            if len(batch) >= BATCH:
                store.add_outcomes(batch)
                batch = []
        store.add_outcomes(batch)
    counts.pop("ungraded", None)
    graded = counts.pop("graded", 0)
    mean = sum(scores) / len(scores) if scores else None
    out: dict[str, Any] = {"ledger": where, "grader": grader.source, "graded": graded, "mean_score": mean,
                           "skipped": dict(sorted(counts.items()))}
    if grader.name == "judge":
        out["judge"] = {"model": spec.get("model"), "prompt_version": getattr(grader, "prompt_version", None),
                        **judge, "cost_usd": judge_cost}
    if as_json:
        typer.echo(json.dumps(out))
        return
    skipped = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in sorted(counts.items())) or "none"
    score = f", mean score {mean:.3f}" if mean is not None else ""
    console.print(f"graded {graded:,} records with {grader.source} in {where}{score}; skipped: {skipped}")
    if grader.name == "judge":
        j = out["judge"]
        console.print(f"judge {j['model']} ({j['prompt_version']}): {j['prompt_tokens']:,} prompt + "
                      f"{j['completion_tokens']:,} completion tokens, ${j['cost_usd']:.6f}")
