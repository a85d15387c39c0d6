"""The ledger store contract, its registry and :func:`open_ledger`.

A store keeps :class:`LedgerRecord` rows and the :class:`OutcomeRecord` rows attached to them.
Backends register the URL schemes they serve; adding one is one module of this package with a
subclass of :class:`LedgerStore` decorated with :func:`register_store` (found by the plug-in
discovery rule of :mod:`triage.registry` on the first :func:`open_ledger`; no list to edit).

``write_records`` is the durability point: when it returns, the batch is committed. The batching
:class:`~triage.router.ledger.writer.LedgerWriter` acknowledges a record only after that.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, TypeVar

import numpy as np

from triage.errors import TriageError
from triage.registry import Registry
from triage.router.ledger.migrations import MIGRATIONS, Migration
from triage.router.ledger.records import LedgerRecord, OutcomeRecord

DEFAULT_LEDGER_URL = "triage-ledger.sqlite"


class LedgerError(TriageError):
    """A ledger cannot be opened or used as asked (bad URL, unreachable server...)."""


class LedgerUnavailableError(LedgerError):
    """The ledger cannot take writes right now (server down, disk full, file deleted or replaced).

    Unlike a record the store rejects, this is about the store, not the record: the writer spools
    records while it lasts and the sidecar answers 503 ``ledger_unavailable`` before paying upstream.
    """


class LedgerGoneError(LedgerUnavailableError):
    """The ledger's file was deleted or replaced under an open store: writes would go nowhere."""


class UnknownRequestError(LedgerError):
    """An outcome names a request id the ledger has no record of."""

    def __init__(self, request_ids: Sequence[str]) -> None:
        self.request_ids = list(request_ids)
        shown = ", ".join(repr(r) for r in self.request_ids[:5])
        more = f" and {len(self.request_ids) - 5} more" if len(self.request_ids) > 5 else ""
        super().__init__(f"no ledger record for request id {shown}{more}")


@dataclass
class LedgerEntry:
    """A stored record with the outcome that counts for it (the latest), if any."""

    record: LedgerRecord
    outcome: OutcomeRecord | None


@dataclass
class ReportRows:
    """The columns reports aggregate, one entry per record (score NaN = no outcome yet)."""

    time_unix: np.ndarray
    tier: list[str | None]
    strategy: list[str]
    model: list[str]
    score: np.ndarray
    cost: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    reasoning_tokens: np.ndarray
    truncated: np.ndarray
    escalated: np.ndarray
    latency_s: np.ndarray  # wall time of the whole request; NaN when not recorded

    @property
    def n(self) -> int:
        return int(self.time_unix.shape[0])

    @classmethod
    def from_tuples(cls, rows: Sequence[tuple]) -> "ReportRows":
        """Rows of (time_unix, tier, strategy, model, cost, pt, ct, rt, truncated, escalated, score, latency_s)."""
        cols = list(zip(*rows)) if rows else [()] * 12
        f = lambda i: np.array([np.nan if v is None else float(v) for v in cols[i]], dtype=float)  # noqa: E731
        return cls(
            time_unix=f(0), tier=list(cols[1]), strategy=list(cols[2]), model=list(cols[3]),
            cost=f(4), prompt_tokens=f(5), completion_tokens=f(6), reasoning_tokens=f(7),
            truncated=np.array([bool(v) for v in cols[8]], dtype=bool),
            escalated=np.array([bool(v) for v in cols[9]], dtype=bool),
            score=f(10), latency_s=f(11),
        )


RECORD_COLUMNS = (
    "request_id", "time", "tenant", "api_key_id", "policy_name", "policy_version", "probe_version",
    "tier", "strategy", "model", "n_attempts", "prompt_tokens", "completion_tokens", "reasoning_tokens",
    "cost_usd", "latency_s", "decision_latency_s", "truncated", "escalated", "error", "prompt_sha256",
    "record_json",
)


def record_row(rec: LedgerRecord, time_value: object, json_text: str) -> tuple:
    """The column values of ``rec`` in :data:`RECORD_COLUMNS` order."""
    return (
        rec.request_id, time_value, rec.tenant, rec.api_key_id, rec.policy_name, rec.policy_version,
        rec.probe.probe_version if rec.probe else None, rec.tier, rec.strategy, rec.model,
        len(rec.attempts), rec.prompt_tokens or 0, rec.completion_tokens or 0, rec.reasoning_tokens or 0,
        rec.cost_usd, rec.latency_s, rec.decision_latency_s, rec.truncated, bool(rec.escalated), rec.error,
        rec.prompt_sha256, json_text,
    )


