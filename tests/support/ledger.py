"""Ledger test helpers: realistic records and a fixture that yields a SQLite path or a PostgreSQL URL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from triage.router.ledger.records import Attempt, LedgerRecord, ProbeRecord

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
STRATEGIES = {"easy": ("small-fast", "gpt-4o-mini"), "normal": ("small-think", "gpt-4o-mini"),
              "hard": ("large-think", "o3")}


def make_record(i: int, *, rng: random.Random | None = None, time: datetime | None = None,
                tier: str | None = None, **over: object) -> LedgerRecord:
    """A plausible routed request; ``over`` overrides any field."""
    rng = rng or random.Random(i)
    tier = tier or ("easy", "normal", "hard")[i % 3]
    strategy, model = STRATEGIES[tier]
    p = [rng.random() + 0.1 for _ in range(3)]
    probs = dict(zip(("easy", "normal", "hard"), (x / sum(p) for x in p)))
    attempts = [Attempt(model=model, kind="primary", strategy=strategy, prompt_tokens=rng.randint(20, 400),
                        completion_tokens=rng.randint(5, 900), reasoning_tokens=rng.randint(0, 300),
                        cost_usd=None if i % 17 == 5 else round(rng.random() / 500, 6),
                        latency_s=rng.random() * 2, finish_reason="stop")]
    if rng.random() < 0.2:
        attempts.append(Attempt(model="o3", kind="escalation", strategy="large-think",
                                prompt_tokens=rng.randint(20, 400), completion_tokens=rng.randint(50, 1500),
                                reasoning_tokens=rng.randint(0, 1000), cost_usd=round(rng.random() / 100, 6),
                                latency_s=rng.random() * 5, finish_reason="length" if i % 5 == 0 else "stop",
                                truncated=i % 5 == 0))
    fields: dict[str, object] = dict(
        request_id=f"req-{i:06d}",
        time=time or T0 + timedelta(minutes=7 * i),
        tenant=f"tenant-{i % 2}",
        api_key_id=f"key-{i % 4}",
        policy_name="default",
        policy_version="1",
        probe=ProbeRecord(probe_version="text-v1", tier=tier, tier_probs=probs,
                          success={"gpt-4o-mini": rng.random(), "o3": rng.random()}),
        tier=tier,
        strategy=attempts[-1].strategy,
        model=attempts[-1].model,
        attempts=attempts,
        latency_s=sum(a.latency_s or 0 for a in attempts),
        decision_latency_s=rng.random() / 100,
        truncated=attempts[-1].truncated,
        prompt_sha256=f"{i:064x}",
    )
    if all(a.cost_usd is None for a in attempts):
        fields["cost_usd"] = None
    fields.update(over)
    return LedgerRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ledger location: a SQLite file, or a PostgreSQL schema on the test server."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.sqlite")
    else:
        yield request.getfixturevalue("postgres_url")
