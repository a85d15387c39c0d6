"""Fallback chains and load-balanced deployments, against real loopback upstreams.

The upstreams are the stub upstream (eval/bench/stub_upstream.py), several instances on their own
ports: two that answer and one with fault injection on every request (HTTP 500/503). Triage reaches
them through litellm's ``openai/`` provider with ``api_base``, exactly as it reaches a real provider;
which instance received what is read from each stub's ``/stats``. The stub's answers are never
judged, only where the requests went and what Triage recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from triage.policies.loader import load_policy
from triage.policies.strategy import Strategy
from triage.router.core import Router, TriageProviderError
from triage.router.core.deployments import DeploymentPool

from tests.support.sidecar import CLIENT_KEY, SidecarProcess, record_of, stub_upstream
from triage.errors import ConfigError

MESSAGES = [{"role": "user", "content": "What is 3 + 4?"}]
TIERS = {"easy": "primary", "normal": "primary", "hard": "primary"}


class Stub:
    def __init__(self, base: str) -> None:
        self.base = base
        self.api = f"{base}/v1"

    def requests(self) -> int:
        return int(httpx.get(f"{self.base}/stats", timeout=5).json()["requests"])


@pytest.fixture(scope="module")
def stubs():
    with ExitStack() as stack:
        yield {
            "ok_a": Stub(stack.enter_context(stub_upstream())),
            "ok_b": Stub(stack.enter_context(stub_upstream())),
            "bad": Stub(stack.enter_context(stub_upstream("--fail-rate", "1.0"))),
        }


def remote(stub: Stub, **more: Any) -> dict[str, Any]:
    return {"model": "openai/stub", "api_base": stub.api, "max_tokens": 8, "timeout_s": 10, **more}


def balanced(*deps: tuple[Stub, float], **more: Any) -> dict[str, Any]:
    return {"model": "openai/stub", "max_tokens": 8, "timeout_s": 10,
            "deployments": [{"api_base": s.api, "weight": w} for s, w in deps], **more}


def write_policy(tmp_path: Path, strategies: dict[str, Any], **doc: Any) -> Path:
    raw = {"name": "chains", "probe": "default", "strategies": strategies, "tiers": TIERS, **doc}
    path = tmp_path / f"chains-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def reasons(info: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["strategy"], a["reason"]) for a in info["attempts"]]


# ---- fallback chains -----------------------------------------------------------------------------


def test_chain_order_first_fallback_fails_second_answers(tmp_path, stubs):
    ok_a, ok_b, bad = stubs["ok_a"], stubs["ok_b"], stubs["bad"]
    path = write_policy(tmp_path, {"primary": remote(bad), "fb1": remote(bad), "fb2": remote(ok_a),
                                   "fb3": remote(ok_b)}, fallback=["fb1", "fb2", "fb3"])
    before = (bad.requests(), ok_a.requests(), ok_b.requests())
    with Router.from_file(path, ledger=str(tmp_path / "ledger.sqlite")) as router:
        response = router.completion(messages=MESSAGES)
        info = response._hidden_params["triage"]
        assert reasons(info) == [("primary", "primary"), ("fb1", "fallback"), ("fb2", "fallback")]
        assert [a["error_kind"] for a in info["attempts"]] == ["server", "server", None]
        assert info["strategy"] == "fb2" and info["fell_back"]
        record = router.ledger.store.get(info["request_id"])
        assert [(a.strategy, a.kind) for a in record.attempts] == reasons(info)
        assert record.attempts[0].error and record.attempts[1].error and record.attempts[2].error is None
        assert record.strategy == "fb2"
        # the async driver follows the same plan
        info = asyncio.run(router.acompletion(messages=MESSAGES))._hidden_params["triage"]
        assert reasons(info) == [("primary", "primary"), ("fb1", "fallback"), ("fb2", "fallback")]
    # each entry called once per request, in order; fb3 never needed
    assert (bad.requests(), ok_a.requests(), ok_b.requests()) == (before[0] + 4, before[1] + 2, before[2])


def test_a_strategys_own_chain_overrides_the_policys(tmp_path, stubs):
    ok_a, ok_b, bad = stubs["ok_a"], stubs["ok_b"], stubs["bad"]
    path = write_policy(tmp_path, {"primary": remote(bad, fallbacks=["own"]), "own": remote(ok_a),
                                   "policy_wide": remote(ok_b)}, fallback="policy_wide")
    b = ok_b.requests()
    info = Router.from_file(path).completion(messages=MESSAGES)._hidden_params["triage"]
    assert reasons(info) == [("primary", "primary"), ("own", "fallback")]
    assert ok_b.requests() == b
    # `fallbacks: []` turns the policy's chain off for that strategy
    path = write_policy(tmp_path, {"primary": remote(bad, fallbacks=[]), "policy_wide": remote(ok_b)},
                        fallback="policy_wide")
    with pytest.raises(TriageProviderError, match="no fallback"):
        Router.from_file(path).completion(messages=MESSAGES)
    assert ok_b.requests() == b


def test_an_exhausted_chain_raises_naming_what_was_tried(tmp_path, stubs):
    bad = stubs["bad"]
    path = write_policy(tmp_path, {"primary": remote(bad), "fb1": remote(bad), "fb2": remote(bad)},
                        fallback=["fb1", "fb2"])
    n = bad.requests()
    with pytest.raises(TriageProviderError) as info:
        Router.from_file(path).completion(messages=MESSAGES)
    err = info.value
    assert "tried: primary, fb1, fb2" in str(err) and "tried: primary, fb1, fb2" in err.summary
    assert [(a["strategy"], a["reason"]) for a in err.attempts] == [
        ("primary", "primary"), ("fb1", "fallback"), ("fb2", "fallback")]
    assert err.kind == "server" and bad.requests() == n + 3  # each strategy once


def test_streaming_falls_back_along_the_chain_before_the_first_chunk(tmp_path, stubs):
    path = write_policy(tmp_path, {"primary": remote(stubs["bad"]), "fb1": remote(stubs["bad"]),
                                   "fb2": remote(stubs["ok_a"])}, fallback=["fb1", "fb2"])
    router = Router.from_file(path)
    stream = router.completion(messages=MESSAGES, stream=True)
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text == "ok"
    assert reasons(stream.triage) == [("primary", "primary"), ("fb1", "fallback"), ("fb2", "fallback")]

    async def astream() -> dict[str, Any]:
        s = await router.acompletion(messages=MESSAGES, stream=True)
        assert "".join([(c.choices[0].delta.content or "") async for c in s if c.choices]) == "ok"
        return s.triage

    assert reasons(asyncio.run(astream())) == reasons(stream.triage)


# ---- deployments ---------------------------------------------------------------------------------


def test_deployments_share_the_traffic_by_weight(tmp_path, stubs):
    ok_a, ok_b = stubs["ok_a"], stubs["ok_b"]
    path = write_policy(tmp_path, {"primary": balanced((ok_a, 3.0), (ok_b, 1.0))})
    a, b = ok_a.requests(), ok_b.requests()
    with Router.from_file(path, ledger=str(tmp_path / "ledger.sqlite")) as router:
        n = 40
        for _ in range(n):
            info = router.completion(messages=MESSAGES)._hidden_params["triage"]
        to_a, to_b = ok_a.requests() - a, ok_b.requests() - b
        assert to_a + to_b == n and to_b >= 3 and 0.55 <= to_a / n <= 0.95, (to_a, to_b)
        # the ledger says which deployment answered (index and host), never more of the URL
        record = router.ledger.store.get(info["request_id"])
        port = (ok_a if info["attempts"][0]["extra"]["deployment"] == 0 else ok_b).base.rsplit(":", 1)[1]
        assert record.metadata["deployments"] == [{"deployment": info["attempts"][0]["extra"]["deployment"],
                                                    "host": f"127.0.0.1:{port}"}]
    # a request id always gets the same order (reproducible)
    router = Router.from_file(path)
    picks = {router.completion(messages=MESSAGES, request_id="fixed-id")._hidden_params["triage"]
             ["attempts"][0]["extra"]["deployment"] for _ in range(4)}
    assert len(picks) == 1


def test_a_failing_deployment_cools_down_then_gets_traffic_again(tmp_path, stubs):
    ok_a, bad = stubs["ok_a"], stubs["bad"]
    cooldown = 6.0
    path = write_policy(tmp_path, {"primary": balanced((bad, 1.0), (ok_a, 1.0), cooldown_s=cooldown)})
    router = Router.from_file(path)
    router.warm()
    for _ in range(30):  # until a request's order puts the failing deployment first
        info = router.completion(messages=MESSAGES)._hidden_params["triage"]
        if len(info["attempts"]) == 2:
            break
    assert [a["extra"]["deployment"] for a in info["attempts"]] == [0, 1]
    assert reasons(info) == [("primary", "primary"), ("primary", "primary")]  # same strategy, no fallback
    cooled_at, n = time.monotonic(), bad.requests()
    for _ in range(6):
        info = router.completion(messages=MESSAGES)._hidden_params["triage"]
        assert [a["extra"]["deployment"] for a in info["attempts"]] == [1]
    assert time.monotonic() - cooled_at < cooldown, "the machine was too slow to test inside the cooldown"
    assert bad.requests() == n  # no traffic while cooling down
    time.sleep(max(0.0, cooldown - (time.monotonic() - cooled_at)) + 0.5)
    for _ in range(30):
        router.completion(messages=MESSAGES)
        if bad.requests() > n:
            break
    assert bad.requests() > n  # back in the rotation after cooldown_s


def test_all_deployments_down_goes_to_the_fallback_chain(tmp_path, stubs):
    ok_a, bad = stubs["ok_a"], stubs["bad"]
    path = write_policy(tmp_path, {"primary": balanced((bad, 1.0), (bad, 1.0)), "backup": remote(ok_a)},
                        fallback="backup")
    router = Router.from_file(path)
    n = bad.requests()
    info = router.completion(messages=MESSAGES)._hidden_params["triage"]
    assert reasons(info) == [("primary", "primary"), ("primary", "primary"), ("backup", "fallback")]
    assert sorted(a["extra"]["deployment"] for a in info["attempts"][:2]) == [0, 1]
    assert bad.requests() == n + 2
    # both cooling: the next request skips the strategy without calling it
    info = router.completion(messages=MESSAGES)._hidden_params["triage"]
    assert reasons(info) == [("backup", "fallback")] and bad.requests() == n + 2
    # nothing else left: the cooling deployment is called anyway rather than failing untried
    lone = write_policy(tmp_path, {"primary": balanced((bad, 1.0), (bad, 1.0))})
    router = Router.from_file(lone)
    with pytest.raises(TriageProviderError, match=r"tried: primary \(2 deployments\)"):
        router.completion(messages=MESSAGES)
    with pytest.raises(TriageProviderError):
        router.completion(messages=MESSAGES)
    assert bad.requests() == n + 5


def test_allowed_fails_counts_consecutive_failures() -> None:
    now = [100.0]
    pool = DeploymentPool(clock=lambda: now[0])
    s = Strategy.model_validate({"name": "p", "model": "openai/stub", "allowed_fails": 2, "cooldown_s": 10,
                                 "deployments": [{"api_base": "http://127.0.0.1:1/v1"},
                                                 {"api_base": "http://127.0.0.1:2/v1"}]})
    pool.failed(s, 0)
    pool.succeeded("p", 0)  # an answer in between resets the count
    pool.failed(s, 0)
    assert not pool.cooling("p", 0)
    pool.failed(s, 0)
    assert pool.cooling("p", 0) and pool.choose(s, "r", set()) == 1
    now[0] += 10.5
    assert not pool.cooling("p", 0)


# ---- the sidecar ---------------------------------------------------------------------------------


def test_sidecar_answers_502_json_naming_the_tried_strategies(tmp_path, stubs):
    bad, ok_a = stubs["bad"], stubs["ok_a"]
    down = write_policy(tmp_path, {"primary": remote(bad), "fb1": remote(bad)}, fallback=["fb1"])
    doc = yaml.safe_load(down.read_text())
    doc["name"] = "down"
    down.write_text(yaml.safe_dump(doc))
    lb = write_policy(tmp_path, {"primary": balanced((bad, 1.0), (ok_a, 1.0))})
    doc = yaml.safe_load(lb.read_text())
    doc["name"] = "lb"
    lb.write_text(yaml.safe_dump(doc))
    sidecar = SidecarProcess(tmp_path, [down, lb])
    try:
        h = {"authorization": f"Bearer {CLIENT_KEY}"}
        for stream in (False, True):
            r = httpx.post(sidecar.url + "/v1/chat/completions", headers=h, timeout=60,
                           json={"model": "triage/down", "messages": MESSAGES, "stream": stream})
            assert r.status_code == 502, r.text
            err = r.json()["error"]
            assert err["type"] == "upstream_error" and "tried: primary, fb1" in err["message"]
            rec = record_of(sidecar.ledger, r.headers["x-triage-request-id"])
            assert [(a.strategy, a.kind) for a in rec.attempts] == [("primary", "primary"), ("fb1", "fallback")]
        # the cooldown is shared by the sidecar's requests: once deployment 0 failed, nobody calls it
        n, hit = bad.requests(), False
        for _ in range(12):
            r = httpx.post(sidecar.url + "/v1/chat/completions", headers=h, timeout=60,
                           json={"model": "triage/lb", "messages": MESSAGES})
            assert r.status_code == 200, r.text
            hit = hit or bad.requests() > n
        assert bad.requests() - n == (1 if hit else 0)
    finally:
        sidecar.stop()


# ---- bad policy files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.__setitem__("fallback", ["fb", "ghost"]), "field 'fallback.1': unknown strategy 'ghost'"),
    (lambda d: d["strategies"]["primary"].__setitem__("fallbacks", ["ghost"]),
     "field 'strategies.primary.fallbacks.0': unknown strategy 'ghost'"),
    (lambda d: d["strategies"]["fb"].__setitem__("fallbacks", ["fb"]), "cannot fall back to itself"),
    (lambda d: d["strategies"]["primary"]["deployments"][0].__setitem__("api_key", "sk-literal-SECRET-123456"),
     "'api_key' must not be written in a policy file; use api_key_env"),
    (lambda d: d["strategies"]["primary"].__setitem__("api_base", "http://127.0.0.1:9/v1"),
     "set api_base and api_key_env on each deployment"),
    (lambda d: d["strategies"]["fb"].__setitem__("cooldown_s", 5), "apply only to a strategy with deployments"),
])
def test_bad_policy_files_are_refused_at_load(tmp_path, change, expected):
    doc = {"name": "bad", "strategies": {
        "primary": {"model": "openai/stub", "deployments": [{"api_base": "http://127.0.0.1:9/v1"}]},
        "fb": {"model": "openai/stub", "api_base": "http://127.0.0.1:9/v1"}}, "tiers": TIERS, "fallback": "fb"}
    change(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert expected in message and "sk-literal-SECRET" not in message
    assert len(message.strip().splitlines()) == 1, message


def test_callers_cannot_bring_their_own_deployments_or_fallbacks(tmp_path, stubs):
    from triage.router.core.fields import UnsupportedFieldError

    path = write_policy(tmp_path, {"primary": balanced((stubs["ok_a"], 1.0))})
    router = Router.from_file(path)
    n = stubs["ok_a"].requests()
    for field, value in [("fallbacks", [{"api_base": "http://127.0.0.1:9/v1"}]), ("api_base", "http://x/v1"),
                         ("api_key", "sk-x"), ("deployments", [{"api_base": "http://x/v1"}])]:
        with pytest.raises(UnsupportedFieldError):
            router.completion(messages=MESSAGES, **{field: value})
    assert stubs["ok_a"].requests() == n