class LedgerStore(ABC):
    """A ledger backend. Instances are safe to share between threads (calls are serialised)."""

    schemes: ClassVar[tuple[str, ...]] = ()
    dialect: ClassVar[str]

    @classmethod
    @abstractmethod
    def open(cls, url: str, *, migrate: bool = True,
             migrations: Sequence[Migration] = MIGRATIONS) -> "LedgerStore":
        """Connect; create the schema or apply pending migrations (unless ``migrate=False``)."""

    @property
    @abstractmethod
    def where(self) -> str:
        """The ledger's location for messages (passwords redacted)."""

    @abstractmethod
    def write_records(self, records: Sequence[LedgerRecord]) -> int:
        """Insert ``records`` in one transaction and commit before returning.

        A request id already stored keeps its first record (re-recording is idempotent).
        Returns the number of rows inserted.
        """

    @abstractmethod
    def add_outcomes(self, outcomes: Sequence[OutcomeRecord]) -> None:
        """Attach outcomes in one transaction; all-or-nothing. Unknown ids raise UnknownRequestError."""

    def add_outcome(self, outcome: OutcomeRecord) -> None:
        self.add_outcomes([outcome])

    @abstractmethod
    def get(self, request_id: str) -> LedgerRecord | None:
        """The stored record of ``request_id``, or None."""

    @abstractmethod
    def outcomes(self, request_id: str) -> list[OutcomeRecord]:
        """All outcomes of a request, oldest first."""

    @abstractmethod
    def iter_entries(self, since: datetime | None = None) -> Iterator[LedgerEntry]:
        """Records (oldest first) with their latest outcome."""

    @abstractmethod
    def report_rows(self, since: datetime | None = None, tenant: str | None = None, *,
                    shadow: bool = False) -> ReportRows:
        """The columns reports need, for records at or after ``since`` (of ``tenant`` only when given):
        the callers' requests, or with ``shadow=True`` the shadow calls' records only
        (``metadata.shadow_of`` set: :mod:`triage.router.core.shadow`)."""

    @abstractmethod
    def count(self) -> int:
        """Number of records."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version stored in the ledger (0 for an empty database)."""

    @abstractmethod
    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
        """Apply pending migrations; returns (version before, version after)."""

    @abstractmethod
    def check_integrity(self) -> list[str]:
        """Problems found by the backend's own consistency check; empty when the ledger is sound."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Idempotent."""

    # --- health (the writer's spool and the sidecar's readiness use these) ----------------------
    def check_alive(self) -> None:
        """Raise :class:`LedgerGoneError` when the storage behind the open store is gone.

        Called before every commit and by every readiness check, so it must be cheap (no query).
        Stores whose storage cannot vanish under them keep this no-op.
        """

    def ping(self) -> None:
        """One cheap round trip; raises what the store raises when it cannot serve."""
        self.schema_version()

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the store is down (retry later), rather than that a record is bad."""
        return isinstance(exc, (LedgerUnavailableError, OSError))

    def __enter__(self) -> "LedgerStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


S = TypeVar("S", bound=type[LedgerStore])
#: Store classes by URL scheme. Backends are imported on first lookup (not by
#: ``import triage.router.ledger``), so that import stays cheap.
STORES: Registry[type[LedgerStore]] = Registry("ledger URL scheme", package="triage.router.ledger")


def register_store(*schemes: str) -> Callable[[S], S]:
    """Class decorator: serve URLs whose scheme is one of ``schemes``."""
    add = STORES.register(*schemes)

    def deco(cls: S) -> S:
        cls.schemes = tuple(schemes)
        return add(cls)

    return deco


def available_stores() -> dict[str, type[LedgerStore]]:
    return dict(STORES.items())


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def redact_url(url: str) -> str:
    """``url`` with any password replaced, for messages and logs."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/@:]*:)[^@/]*@", r"\1***@", url)


def url_scheme(url: str) -> str:
    """The scheme of a ledger URL; a plain path (no ``scheme://``) is SQLite."""
    m = _SCHEME.match(url)
    return m.group(1).lower() if m else "sqlite"


def open_ledger(url: str | None = None, *, migrate: bool = True,
                migrations: Sequence[Migration] = MIGRATIONS) -> LedgerStore:
    """Open (creating or upgrading) the ledger at ``url``.

    ``url`` is a file path or ``sqlite:///relative.db`` / ``sqlite:////absolute.db`` for SQLite, or
    ``postgresql://user@host:port/db`` for PostgreSQL. Default: ``get_settings().ledger_url``
    (env ``TRIAGE_LEDGER_URL``), itself :data:`DEFAULT_LEDGER_URL` unless set.
    Raises :class:`~triage.router.ledger.migrations.SchemaTooNewError` for a ledger written by a newer Triage.
    """
    if not url:
        from triage.settings import get_settings

        url = get_settings().ledger_url or DEFAULT_LEDGER_URL
    scheme = url_scheme(url)
    if scheme not in STORES:
        known = ", ".join(STORES.names())
        raise LedgerError(f"unknown ledger URL scheme {scheme!r} in {redact_url(url)!r}; known: {known}, or a file path")
    return STORES.get(scheme).open(url, migrate=migrate, migrations=migrations)
