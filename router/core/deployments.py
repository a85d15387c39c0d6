"""Picking one of a strategy's deployments, and keeping failing ones out of traffic for a while.

A strategy with ``deployments:`` is served by several endpoints of one model (litellm's router calls
them a model group). For each request the deployments are put in a weighted random order, seeded by
the request id and the strategy's name so that a request's order can be reproduced; the plan calls
the first one that is not cooling down, and on a deployment fault the next one. A deployment that
fails ``allowed_fails`` times in a row (a connection error, a timeout, a 5xx or a 429) cools down for
``cooldown_s``: no request calls it until then, unless every other way of answering is gone.

:class:`DeploymentPool` is owned by the :class:`~triage.router.core.router.Router` and shared by every
request it serves (threads and the sidecar's event loop alike): one lock, held only for dictionary
updates, never across a call or an ``await``.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from triage.policies.strategy import Deployment, Strategy

from triage.logging import get_logger

log = get_logger("triage.router.deployments")

# Failure kinds (triage.router.core.calls.classify) that say something about one endpoint: another
# deployment of the same model may well answer. Others (a bad request, a context window too small,
# a model the provider does not know) would fail on every deployment alike.
DEPLOYMENT_FAULTS = frozenset({"connection", "timeout", "server", "rate_limit"})


def deployment_fault(kind: str) -> bool:
    return kind in DEPLOYMENT_FAULTS


def host_of(deployment: Deployment) -> str:
    """``host[:port]`` of a deployment's base URL: what the ledger records (never a path, a query or
    user info, which may carry a credential)."""
    parts = urlsplit(deployment.api_base)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def weighted_order(deployments: list[Deployment], seed: str) -> list[int]:
    """Indexes of ``deployments`` in a weighted random order (Efraimidis-Spirakis: each deployment
    comes first with probability weight / total weight), reproducible for one ``seed``."""
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    keys = [(rng.random() ** (1.0 / d.weight), i) for i, d in enumerate(deployments)]
    return [i for _, i in sorted(keys, reverse=True)]


@dataclass
class _Health:
    fails: int = 0  # consecutive failures
    cooling_until: float = 0.0  # monotonic time


class DeploymentPool:
    """Cooldown state of every deployment of one router's policy, keyed by (strategy, index)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._health: dict[tuple[str, int], _Health] = {}

    def cooling(self, strategy: str, index: int) -> bool:
        with self._lock:
            h = self._health.get((strategy, index))
            return h is not None and h.cooling_until > self._clock()

    def choose(self, strategy: Strategy, request_id: str, tried: set[int]) -> int | None:
        """The deployment to call next: the first of this request's order not yet tried and not
        cooling down; None when there is none."""
        assert strategy.deployments is not None
        for index in weighted_order(strategy.deployments, f"{request_id}:{strategy.name}"):
            if index not in tried and not self.cooling(strategy.name, index):
                return index
        return None

    def last_resort(self, strategy: Strategy, tried: set[int]) -> int:
        """The deployment whose cooldown ends first, untried ones preferred (when nothing else can
        answer, calling a cooling deployment beats failing without a call)."""
        assert strategy.deployments is not None
        every = range(len(strategy.deployments))
        candidates = [i for i in every if i not in tried] or list(every)
        with self._lock:
            return min(candidates, key=lambda i: self._health.get((strategy.name, i), _Health()).cooling_until)

    def failed(self, strategy: Strategy, index: int) -> None:
        """A deployment fault: after ``allowed_fails`` in a row the deployment cools down."""
        with self._lock:
            h = self._health.setdefault((strategy.name, index), _Health())
            h.fails += 1
            if h.fails < strategy.allowed_fails:
                return
            h.fails = 0
            h.cooling_until = self._clock() + strategy.cooldown_s
        assert strategy.deployments is not None
        log.warning("deployment cooling down", strategy=strategy.name, deployment=index,
                    host=host_of(strategy.deployments[index]), cooldown_s=strategy.cooldown_s)

    def succeeded(self, strategy: str, index: int) -> None:
        with self._lock:
            h = self._health.get((strategy, index))
            if h is not None:
                h.fails = 0
