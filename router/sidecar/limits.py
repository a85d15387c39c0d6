"""Per-key request rate limits (token buckets) and spend budgets.

Both live in the process: with several replicas, each enforces its own bucket (configure
``rate_per_s`` per replica), while spend is seeded from the shared ledger at start-up and
refreshed from it periodically, so replicas converge on the ledger's total (see docs/sidecar.md).
The event loop is single-threaded, so neither needs a lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from router.sidecar.auth import Caller
from router.sidecar.errors import SidecarError


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; one request takes one token."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per configured key that has ``rate_per_s``; anonymous callers are not limited."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, caller: Caller) -> None:
        spec = caller.spec
        if spec is None or spec.rate_per_s is None:
            return
        now = self._clock()
        bucket = self._buckets.get(spec.id)
        if bucket is None:
            capacity = float(spec.burst if spec.burst is not None else max(1, math.ceil(spec.rate_per_s)))
            bucket = self._buckets[spec.id] = TokenBucket(spec.rate_per_s, capacity, now)
        wait = bucket.take(now)
        if wait > 0.0:
            retry_after = max(1, math.ceil(wait))
            raise SidecarError(
                429, f"rate limit of key '{spec.id}' reached ({spec.rate_per_s:g} requests/s); "
                f"retry in {retry_after} s", type="rate_limit_error", code="rate_limit_exceeded",
                headers={"retry-after": str(retry_after),
                         "x-ratelimit-limit-requests": f"{spec.rate_per_s:g}",
                         "x-ratelimit-remaining-requests": "0"},
            )


class SpendTracker:
    """USD spent per key id, checked against the key's ``budget_usd`` before each request."""

    def __init__(self, status: int = 403) -> None:
        self.status = status
        self._spent: dict[str, float] = {}

    def spent(self, key_id: str) -> float:
        return self._spent.get(key_id, 0.0)

    def seed(self, totals: dict[str, float]) -> None:
        """Replace in-process figures by the ledger's totals (start-up and periodic refresh)."""
        for key_id, total in totals.items():
            self._spent[key_id] = max(float(total), 0.0)

    def add(self, caller: Caller, cost_usd: float | None) -> None:
        if caller.key_id is None or not cost_usd or not math.isfinite(cost_usd) or cost_usd <= 0:
            return
        self._spent[caller.key_id] = self._spent.get(caller.key_id, 0.0) + float(cost_usd)

    def check(self, caller: Caller) -> None:
        spec = caller.spec
        if spec is None or spec.budget_usd is None:
            return
        spent = self._spent.get(spec.id, 0.0)
        if spent >= spec.budget_usd:  # a budget of 0 blocks the key outright
            message = (f"spend budget of key '{spec.id}' is used up "
                       f"(spent {spent:.6f} of {spec.budget_usd:.6f} USD)")
            if self.status == 429:
                raise SidecarError(429, message, type="insufficient_quota", code="insufficient_quota")
            raise SidecarError(403, message, type="permission_error", code="budget_exceeded")
