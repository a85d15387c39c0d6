"""Durability: every request acknowledged by the batching writer survives a SIGKILL mid-load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from triage.router.ledger import open_ledger
from tests.support.ledger import ledger_url  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
ACKS_BEFORE_KILL = 400
THREADS = 16


def test_acknowledged_records_survive_sigkill(ledger_url: str) -> None:
    open_ledger(ledger_url).close()  # schema in place, so the child starts writing at once
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.ledger_child", ledger_url, str(THREADS)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if raw.endswith(b"\n"):  # a torn last line would not count as acknowledged
                lines.append(raw.decode().strip())
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while len(lines) < ACKS_BEFORE_KILL + 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    alive = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)  # mid-load: 16 threads are inside record() right now
    proc.wait(30)
    reader.join(30)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert alive, f"child died on its own: {stderr[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert lines and lines[0] == "READY", stderr[-2000:]
    acked = lines[1:]
    assert len(acked) >= ACKS_BEFORE_KILL, f"only {len(acked)} acks in 120 s: {stderr[-2000:]}"

    with open_ledger(ledger_url) as store:  # opens cleanly after the crash...
        assert store.check_integrity() == []
        stored = {e.record.request_id for e in store.iter_entries()}
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged records lost, e.g. {missing[:3]}"
    assert len(stored) >= len(acked)
