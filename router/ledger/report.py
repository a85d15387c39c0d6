"""Ledger reports: accuracy per token, cost-of-pass and TEP by tier, strategy, model or day.

The numbers come from :func:`triage.replay.summary.summarize_outcomes` and
:func:`triage.replay.summary.tep`, the functions replay evaluation uses, so a ledger exported to the
replay format (:mod:`triage.router.ledger.export`) reports the same figures either way.

Rows without an outcome count for requests, tokens, cost, escalation and truncation; accuracy,
accuracy per 1k tokens and cost-of-pass use the scored rows only (``n_scored`` says how many).
The latest outcome of a request is the one that counts.

Latency (``latency``: p50 and p95 of the whole request's wall time, in seconds) uses the records
that have one (``latency.n`` says how many); percentiles interpolate linearly between records,
numpy's default.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np

from triage.replay.summary import summarize_outcomes, tep
from triage.errors import TriageError
from triage.router.ledger.logged import stored_counts
from triage.router.ledger.records import as_utc
from triage.router.ledger.store import LedgerStore, ReportRows

GroupBy = Literal["tier", "strategy", "model", "day"]
GROUP_BY: tuple[str, ...] = ("tier", "strategy", "model", "day")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w``, ``90s`` (ago), or an ISO date / date-time (naive = UTC)."""
    now = as_utc(now) if now is not None else datetime.now(timezone.utc)
    m = _RELATIVE.match(text)
    if m:
        try:  # a duration reaching before the year 1 overflows timedelta or the subtraction
            return now - timedelta(**{_UNITS[m.group(2).lower()]: float(m.group(1))})
        except (OverflowError, ValueError):
            raise TriageError(f"--since {text!r} reaches back before the year 1; give a shorter duration") from None
    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before the year 1 in UTC
        raise TriageError(f"--since {text!r} is out of range (before the year 1 in UTC)") from None
    except ValueError:
        raise TriageError(
            f"--since {text!r} is neither a duration like 7d / 12h / 30m nor an ISO date like 2025-01-31"
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # cost_of_pass is inf when nothing passed; expected_correct = 0 says so
    return value


def latency_summary(latency_s: np.ndarray) -> dict[str, Any]:
    """p50 / p95 seconds over the recorded latencies (None when there are none)."""
    known = latency_s[np.isfinite(latency_s)]
    if known.size == 0:
        return {"n": 0, "p50_s": None, "p95_s": None}
    p50, p95 = np.percentile(known, [50.0, 95.0])
    return {"n": int(known.size), "p50_s": float(p50), "p95_s": float(p95)}


def summarize_rows(rows: ReportRows, idx: np.ndarray | None = None) -> dict[str, Any]:
    """``summarize_outcomes`` over the rows ``idx`` (all rows when None), plus latency percentiles."""
    sel = slice(None) if idx is None else idx
    out = summarize_outcomes(rows.score[sel], rows.cost[sel], rows.prompt_tokens[sel],
                             rows.completion_tokens[sel], rows.reasoning_tokens[sel],
                             rows.truncated[sel], escalated=rows.escalated[sel])
    out["latency"] = latency_summary(rows.latency_s[sel])
    return out


def _keys(rows: ReportRows, by: str) -> list[str]:
    if by == "tier":
        return [t or "unknown" for t in rows.tier]
    if by == "strategy":
        return list(rows.strategy)
    if by == "model":
        return list(rows.model)
    if by == "day":
        return [datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d") for t in rows.time_unix]
    raise TriageError(f"cannot group by {by!r}; choose one of: {', '.join(GROUP_BY)}")


def _with_tep(summary: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(summary)
    out["requests"] = summary["n"]
    if base is None:
        out["tep"] = None
    else:
        out["tep"] = tep(summary["accuracy"], summary["tokens"]["mean_total"],
                         base["accuracy"], base["tokens"]["mean_total"])
    return out


def build_report(rows: ReportRows, *, by: str = "strategy", baseline: str | None = None,
                 since: datetime | None = None) -> dict[str, Any]:
    """The report document (plain JSON values).

    ``baseline`` names a strategy: TEP compares each group's accuracy and mean tokens per request
    with that strategy's, over the same window. Traffic is not a controlled experiment (a policy
    sends different queries to different strategies), so read TEP here as descriptive.
    """
    keys = _keys(rows, by)
    base: dict[str, Any] | None = None
    if baseline is not None:
        bidx = np.flatnonzero(np.array([s == baseline for s in rows.strategy], dtype=bool))
        if bidx.size == 0:
            known = ", ".join(sorted(set(rows.strategy))) or "none"
            raise TriageError(f"baseline strategy {baseline!r} has no records in this window; strategies: {known}")
        base = summarize_rows(rows, bidx)
        if base["n_scored"] == 0:
            raise TriageError(f"baseline strategy {baseline!r} has no outcomes yet, so TEP against it is undefined")
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out_groups = []
    for key in sorted(groups):
        s = _with_tep(summarize_rows(rows, np.asarray(groups[key], dtype=np.int64)), base)
        out_groups.append({"key": key, **s})
    overall = _with_tep(summarize_rows(rows), base)
    return _jsonable({
        "by": by,
        "since": since.isoformat() if since else None,
        "baseline": baseline,
        "n": rows.n,
        "groups": out_groups,
        "overall": overall,
    })


def ledger_report(store: LedgerStore, *, by: str = "strategy", since: datetime | None = None,
                  baseline: str | None = None, tenant: str | None = None) -> dict[str, Any]:
    """Aggregate ``store`` (records at or after ``since``) grouped ``by`` tier|strategy|model|day.

    ``tenant`` keeps that tenant's records only (the sidecar scopes each key to its own tenant);
    the baseline for TEP then comes from the same tenant's records.
    """
    if by not in GROUP_BY:
        raise TriageError(f"cannot group by {by!r}; choose one of: {', '.join(GROUP_BY)}")
    report = build_report(store.report_rows(since, tenant=tenant), by=by, baseline=baseline, since=since)
    # Shadow calls (triage.router.core.shadow) are not caller traffic: counted apart, never in the groups.
    shadow = store.report_rows(since, tenant=tenant, shadow=True)
    report["shadow"] = {"requests": shadow.n, "cost_usd": float(np.nansum(shadow.cost)) if shadow.n else 0.0}
    # What training could use: records that kept the prompt text and/or the probe's features.
    report["stored"] = stored_counts(store, since=since, tenant=tenant).as_dict()
    if tenant is not None:
        report["tenant"] = tenant
    return report
