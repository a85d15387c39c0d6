"""Per-key request rate limits (token buckets) and spend budgets.

Both live in the process: with several replicas, each enforces its own bucket (configure
``rate_per_s`` per replica), while spend is seeded from the shared ledger at start-up and then
counted in-process (see docs/sidecar.md). Buckets are only touched from the event loop; spend
takes a lock because reservations are made, settled and released from wherever a request ends.

Budgets reserve before they spend: a request holds an upper bound of its cost
(:mod:`triage.router.sidecar.budget`) from admission until it settles with the actual cost, so concurrent
requests cannot all pass a check that only looks at what has already been spent.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from triage.router.sidecar.auth import Caller
from triage.router.sidecar.errors import SidecarError


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


@dataclass(eq=False)
class Reservation:
    """USD held for one admitted request until it settles. Settling twice does nothing, so every
    path that ends a request (answer, error, client gone, cancellation) may settle it."""

    tracker: SpendTracker
    key_id: str | None
    amount: float
    done: bool = False

    def settle(self, cost_usd: float | None) -> None:
        """Release the hold and count what the request actually cost (None, NaN or <= 0: nothing)."""
        self.tracker._settle(self, cost_usd)

    def release(self) -> None:
        self.settle(None)


def _valid_cost(cost_usd: float | None) -> float:
    if cost_usd is None or not isinstance(cost_usd, int | float) or not math.isfinite(cost_usd) or cost_usd <= 0:
        return 0.0
    return float(cost_usd)


class SpendTracker:
    """USD spent and reserved per key id, against the key's ``budget_usd``.

    A request is admitted when the key's budget is not used up and either its reservation fits
    (``spent + reserved + reservation <= budget``) or nothing else of the key is in flight. With
    reservations that bound each request's cost from above, the key's recorded spend therefore
    never exceeds its budget by more than the actual cost of one request: the last one, admitted
    alone when the rest of the budget was smaller than its bound.
    """

    def __init__(self, status: int = 403) -> None:
        self.status = status
        self._spent: dict[str, float] = {}
        self._open: dict[str, list[Reservation]] = {}
        self._lock = threading.Lock()

    def spent(self, key_id: str) -> float:
        with self._lock:
            return self._spent.get(key_id, 0.0)

    def reserved(self, key_id: str) -> float:
        with self._lock:
            return sum(r.amount for r in self._open.get(key_id, ()))

    def in_flight(self, key_id: str) -> int:
        with self._lock:
            return len(self._open.get(key_id, ()))

    def seed(self, totals: dict[str, float]) -> None:
        """Replace in-process figures by the ledger's totals (start-up, before serving)."""
        with self._lock:
            for key_id, total in totals.items():
                self._spent[key_id] = max(float(total), 0.0)

    def add(self, caller: Caller, cost_usd: float | None) -> None:
        """Count spend that had no reservation."""
        cost = _valid_cost(cost_usd)
        if caller.key_id is None or cost == 0.0:
            return
        with self._lock:
            self._spent[caller.key_id] = self._spent.get(caller.key_id, 0.0) + cost

    def _refuse(self, message: str) -> SidecarError:
        if self.status == 429:
            return SidecarError(429, message, type="insufficient_quota", code="insufficient_quota")
        return SidecarError(403, message, type="permission_error", code="budget_exceeded")

    def _used_up(self, spec_id: str, spent: float, budget: float) -> SidecarError:
        return self._refuse(f"spend budget of key '{spec_id}' is used up (spent {spent:.6f} of {budget:.6f} USD)")

    def check(self, caller: Caller) -> None:
        """Refuse a key whose budget is used up (cheap: before the probe runs; reserving re-checks)."""
        spec = caller.spec
        if spec is None or spec.budget_usd is None:
            return
        spent = self.spent(spec.id)
        if spent >= spec.budget_usd:  # a budget of 0 blocks the key outright
            raise self._used_up(spec.id, spent, spec.budget_usd)

    def reserve(self, caller: Caller, bound_usd: float) -> Reservation:
        """Admit one request holding ``bound_usd`` (an upper bound of its cost; inf when unbounded),
        or raise the budget error. Check and hold happen under one lock, so concurrent requests
        see each other's holds."""
        spec = caller.spec
        amount = float(bound_usd) if bound_usd is not None and not math.isnan(bound_usd) else math.inf
        amount = max(amount, 0.0)
        if spec is None or spec.budget_usd is None:
            return Reservation(self, caller.key_id, 0.0)  # not limited: settling only counts the spend
        budget = spec.budget_usd
        with self._lock:
            spent = self._spent.get(spec.id, 0.0)
            if spent >= budget:
                raise self._used_up(spec.id, spent, budget)
            held = self._open.setdefault(spec.id, [])
            reserved = sum(r.amount for r in held)
            if held and spent + reserved + amount > budget:
                raise self._refuse(
                    f"spend budget of key '{spec.id}' is held by {len(held)} request(s) in flight "
                    f"(spent {spent:.6f}, reserved {reserved:.6f} of {budget:.6f} USD; this request may cost "
                    f"up to {amount:.6f}); retry when they finish")
            reservation = Reservation(self, spec.id, amount)
            held.append(reservation)
            return reservation

    def _settle(self, reservation: Reservation, cost_usd: float | None) -> None:
        cost = _valid_cost(cost_usd)
        with self._lock:
            if reservation.done:
                return
            reservation.done = True
            key_id = reservation.key_id
            if key_id is None:
                return
            held = self._open.get(key_id)
            if held is not None and reservation in held:
                held.remove(reservation)
                if not held:
                    del self._open[key_id]
            if cost > 0.0:
                self._spent[key_id] = self._spent.get(key_id, 0.0) + cost
