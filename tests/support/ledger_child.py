"""Child process of the SIGKILL durability test (tests/test_ledger_durability.py).

``python -m tests.support.ledger_child URL THREADS``: writes records forever through the batching
writer from THREADS threads and prints each request id on stdout only after ``record()`` returned
for it, i.e. after the response would have gone back to the caller. One ``os.write`` per line, so
lines are never torn (pipe writes under PIPE_BUF are atomic), even when the process is killed.
"""

from __future__ import annotations

import os
import sys
import threading

from triage.router.ledger import LedgerWriter, open_ledger
from tests.support.ledger import make_record


def main() -> None:
    url, n_threads = sys.argv[1], int(sys.argv[2])
    writer = LedgerWriter(open_ledger(url)).start()
    os.write(1, b"READY\n")

    def work(k: int) -> None:
        i = 0
        while True:
            rid = f"t{k:02d}-{i:07d}"
            writer.record(make_record(k * 1_000_003 + i, request_id=rid))
            os.write(1, f"{rid}\n".encode())
            i += 1

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
