"""The ledger as logged bandit data: the ``logged`` block of an export, and what records kept.

Learning from one outcome per query needs, per record, the action the policy took (its first
call), the probability it had (``propensity``), the other strategies it could have taken and the
probe's view of the query. :func:`logged_block` is that, as the ``logged`` field of each exported
replay row (the issue #15 contract; readers: probe training and off-policy evaluation).

Training also needs the query itself: its text (``store_prompts``) or the probe's feature row
(``store_features``). :func:`stored_counts` says how many records kept either, for reports and
for the export's refusal (:class:`PromptsMissingError`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from triage.router.ledger.records import LedgerRecord
from triage.router.ledger.store import LedgerStore

from triage.errors import TriageError

HOW_TO_STORE = ("set `ledger: {store_prompts: true}` (or `store_features: true`) in the policy, or "
                "store_prompts: true in the sidecar settings / Router(store_prompts=True)")


class PromptsMissingError(TriageError):
    """An export for training would hold records with neither prompt text nor probe features."""

    def __init__(self, missing: int, total: int) -> None:
        self.missing = missing
        self.total = total
        super().__init__(
            f"{missing:,} of {total:,} records to export have no prompt text and no probe features, so "
            f"nothing can be trained on them; to keep them, {HOW_TO_STORE}; or pass --without-prompts "
            "to export them anyway")


def decided_strategy(rec: LedgerRecord) -> str:
    """The logged action: the decision's first call (records before #15 kept it in metadata)."""
    if rec.decided_strategy:
        return rec.decided_strategy
    meta = rec.metadata.get("decided_strategy")
    return meta if isinstance(meta, str) and meta else rec.strategy


def logged_block(rec: LedgerRecord) -> dict[str, Any]:
    """The ``logged`` field of an exported row (see docs/sdk.md, "Exploration and logged data").

    ``strategy`` is the logged action and ``propensity`` its probability; the row's outcome is keyed
    by the strategy that answered, which differs after an escalation or a fallback. ``propensity``
    is None on records written before propensities were logged: unknown, not 1.
    """
    probe = rec.probe
    block = {
        "strategy": decided_strategy(rec),
        "candidate": rec.decided_candidate,
        "propensity": rec.propensity,
        "candidates": list(rec.candidates or []),
        "explored": bool(rec.explored),
        "greedy_strategy": rec.greedy_strategy,
        "policy": rec.policy_name or "",
        "policy_version": rec.policy_version or "",
        "probe_version": probe.probe_version if probe else "",
        "tier_probs": dict(probe.tier_probs) if probe else {},
        "success": dict(probe.success) if probe else {},
        "features": list(probe.features) if probe and probe.features is not None else None,
    }
    observed = rec.metadata.get("observed_propensity")
    if isinstance(observed, (int, float)) and not isinstance(observed, bool):
        # Under a `shadow:` block: P(this strategy observed for the query, first call or shadow) -
        # the training weight; `propensity` stays the decision's (off-policy evaluation).
        block["observed_propensity"] = float(observed)
    shadow_of = rec.metadata.get("shadow_of")
    if isinstance(shadow_of, str):
        # A shadow call's outcome (triage.router.core.shadow): its own row, linked to the query's row;
        # `propensity` is P(strategy observed for this query, primary or shadow).
        block.update({"shadow": True, "shadow_of": shadow_of,
                      "shadow_choice_propensity": rec.metadata.get("shadow_choice_propensity")})
    return block


def has_prompt(rec: LedgerRecord) -> bool:
    return rec.prompt is not None and rec.prompt != ""


def has_features(rec: LedgerRecord) -> bool:
    return rec.probe is not None and rec.probe.features is not None


@dataclass
class StoredCounts:
    """How many records kept what training needs."""

    records: int = 0
    prompts: int = 0
    features: int = 0
    neither: int = 0  # no prompt text and no features: useless for training

    def add(self, rec: LedgerRecord) -> None:
        p, f = has_prompt(rec), has_features(rec)
        self.records += 1
        self.prompts += p
        self.features += f
        self.neither += not (p or f)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def stored_counts(store: LedgerStore, *, since: datetime | None = None, tenant: str | None = None,
                  scored_only: bool = False) -> StoredCounts:
    """Count over the records at or after ``since`` (one tenant's; with an outcome only)."""
    counts = StoredCounts()
    for entry in store.iter_entries(since):
        rec = entry.record
        if tenant is not None and rec.tenant != tenant:
            continue
        if scored_only and entry.outcome is None:
            continue
        counts.add(rec)
    return counts


def require_trainable(store: LedgerStore, *, since: datetime | None = None) -> StoredCounts:
    """Raise :class:`PromptsMissingError` when a record an export would write has no prompt and no features."""
    counts = stored_counts(store, since=since, scored_only=True)
    if counts.neither:
        raise PromptsMissingError(counts.neither, counts.records)
    return counts
