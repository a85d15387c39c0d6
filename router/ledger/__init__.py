"""The ledger: every routed call recorded, outcomes attached later, accuracy per token reported.

Typical use::

    from triage.router.ledger import open_ledger, LedgerWriter, LedgerRecord

    store = open_ledger("triage-ledger.sqlite")          # or "postgresql://user@host/db"
    with LedgerWriter(store) as writer:
        writer.record(LedgerRecord(request_id=rid, strategy="easy", model="gpt-4o-mini", ...))
        writer.feedback(rid, 1.0, source="user")
    report = ledger_report(store, by="tier", baseline="hard")

Heavier pieces (report, export, metrics) are imported from their modules on demand.
"""

from triage.router.ledger.guard import Durability
from triage.router.ledger.migrations import SchemaTooNewError
from triage.router.ledger.records import Attempt, LedgerRecord, OutcomeRecord, ProbeRecord, prompt_sha256
from triage.router.ledger.store import (
    DEFAULT_LEDGER_URL,
    LedgerEntry,
    LedgerError,
    LedgerStore,
    LedgerUnavailableError,
    UnknownRequestError,
    available_stores,
    open_ledger,
    register_store,
)
from triage.router.ledger.writer import LedgerClosedError, LedgerWriter

__all__ = [
    "DEFAULT_LEDGER_URL",
    "Attempt",
    "Durability",
    "LedgerClosedError",
    "LedgerEntry",
    "LedgerError",
    "LedgerRecord",
    "LedgerStore",
    "LedgerUnavailableError",
    "LedgerWriter",
    "OutcomeRecord",
    "ProbeRecord",
    "SchemaTooNewError",
    "UnknownRequestError",
    "available_stores",
    "ledger_report",
    "open_ledger",
    "prompt_sha256",
    "register_store",
]


def __getattr__(name: str):  # lazy: report pulls in numpy and eval.metrics
    if name == "ledger_report":
        from triage.router.ledger.report import ledger_report

        return ledger_report
    raise AttributeError(name)
