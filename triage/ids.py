"""Cheap request ids: a per-process random prefix and a counter (32 hex characters, like a uuid4's hex).

Unique without a system call per request (``uuid4`` reads ``os.urandom`` each time); shared by the
sidecar's middleware and the SDK's ``Router`` so both name requests the same way.
"""

from __future__ import annotations

import itertools
import os


class RequestIds:
    """``<16 random hex><16 hex counter>``: distinct across processes (a forked child draws a new
    prefix) and within one, at the cost of a counter step."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


REQUEST_IDS = RequestIds()


def new_request_id() -> str:
    """The next request id of this process."""
    return REQUEST_IDS.next()
