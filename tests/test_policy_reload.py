"""Reloading policies without a restart: the SDK's Router.reload and the sidecar's POST /v1/admin/reload.

Real parts: `triage serve` on loopback, the session's default probe artifact (loaded, never trained),
a SQLite ledger. The upstream is the benchmark stub, used here only to inject a delay (a request stays
in flight across the reload) on the `openai/slow` model.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.sidecar import CLIENT_KEY, SidecarProcess, key_table, record_of, sha, stub_upstream

ADMIN_KEY = "sk-triage-admin-SECRET-9b1e4c7a2d"
HANG_S = 4.0


def write_policy(path: Path, base: str, *, version: str, tier_strategy: str, probe: str = "default",
                 **extra: Any) -> None:
    def strategy(model: str) -> dict[str, Any]:
        return {"model": model, "api_base": f"{base}/v1", "api_key_env": "TEST_UPSTREAM_KEY", "max_tokens": 8,
                "timeout_s": 30}

    doc = {"name": "live", "version": version, "probe": probe,
           "strategies": {"fast": strategy("openai/fast"), "slow": strategy("openai/slow")},
           "tiers": {"easy": tier_strategy, "normal": tier_strategy, "hard": tier_strategy}, **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # atomically, as an editor or `triage learn --apply` would


def headers(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def route(url: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/route", headers=headers(CLIENT_KEY), timeout=30,
                   json={"model": "triage/live", "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    assert r.status_code == 200, r.text
    return r.json()["decision"]


@pytest.fixture
def slow_stub():
    with stub_upstream("--timeout-rate", "1", "--hang-s", str(HANG_S), "--fault-models", "slow") as base:  # litellm sends the bare name
        yield base


def start(tmp_path: Path, policy: Path, *, wait_ready: bool = True, **extra: Any) -> SidecarProcess:
    keys = key_table() + [{"id": "ops", "sha256": sha(ADMIN_KEY), "admin": True}]
    return SidecarProcess(tmp_path, [policy], extra={"api_keys": keys, **extra}, wait_ready=wait_ready)


def test_reload_swaps_policy_in_flight_request_finishes_on_old(tmp_path, slow_stub):
    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="slow")
    side = start(tmp_path, policy)
    try:
        before = route(side.url)
        assert (before["policy_version"], before["strategy"]) == ("1", "slow")
        assert before["probe_version"]

        # A streaming request decided by version 1, held upstream while the policy is reloaded.
        got: dict[str, Any] = {}

        def stream() -> None:
            with httpx.stream("POST", f"{side.url}/v1/chat/completions", headers=headers(CLIENT_KEY), timeout=60,
                              json={"model": "triage/live", "stream": True,
                                    "messages": [{"role": "user", "content": "Say ok."}]}) as r:
                got["status"] = r.status_code
                got["id"] = r.headers.get("x-triage-request-id")
                got["body"] = "".join(r.iter_text())

        t = threading.Thread(target=stream)
        t.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{slow_stub}/stats").json()["hung"] < 1:  # upstream holds it: in flight
            assert time.monotonic() < deadline, "the streaming request never reached the upstream"
            time.sleep(0.05)

        write_policy(policy, slow_stub, version="2", tier_strategy="fast")
        r = httpx.post(f"{side.url}/v1/admin/reload", headers=headers(ADMIN_KEY), timeout=120)
        assert r.status_code == 200, r.text
        out = r.json()["policies"]["live"]
        assert (out["before"]["policy_version"], out["after"]["policy_version"]) == ("1", "2")
        assert out["changed"] and out["after"]["probe_version"] == before["probe_version"]
        assert t.is_alive(), "the reload waited for the in-flight request; it must not"

        after = route(side.url)
        assert (after["policy_version"], after["strategy"]) == ("2", "fast")

        t.join(60)
        assert got["status"] == 200 and "[DONE]" in got["body"], got
        rec = record_of(side.ledger, got["id"])
        assert (rec.policy_version, rec.strategy, rec.error) == ("1", "slow", None)
    finally:
        side.stop()


def test_bad_policy_is_refused_and_old_one_keeps_serving(tmp_path, slow_stub):
    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    side = start(tmp_path, policy)
    try:
        # A tier naming a strategy the file does not define: the loader's message, 409, nothing swapped.
        write_policy(policy, slow_stub, version="2", tier_strategy="missing")
        r = httpx.post(f"{side.url}/v1/admin/reload", headers=headers(ADMIN_KEY), timeout=120)
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "reload_refused" and "missing" in err["message"] and "previous" in err["message"]
        # A probe artifact that does not load: refused the same way.
        write_policy(policy, slow_stub, version="3", tier_strategy="fast", probe=str(tmp_path / "no-probe"))
        r = httpx.post(f"{side.url}/v1/admin/reload", headers=headers(ADMIN_KEY), timeout=120)
        assert r.status_code == 409 and "no-probe" in r.json()["error"]["message"], r.text
        assert route(side.url)["policy_version"] == "1"

        # Tenants never reload; nor does an anonymous caller of a server with keys.
        write_policy(policy, slow_stub, version="4", tier_strategy="fast")
        r = httpx.post(f"{side.url}/v1/admin/reload", headers=headers(CLIENT_KEY), timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", r.text
        r = httpx.post(f"{side.url}/v1/admin/reload", timeout=30)
        assert r.status_code == 401, r.text
        assert route(side.url)["policy_version"] == "1"
        # SIGHUP reloads (it used to stop the server).
        side.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while route(side.url)["policy_version"] != "4":
            assert side.proc.poll() is None, side.log_text()[-2000:]
            assert time.monotonic() < deadline, side.log_text()[-2000:]
            time.sleep(0.2)
        assert "policy_reload_failed" in side.log_text()
    finally:
        side.stop()


def test_file_watch_reloads(tmp_path, slow_stub):
    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    side = start(tmp_path, policy, watch_policies_s=0.3)
    try:
        assert route(side.url)["policy_version"] == "1"
        write_policy(policy, slow_stub, version="2", tier_strategy="slow")
        deadline = time.monotonic() + 60
        while (d := route(side.url))["policy_version"] != "2":
            assert time.monotonic() < deadline, side.log_text()[-2000:]
            time.sleep(0.2)
        assert d["strategy"] == "slow"
    finally:
        side.stop()


def test_sighup_reloads_every_worker(tmp_path, slow_stub):
    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    side = start(tmp_path, policy, workers=2)
    try:
        write_policy(policy, slow_stub, version="2", tier_strategy="slow")
        # Via the endpoint: one worker answers, then the parent SIGHUPs both.
        r = httpx.post(f"{side.url}/v1/admin/reload", headers=headers(ADMIN_KEY), timeout=120)
        assert r.status_code == 200 and r.json()["workers"] == {"count": 2, "signalled": True}, r.text
        deadline = time.monotonic() + 120
        while True:  # every new connection may land on either worker: all must say version 2
            seen = {route(side.url)["policy_version"] for _ in range(12)}
            if seen == {"2"}:
                break
            assert time.monotonic() < deadline, (seen, side.log_text()[-3000:])
            time.sleep(0.5)
        # SIGHUP to the parent: forwarded to both workers (uvicorn alone would replace them).
        write_policy(policy, slow_stub, version="3", tier_strategy="fast")
        side.proc.send_signal(signal.SIGHUP)
        while True:
            seen = {route(side.url)["policy_version"] for _ in range(12)}
            if seen == {"3"}:
                break
            assert side.proc.poll() is None and time.monotonic() < deadline, (seen, side.log_text()[-3000:])
            time.sleep(0.5)
        assert "Child process" not in side.log_text()  # no worker died or was replaced
    finally:
        side.stop()


def test_sighup_while_workers_start_kills_none(tmp_path, slow_stub):
    """SIGHUP's default action kills a process; a worker only handles it once its lifespan has run.
    SIGHUPs sent to the parent all through the workers' start-up must neither kill one nor be lost:
    the parent holds the signal for a worker until it has started."""
    import os

    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    side = start(tmp_path, policy, workers=2, wait_ready=False)
    try:
        deadline = time.monotonic() + 120
        while "Started parent process" not in side.log_text():  # its SIGHUP handler is installed
            assert side.proc.poll() is None and time.monotonic() < deadline, side.log_text()[-3000:]
            time.sleep(0.05)
        write_policy(policy, slow_stub, version="2", tier_strategy="slow")
        signals = 0
        while side.log_text().count('"sidecar_started"') < 2:  # both workers through their lifespan
            os.kill(side.proc.pid, signal.SIGHUP)
            signals += 1
            assert side.proc.poll() is None and time.monotonic() < deadline, side.log_text()[-3000:]
            time.sleep(0.2)
        assert signals >= 5, signals  # the workers' start-up is seconds long: it was signalled throughout
        side.wait_ready(120)
        workers = _worker_pids(side.proc.pid)
        assert len(workers) == 2, workers
        write_policy(policy, slow_stub, version="3", tier_strategy="fast")
        side.proc.send_signal(signal.SIGHUP)  # and a started worker reloads in place
        while {route(side.url)["policy_version"] for _ in range(12)} != {"3"}:
            assert time.monotonic() < deadline, side.log_text()[-3000:]
            time.sleep(0.5)
        log = side.log_text()
        assert "Child process" not in log, log[-3000:]  # no worker died or was replaced
        assert _worker_pids(side.proc.pid) == workers
    finally:
        side.stop()


def test_sdk_router_reload_changed_probe(tmp_path, slow_stub, monkeypatch):
    from triage.probes.runtime import require_default_probe
    from triage.router.core.reload import ReloadError
    from triage.router.core.router import Router

    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-test")
    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    router = Router.from_file(policy)
    old_probe = router.route("What is 2 + 2?").probe_version

    # A "newly trained" probe: the artifact under another path with its own version.
    new = tmp_path / "probe-v2"
    shutil.copytree(require_default_probe(), new)
    card = json.loads((new / "card.json").read_text())
    card["probe_version"] = "reload-test-v2"
    (new / "card.json").write_text(json.dumps(card))

    write_policy(policy, slow_stub, version="2", tier_strategy="slow", probe=str(new))
    result = router.reload()
    assert result.before["policy_version"] == "1" and result.after["policy_version"] == "2"
    assert (result.before["probe_version"], result.after["probe_version"]) == (old_probe, "reload-test-v2")
    d = router.route("What is 2 + 2?")
    assert (d.policy_version, d.probe_version, d.strategy) == ("2", "reload-test-v2", "slow")

    # A decided request keeps its bundle: executing it after a reload uses the policy that decided it.
    routed = router.route_detailed("What is 2 + 2?")
    write_policy(policy, slow_stub, version="3", tier_strategy="fast", probe=str(new))
    router.reload()
    assert router.execution(routed).policy.version == "2"

    # Broken probe artifact: refused before anything changes.
    (new / "card.json").write_text("{not json")
    write_policy(policy, slow_stub, version="4", tier_strategy="fast", probe=str(new))
    with pytest.raises(ReloadError, match="previous policy keeps serving"):
        router.reload()
    d = router.route("What is 2 + 2?")
    assert (d.policy_version, d.probe_version) == ("3", "reload-test-v2")


def test_a_worker_that_starts_after_an_edit_still_picks_it_up(tmp_path, slow_stub, monkeypatch):
    """The watch/SIGHUP baseline is what the router loaded, not the files when the server finished
    starting: a worker still starting when the file changed took the new file's fingerprint as its
    baseline, so SIGHUP found "nothing changed" and it served the old version for good."""
    from types import SimpleNamespace

    from triage.router.core.reload import source_fingerprint
    from triage.router.core.router import Router
    from triage.router.sidecar.reload import ReloadState

    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-test")
    policy = tmp_path / "live.yaml"
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    loaded = source_fingerprint(policy)
    router = Router.from_file(policy)
    write_policy(policy, slow_stub, version="2", tier_strategy="slow")  # edited while "starting"
    state = ReloadState()
    state.baseline(SimpleNamespace(routers={"live": router}))
    assert router.source_fingerprint == loaded == state.seen["live"] != source_fingerprint(policy)


def _worker_pids(supervisor: int) -> list[int]:
    """The serving workers of a `triage serve --workers N` supervisor: its children started by
    multiprocessing's spawn (not its resource tracker)."""
    import psutil

    pids = []
    for child in psutil.Process(supervisor).children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:  # gone meanwhile
            continue
    return sorted(pids)


