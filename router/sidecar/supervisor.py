"""The worker supervisor of ``triage serve --workers N``: uvicorn's, except for SIGHUP.

uvicorn's supervisor answers SIGHUP by replacing every worker. Triage's forwards it instead, and each
worker reloads its policies in place (:mod:`triage.router.sidecar.reload`): no process is replaced,
no in-flight request or queued ledger record is lost.

A worker only handles SIGHUP once its lifespan has installed the handler; before that (interpreter
start, imports, opening the ledger, loading the probe: seconds) SIGHUP's default action would kill
it, and the supervisor would start a replacement - which the next SIGHUP would kill as well. So the
signal goes only to workers that report their server started; the others are remembered and
signalled as soon as they do. A worker replaced meanwhile needs nothing: it loads the files as they
are now.
"""

from __future__ import annotations

import logging
import os
import signal
from socket import socket

from uvicorn.config import Config
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

log = logging.getLogger("uvicorn.error")

# How long one supervisor tick waits for a starting worker's health answer (the tick is 0.5 s).
READY_PING_S = 0.2


class ReloadingMultiprocess(Multiprocess):
    """:class:`uvicorn.supervisors.Multiprocess` whose SIGHUP reloads the policies in every worker."""

    def __init__(self, config: Config, sockets: list[socket]) -> None:
        super().__init__(config, sockets)
        self.reload_pending: list[Process] = []  # workers owed a SIGHUP once their server has started

    def handle_hup(self) -> None:
        log.info("Received SIGHUP, reloading the policies in every worker.")
        self.reload_pending = list(self.processes)
        self.forward_reloads()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self.forward_reloads()

    def forward_reloads(self) -> None:
        """SIGHUP every pending worker whose server has started; keep the rest pending."""
        waiting: list[Process] = []
        for process in self.reload_pending:
            if self.should_exit.is_set():
                return
            if process not in self.processes or process.exitcode is not None:
                continue  # replaced: its successor loads the files as they are now
            if not process.is_ready(timeout=READY_PING_S):
                waiting.append(process)  # still starting (or busy): the next tick asks again
                continue
            try:
                os.kill(process.pid, signal.SIGHUP)  # type: ignore[arg-type]
            except OSError:  # gone since the ping: its successor loads the current files
                pass
        self.reload_pending = waiting
