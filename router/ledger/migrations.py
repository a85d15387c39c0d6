"""Versioned ledger schema.

The table ``triage_schema_version`` holds one row per applied migration; the schema's version
is its largest ``version``. Opening a ledger applies the migrations it lacks, in order, in one
transaction (DDL is transactional in both SQLite and PostgreSQL, so a crash mid-upgrade leaves the
old version intact); concurrent openers are serialised (``BEGIN IMMEDIATE`` / an advisory lock). A ledger whose
version is newer than the newest migration this code knows was written by a newer Triage:
it is refused rather than half-understood.

Adding a schema change = appending a :class:`Migration` with the next version number and its
SQL for each dialect. Never edit a released migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from triage.errors import TriageError

VERSION_TABLE = "triage_schema_version"


class SchemaTooNewError(TriageError):
    """The ledger was created or upgraded by a newer Triage than this one."""

    def __init__(self, where: str, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"ledger {where} has schema version {found}, newer than this Triage supports "
            f"(schema version {supported}); upgrade Triage to open it"
        )


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        if dialect == "sqlite":
            return self.sqlite
        if dialect == "postgres":
            return self.postgres
        raise ValueError(f"unknown SQL dialect {dialect!r}")


VERSION_TABLE_DDL = {
    "sqlite": f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
        version INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
    "postgres": f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
        version INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
}

_V1_SQLITE = (
    """CREATE TABLE ledger_records (
        request_id TEXT PRIMARY KEY,
        time_unix REAL NOT NULL,
        tenant TEXT,
        api_key_id TEXT,
        policy_name TEXT,
        policy_version TEXT,
        probe_version TEXT,
        tier TEXT,
        strategy TEXT NOT NULL,
        model TEXT NOT NULL,
        n_attempts INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cost_usd REAL,
        latency_s REAL,
        decision_latency_s REAL,
        truncated INTEGER NOT NULL,
        escalated INTEGER NOT NULL,
        error TEXT,
        prompt_sha256 TEXT,
        record_json TEXT NOT NULL
    )""",
    "CREATE INDEX ledger_records_time ON ledger_records (time_unix)",
    """CREATE TABLE ledger_outcomes (
        outcome_id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL REFERENCES ledger_records (request_id),
        score REAL NOT NULL CHECK (score >= 0 AND score <= 1),
        source TEXT NOT NULL,
        time_unix REAL NOT NULL
    )""",
    "CREATE INDEX ledger_outcomes_request ON ledger_outcomes (request_id, time_unix, outcome_id)",
)

_V1_POSTGRES = (
    """CREATE TABLE ledger_records (
        request_id TEXT PRIMARY KEY,
        time TIMESTAMPTZ NOT NULL,
        tenant TEXT,
        api_key_id TEXT,
        policy_name TEXT,
        policy_version TEXT,
        probe_version TEXT,
        tier TEXT,
        strategy TEXT NOT NULL,
        model TEXT NOT NULL,
        n_attempts INTEGER NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION,
        latency_s DOUBLE PRECISION,
        decision_latency_s DOUBLE PRECISION,
        truncated BOOLEAN NOT NULL,
        escalated BOOLEAN NOT NULL,
        error TEXT,
        prompt_sha256 TEXT,
        record_json JSON NOT NULL
    )""",
    "CREATE INDEX ledger_records_time ON ledger_records (time)",
    """CREATE TABLE ledger_outcomes (
        outcome_id BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL REFERENCES ledger_records (request_id),
        score DOUBLE PRECISION NOT NULL CHECK (score >= 0 AND score <= 1),
        source TEXT NOT NULL,
        time TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX ledger_outcomes_request ON ledger_outcomes (request_id, time, outcome_id)",
)

# Version 2: what a grader says about its verdict (grader version, a judge's prompt version,
# tokens and cost), as JSON text; NULL for outcomes from people and older ledgers.
_V2_SQLITE = ("ALTER TABLE ledger_outcomes ADD COLUMN detail_json TEXT",)
_V2_POSTGRES = ("ALTER TABLE ledger_outcomes ADD COLUMN detail_json TEXT",)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "records and outcomes", _V1_SQLITE, _V1_POSTGRES),
    Migration(2, "outcome details (graders)", _V2_SQLITE, _V2_POSTGRES),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def validate(migrations: Sequence[Migration]) -> None:
    """Versions must be 1, 2, 3, ... in order: a gap means a lost migration."""
    for i, m in enumerate(migrations, start=1):
        if m.version != i:
            raise ValueError(f"migration #{i} has version {m.version}; versions must be 1, 2, 3, ...")


def pending(current: int, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """Migrations to apply to a ledger at version ``current``; refuses a newer ledger."""
    validate(migrations)
    supported = latest_version(migrations)
    if current > supported:
        raise SchemaTooNewError(where, current, supported)
    return [m for m in migrations if m.version > current]