@pytest.mark.parametrize(("healthcheck_s", "replaced"), [(5.0, True), (None, False)],
                         ids=["uvicorn-default-5s", "triage-default"])
def test_a_busy_worker_is_not_killed_as_hung(tmp_path, slow_stub, healthcheck_s, replaced):
    """uvicorn's supervisor SIGKILLs a worker that leaves its health ping unanswered for
    ``timeout_worker_healthcheck`` - with its in-flight requests and unflushed ledger records. A worker
    frozen for 8 s (SIGSTOP: as busy as it gets) is replaced under uvicorn's 5 s, and is still the same
    process under Triage's ``worker_healthcheck_s`` default."""
    import os

    policy = tmp_path / "live.yaml"
    # The stub upstream only fills the policy's api_base: /v1/route decides without calling a model.
    write_policy(policy, slow_stub, version="1", tier_strategy="fast")
    extra = {} if healthcheck_s is None else {"worker_healthcheck_s": healthcheck_s}
    side = start(tmp_path, policy, workers=2, **extra)
    try:
        assert route(side.url)["policy_version"] == "1"
        workers = _worker_pids(side.proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGSTOP)
        try:
            time.sleep(8)
        finally:
            try:
                os.kill(workers[0], signal.SIGCONT)
            except ProcessLookupError:  # already killed as hung (the 5 s case)
                pass
        time.sleep(2)  # the supervisor's next pings (every 0.5 s)
        now = _worker_pids(side.proc.pid)
        if replaced:
            assert workers[0] not in now and len(now) == 2 and "Child process" in side.log_text(), now
        else:
            assert now == workers and "Child process" not in side.log_text(), (now, side.log_text()[-2000:])
        assert {route(side.url)["policy_version"] for _ in range(12)} == {"1"}  # both serve
    finally:
        side.stop()
