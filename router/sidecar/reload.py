"""Reloading a running sidecar's policies: ``POST /v1/admin/reload``, SIGHUP, and an optional file watch.

Every policy router (the default included) re-reads its policy file and loads the probe it names.
All of them are checked first - the preflight of start-up, the probe loading and deciding a canary
query, policy names unchanged, model aliases still pointing somewhere - and only when every one passes
are they swapped in, each by one reference assignment (:meth:`Router.commit_reload`). A request
decided before the swap finishes, and is recorded, on the bundle that decided it; a refused reload
changes nothing (409 with the reason; the previous policies keep serving).

Several workers (``--workers N``): the endpoint reaches one worker. That worker reloads itself, answers,
and sends SIGHUP to the ``triage serve`` parent, which forwards SIGHUP to every worker once it has
started (:mod:`triage.router.sidecar.supervisor`); a worker reloads on SIGHUP when its files changed
since it last loaded (or failed to load) them, so the one that already reloaded does no second load.
A worker checks its files once more when its handler is installed. A file watch (``watch_policies_s``)
runs in every worker on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from triage.errors import ConfigError
from triage.logging import get_logger
from triage.router.core.reload import ReloadError, RouterBundle, source_fingerprint
from triage.router.sidecar.services import Services, check_model_aliases

# Set by `triage serve` for its workers: the process to SIGHUP so that every worker reloads.
MASTER_PID_ENV = "TRIAGE_SIDECAR_MASTER_PID"

log = get_logger("triage.sidecar")


@dataclass
class ReloadState:
    """Per process: one reload at a time, and the files' fingerprints last loaded or refused."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, str] = field(default_factory=dict)  # policy name -> fingerprint loaded or refused
    generation: int = 0  # successful reloads in this process

    def baseline(self, services: Services) -> None:
        """Fingerprint the files the routers were opened from (what a watch compares with)."""
        for name, router in services.routers.items():
            if router.policy_path is not None:
                # What the router loaded (fingerprinted before it read the files), not the files now.
                self.seen[name] = router.source_fingerprint or source_fingerprint(router.policy_path)


_STATE_LOCK = threading.Lock()


def state_of(services: Services) -> ReloadState:
    """The process's reload state, made (with the files' baseline fingerprints) on first use."""
    with _STATE_LOCK:
        if services.reloads is None:
            state = ReloadState()
            state.baseline(services)
            services.reloads = state
        return services.reloads


def reload_policies(services: Services, *, only_if_changed: bool = False, trigger: str = "admin") -> dict[str, Any]:
    """Reload every policy router of ``services`` (all or nothing); :class:`ReloadError` when refused.

    ``only_if_changed`` (SIGHUP, the watch): do nothing unless some policy's files changed since they
    were last loaded or refused, so a bad file is reported once, not on every poll.
    """
    state = state_of(services)
    with state.lock:
        routers = services.routers
        current = {n: source_fingerprint(r.policy_path) for n, r in routers.items() if r.policy_path}
        if only_if_changed and all(state.seen.get(n) == fp for n, fp in current.items()):
            return {"reloaded": False, "trigger": trigger, "reason": "no policy or probe file changed"}
        prepared: dict[str, RouterBundle] = {}
        try:
            for name, router in routers.items():
                bundle = router.prepare_reload(installed=True)
                if bundle.policy.name != name:
                    raise ReloadError(f"reload of {router.policy_path} refused, the previous policy keeps serving: "
                                      f"the file now names policy '{bundle.policy.name}', served as '{name}'; "
                                      "renaming a served policy needs a restart")
                prepared[name] = bundle
            try:
                check_model_aliases(services.settings, {n: b.policy for n, b in prepared.items()})
            except ConfigError as exc:
                raise ReloadError(f"reload refused, the previous policies keep serving: {exc}") from None
        except ReloadError as exc:
            state.seen.update(current)  # refused: a watch reports it again only after the next edit
            log.error("policy_reload_failed", trigger=trigger, error=str(exc))
            raise
        # Every policy passed: swap them in, one assignment each.
        results = {name: routers[name].commit_reload(bundle).as_dict() for name, bundle in prepared.items()}
        services.passthrough.clear()  # rebuilt on demand from the new strategies and probe
        services.writer.store_prompts = services.settings.store_prompts or any(
            r.store_prompts for r in routers.values())
        state.seen.update({n: b.fingerprint for n, b in prepared.items() if b.fingerprint})
        state.generation += 1
        for name in prepared:
            services.warm[name] = "ready"
        return {"reloaded": True, "trigger": trigger, "generation": state.generation, "pid": os.getpid(),
                "policies": results}


def signal_other_workers(workers: int) -> bool:
    """Ask the ``triage serve`` parent to SIGHUP every worker (several workers only); True if sent."""
    raw = os.environ.get(MASTER_PID_ENV)
    if workers <= 1 or not raw or not raw.isdigit() or int(raw) != os.getppid():
        return False
    os.kill(int(raw), signal.SIGHUP)
    return True


def ignore_sighup() -> None:
    """Make SIGHUP harmless in this process until :class:`ReloadTriggers` handles it (its default
    action ends the process: a starting or draining server would be lost). Off the main thread,
    where signals cannot be set (an embedding server's app factory), nothing is done."""
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:
        pass


class ReloadTriggers:
    """SIGHUP and the optional file watch of one serving process (started and stopped by the lifespan)."""

    def __init__(self, services: Services, watch_s: float | None) -> None:
        self.services = services
        self.watch_s = watch_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sighup = False

    async def _reload(self, trigger: str) -> None:
        try:
            out = await asyncio.to_thread(reload_policies, self.services, only_if_changed=True, trigger=trigger)
            if out.get("reloaded"):
                log.info("policies_reloaded", trigger=trigger, generation=out["generation"])
        except ReloadError:
            pass  # logged by reload_policies; the previous policies keep serving
        except Exception as exc:  # noqa: BLE001 - a reload must never take the server down
            log.error("policy_reload_failed", trigger=trigger, error=f"{type(exc).__name__}: {exc}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        assert self.watch_s is not None
        while True:
            await asyncio.sleep(self.watch_s)
            await self._reload("watch")

    def start(self) -> None:
        state_of(self.services)  # the baseline a watch and SIGHUP compare with: the files just loaded
        loop = asyncio.get_running_loop()
        try:  # only the main thread of a process may own a signal (in-process test apps: skipped)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload("sighup")))
            self._sighup = True
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            log.debug("sighup_reload_unavailable")
        else:
            # A SIGHUP that came while this process started was ignored (app_from_env); a file edited
            # since the routers read it is picked up now rather than at the next signal.
            self._spawn(self._reload("startup"))
        if self.watch_s:
            self._spawn(self._watch())

    def stop(self) -> None:
        if self._sighup:
            try:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
                ignore_sighup()  # removing restores the default action, which would kill a draining server
            except (ValueError, RuntimeError):
                pass
        for task in list(self._tasks):
            task.cancel()
