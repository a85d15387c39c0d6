"""Export the ledger as replay data, so real traffic with outcomes feeds recalibration.

Each record with an outcome becomes one :class:`~triage.replay.schema.ReplayRecord` whose single
candidate is the strategy (or model) that served it, scored by the latest outcome. Records without
an outcome cannot be replay rows (a replay outcome needs a score) and are counted, not written.
The prompt is the stored text when the ledger kept it, else ``""`` with ``prompt_sha256`` beside it.
Ledger fields the replay format has no slot for (time, tier, probe probabilities, model, policy,
escalation, outcome source) ride along as extra fields, which the format keeps; ``logged`` holds the
logged bandit data (action, propensity, candidates, probe output and features:
:mod:`triage.router.ledger.logged`).

``require_prompts=True`` (the CLI's default) refuses, before writing anything, an export where a
record has neither prompt text nor probe features (:class:`~triage.router.ledger.logged.PromptsMissingError`).

Parquet (with pyarrow) holds the same data flat, one row per record; :func:`read_parquet_replay`
turns it back into replay records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from triage.replay.io import write_replay
from triage.replay.schema import Outcome, ReplayRecord
from triage.errors import TriageError
from triage.router.ledger.logged import logged_block, require_trainable
from triage.router.ledger.store import LedgerEntry, LedgerStore

CandidateKey = Literal["strategy", "model"]


@dataclass
class ExportResult:
    path: Path
    written: int
    skipped_unscored: int


def to_replay_record(entry: LedgerEntry, *, candidate: CandidateKey = "strategy") -> ReplayRecord | None:
    """The replay form of one ledger entry; None when it has no outcome yet."""
    rec, out = entry.record, entry.outcome
    if out is None:
        return None
    name = rec.strategy if candidate == "strategy" else rec.model
    outcome = Outcome(
        score=out.score, cost_usd=rec.cost_usd, prompt_tokens=rec.prompt_tokens,
        completion_tokens=rec.completion_tokens, reasoning_tokens=rec.reasoning_tokens,
        latency_s=rec.latency_s, truncated=rec.truncated,
        model=rec.model, strategy=rec.strategy, escalated=bool(rec.escalated),
        attempts=len(rec.attempts), outcome_source=out.source, outcome_time=out.time.isoformat(),
    )
    probe = rec.probe
    return ReplayRecord(
        id=rec.request_id,
        prompt=rec.prompt if rec.prompt is not None else "",
        task=rec.metadata.get("task") if isinstance(rec.metadata.get("task"), str) else None,
        outcomes={name: outcome},
        source="triage-ledger",
        prompt_sha256=rec.prompt_sha256,
        time=rec.time.isoformat(),
        tier=rec.tier,
        tier_probs=probe.tier_probs if probe else None,
        success_probs=probe.success if probe else None,
        probe_version=probe.probe_version if probe else None,
        policy_name=rec.policy_name,
        policy_version=rec.policy_version,
        tenant=rec.tenant,
        error=rec.error,
        logged=logged_block(rec),
    )


def iter_replay_records(store: LedgerStore, *, since: datetime | None = None,
                        candidate: CandidateKey = "strategy", counts: dict[str, int] | None = None
                        ) -> Iterator[ReplayRecord]:
    counts = counts if counts is not None else {}
    counts.setdefault("written", 0)
    counts.setdefault("skipped_unscored", 0)
    for entry in store.iter_entries(since):
        rr = to_replay_record(entry, candidate=candidate)
        if rr is None:
            counts["skipped_unscored"] += 1
            continue
        counts["written"] += 1
        yield rr


def export_jsonl(store: LedgerStore, path: str | Path, *, since: datetime | None = None,
                 candidate: CandidateKey = "strategy", require_prompts: bool = False) -> ExportResult:
    if require_prompts:
        require_trainable(store, since=since)
    counts: dict[str, int] = {}
    write_replay(iter_replay_records(store, since=since, candidate=candidate, counts=counts), path)
    return ExportResult(Path(path), counts.get("written", 0), counts.get("skipped_unscored", 0))


# --- parquet ----------------------------------------------------------------------------------

_OUTCOME_COLUMNS = ("score", "cost_usd", "prompt_tokens", "completion_tokens", "reasoning_tokens",
                    "latency_s", "truncated", "model", "strategy", "escalated", "attempts",
                    "outcome_source", "outcome_time")
_RECORD_COLUMNS = ("source", "prompt_sha256", "time", "tier", "probe_version", "policy_name",
                   "policy_version", "tenant", "error")
_JSON_COLUMNS = ("tier_probs", "success_probs", "logged")


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TriageError("parquet export needs pyarrow: pip install pyarrow") from None
    return pa, pq


def _schema(pa: Any) -> Any:
    s, f, i, b = pa.string(), pa.float64(), pa.int64(), pa.bool_()
    return pa.schema([
        ("id", s), ("prompt", s), ("prompt_is_chat", b), ("task", s), ("split", s), ("gold", s),
        ("candidate", s), ("score", f), ("cost_usd", f), ("prompt_tokens", i), ("completion_tokens", i),
        ("reasoning_tokens", i), ("latency_s", f), ("truncated", b), ("model", s), ("strategy", s),
        ("escalated", b), ("attempts", i), ("outcome_source", s), ("outcome_time", s),
        ("source", s), ("prompt_sha256", s), ("time", s), ("tier", s), ("probe_version", s),
        ("policy_name", s), ("policy_version", s), ("tenant", s), ("error", s),
        ("tier_probs", s), ("success_probs", s), ("logged", s),
    ])


def _flat(rr: ReplayRecord) -> dict[str, Any]:
    (cand, out), = rr.outcomes.items()
    extra_r = rr.model_extra or {}
    extra_o = out.model_dump()  # declared fields and the extras the ledger added
    is_chat = not isinstance(rr.prompt, str)
    row: dict[str, Any] = {
        "id": rr.id,
        "prompt": json.dumps(rr.messages(), ensure_ascii=False) if is_chat else rr.prompt,
        "prompt_is_chat": is_chat, "task": rr.task, "split": rr.split, "gold": rr.gold, "candidate": cand,
    }
    row.update({k: extra_o.get(k) for k in _OUTCOME_COLUMNS})
    row.update({k: extra_r.get(k) for k in _RECORD_COLUMNS})
    row.update({k: (json.dumps(extra_r[k]) if extra_r.get(k) is not None else None) for k in _JSON_COLUMNS})
    return row


def export_parquet(store: LedgerStore, path: str | Path, *, since: datetime | None = None,
                   candidate: CandidateKey = "strategy", row_group: int = 10_000,
                   require_prompts: bool = False) -> ExportResult:
    pa, pq = _pyarrow()
    if require_prompts:
        require_trainable(store, since=since)
    schema = _schema(pa)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    counts: dict[str, int] = {}
    buf: list[dict[str, Any]] = []
    with pq.ParquetWriter(str(tmp), schema) as w:
        for rr in iter_replay_records(store, since=since, candidate=candidate, counts=counts):
            buf.append(_flat(rr))
            if len(buf) >= row_group:
                w.write_table(pa.Table.from_pylist(buf, schema=schema))
                buf.clear()
        if buf or not counts.get("written"):
            w.write_table(pa.Table.from_pylist(buf, schema=schema))
    tmp.replace(p)
    return ExportResult(p, counts.get("written", 0), counts.get("skipped_unscored", 0))


def read_parquet_replay(path: str | Path) -> list[ReplayRecord]:
    """Replay records from a parquet export (the inverse of :func:`export_parquet`)."""
    _, pq = _pyarrow()
    out = []
    for row in pq.read_table(str(path)).to_pylist():
        prompt = json.loads(row["prompt"]) if row["prompt_is_chat"] else row["prompt"]
        outcome = {k: row[k] for k in _OUTCOME_COLUMNS}
        extras = {k: row[k] for k in _RECORD_COLUMNS}
        extras.update({k: (json.loads(row[k]) if row[k] is not None else None) for k in _JSON_COLUMNS})
        out.append(ReplayRecord(id=row["id"], prompt=prompt, task=row["task"], split=row["split"],
                                gold=row["gold"], outcomes={row["candidate"]: outcome}, **extras))
    return out
