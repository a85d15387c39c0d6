"""One report for the hostile-input and fault tests (``tests/test_hostile_*.py``).

Each hostile test records what it observed for each case through the ``hostile`` fixture: the HTTP
statuses it got, whether anything hung, how many acknowledged records went missing from the ledger,
how many configured secrets were seen where they must not be. The test asserts on the same numbers;
``eval/bench/hostile.py --json`` runs these tests and sums the cases into one report. When
``TRIAGE_HOSTILE_REPORT`` names a file, each case is appended to it as one JSON line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

_lock = threading.Lock()


@dataclass
class HostileCase:
    name: str
    area: str
    statuses: list[int] = field(default_factory=list)
    hangs: int = 0
    records_lost: int = 0
    secrets_leaked: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def count_5xx(self) -> int:
        # 502/503/504 are the documented answers for upstream and ledger faults; 500 is a Triage bug.
        return sum(1 for s in self.statuses if s == 500 or s >= 505)


class HostileReport:
    """Collects cases for one test; ``case(...)`` returns the case so a test can assert on it."""

    def __init__(self, area: str) -> None:
        self.area = area
        self.cases: list[HostileCase] = []

    def case(self, name: str, *, statuses: Iterable[int] = (), hangs: int = 0, records_lost: int = 0,
             secrets_leaked: int = 0, **detail: Any) -> HostileCase:
        c = HostileCase(name=name, area=self.area, statuses=list(statuses), hangs=hangs,
                        records_lost=records_lost, secrets_leaked=secrets_leaked, detail=detail)
        self.cases.append(c)
        path = os.environ.get("TRIAGE_HOSTILE_REPORT")
        if path:
            line = json.dumps({**asdict(c), "count_5xx": c.count_5xx}, default=str)
            with _lock, open(path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        return c


def count_secrets(texts: Iterable[str | bytes], secrets: Iterable[str]) -> int:
    """How many (text, secret) pairs contain the secret verbatim."""
    n = 0
    secrets = [s for s in secrets if s]
    for t in texts:
        s_text = t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
        n += sum(1 for s in secrets if s in s_text)
    return n


@pytest.fixture()
def hostile(request: pytest.FixtureRequest) -> HostileReport:
    """Record hostile cases under the test module's area (``test_hostile_<area>.py``)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    area = module.removeprefix("test_hostile_")
    return HostileReport(area)
