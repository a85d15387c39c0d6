"""One timing loop for the latency benchmarks: one query at a time, after a warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def time_per_query(fn: Callable[[T], Any], items: Sequence[T], *, warmup: int = 2) -> list[float]:
    """Seconds of ``fn(item)`` for each item after the first ``warmup`` (run, not timed: loads and
    first-call set-up stay out of the figures)."""
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items[warmup:]:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return times
