"""The direct path (triage.router.providers.openai_direct) and litellm give the same receipt and the
same ledger record for the same upstream answer - non-streamed and streamed, sync and async, tool
calls, upstream errors (500, 429, a hang past the timeout, a refused connection) with their fallbacks
and deployment failover, and a stream without a usage chunk.

Upstreams on loopback: the benchmark's stub (eval/bench/stub_upstream.py) answers, the scripted
upstream (tests/support/scripted_upstream.py) calls tools, and a small fault server here injects what
neither does (429, a hang, a stream cut before its usage). Each request records its User-Agent, so a
test can tell which client made the call: the direct path must actually be taken.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from triage.policies.loader import load_policy
from triage.router.core import Router
from triage.router.core.errors import TriageProviderError
from triage.router.providers.openai_direct import uses_direct

from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.sidecar import free_port
from tests.support.sidecar import stub_upstream as run_stub_upstream
from triage.errors import ConfigError

ASK = [{"role": "user", "content": "Name one primary colour."}]
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 3.0}
_VOLATILE = {"request_id", "latency_s", "decision_latency_s", "time", "created_at"}


class FaultUpstream:
    """OpenAI-compatible answers chosen by the requested model: fault-500, fault-429, fault-hang,
    nousage (a stream whose usage chunk never comes), anything else a normal answer."""

    def __init__(self) -> None:
        self.agents: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                outer.agents.append(self.headers.get("user-agent", ""))
                model = str(req.get("model"))
                if model == "fault-hang":
                    time.sleep(3.0)
                if model in ("fault-500", "fault-429"):
                    status = int(model[-3:])
                    return self._send(status, json.dumps({"error": {"message": f"injected {status}",
                                                                    "type": "server_error"}}).encode())
                base = {"id": "chatcmpl-fault", "created": 1, "model": model}
                usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
                if not req.get("stream"):
                    body = {**base, "object": "chat.completion", "usage": usage, "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "red"}, "finish_reason": "stop"}]}
                    return self._send(200, json.dumps(body).encode())
                events = [{**base, "object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": w}, "finish_reason": None}]}
                    for w in ("re", "d")]
                events.append({**base, "object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if model != "nousage":
                    events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
                return self._send(200, data, "text/event-stream")

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", kind)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the caller timed out first
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    with run_stub_upstream() as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultUpstream]:
    up = FaultUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    yield up
    up.close()


def _policy(folder: Path, api: str, primary: dict[str, Any], stub: str) -> Path:
    strategies = {
        "primary": {"max_tokens": 16, "price": PRICE, "timeout_s": 1.0, "api": api, "fallbacks": ["backup"],
                    **primary},
        "backup": {"model": "openai/gpt-4o-mini", "api_base": stub, "max_tokens": 16, "price": PRICE, "api": api},
    }
    policy = {"name": "direct", "version": 1, "probe": "default", "strategies": strategies,
              "tiers": {"easy": "primary", "normal": "primary", "hard": "primary"},
              "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.9}}}
    path = folder / f"{api}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(out.get("error"), str):  # the client's own wording; kind and status are compared
            out["error"] = "<error>"
        return out
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _run(router: Router, rid: str, *, stream: bool, sync: bool, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    """(receipt, answer text or the error kind) of one request."""
    async def arun() -> tuple[dict[str, Any], Any]:
        try:
            out = await router.acompletion(messages=ASK, request_id=rid, stream=stream, **kwargs)
        except TriageProviderError as exc:
            return {"attempts": exc.attempts}, ("error", exc.kind, exc.status_code)
        if stream:
            text = "".join([c.choices[0].delta.content or "" async for c in out if c.choices])
            return out.triage, text
        return out._hidden_params["triage"], out.choices[0].message

    if not sync:
        return asyncio.run(arun())
    try:
        out = router.completion(messages=ASK, request_id=rid, stream=stream, **kwargs)
    except TriageProviderError as exc:
        return {"attempts": exc.attempts}, ("error", exc.kind, exc.status_code)
    if stream:
        return out.triage, "".join(c.choices[0].delta.content or "" for c in out if c.choices)
    return out._hidden_params["triage"], out.choices[0].message


def _both(tmp_path: Path, stub: str, primary: dict[str, Any], *, stream: bool, sync: bool,
          **kwargs: Any) -> list[tuple[Any, Any, Any]]:
    """The same request through litellm and through the direct path: (receipt, answer, record) each."""
    out = []
    for api in ("litellm", "openai"):
        router = Router.from_file(_policy(tmp_path, api, primary, stub), ledger=str(tmp_path / f"{api}.sqlite"))
        try:
            rid = f"{api}-{stream}-{sync}"
            receipt, answer = _run(router, rid, stream=stream, sync=sync, **kwargs)
            record = router.ledger.store.get(rid)
            assert record is not None, f"no ledger record on the {api} path"
            out.append((_strip(receipt), answer, _strip(record.model_dump(mode="json"))))
        finally:
            router.close()
    return out


MODES = [(False, True), (True, True), (False, False), (True, False)]  # (stream, sync)


@pytest.mark.parametrize("stream,sync", MODES)
def test_an_answer_gives_the_same_receipt_and_record(tmp_path: Path, stub: str, faults: FaultUpstream,
                                                     stream: bool, sync: bool) -> None:
    faults.agents.clear()
    (lite, direct) = _both(tmp_path, stub, {"model": "openai/gpt-4o-mini", "api_base": faults.base},
                           stream=stream, sync=sync, temperature=0.0)
    assert lite == direct
    receipt = direct[0]
    assert receipt["prompt_tokens"] == 7 and receipt["completion_tokens"] == 2
    assert receipt["cost_usd"] == pytest.approx((7 * 1.0 + 2 * 3.0) / 1e6)  # Triage's price table
    # One call each: litellm's (the OpenAI SDK's agent), then the direct path's (Triage's own).
    assert len(faults.agents) == 2 and "OpenAI" in faults.agents[0] and faults.agents[1].startswith("triage-router/")


@pytest.mark.parametrize("fault,kind", [("fault-500", "server"), ("fault-429", "rate_limit"),
                                        ("fault-hang", "timeout")])
@pytest.mark.parametrize("stream,sync", [(False, True), (True, False)])
def test_an_upstream_error_falls_back_alike(tmp_path: Path, stub: str, faults: FaultUpstream, fault: str,
                                            kind: str, stream: bool, sync: bool) -> None:
    (lite, direct) = _both(tmp_path, stub, {"model": f"openai/{fault}", "api_base": faults.base},
                           stream=stream, sync=sync)
    assert lite == direct
    attempts = direct[0]["attempts"]
    assert [a["strategy"] for a in attempts] == ["primary", "backup"]
    assert attempts[0]["error_kind"] == kind and attempts[0]["error"] == "<error>"
    assert attempts[1]["error"] is None and direct[0]["strategy"] == "backup"


def test_a_refused_connection_falls_back_alike(tmp_path: Path, stub: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    (lite, direct) = _both(tmp_path, stub, {"model": "openai/gpt-4o-mini", "api_base": dead},
                           stream=False, sync=False)
    assert lite == direct
    assert direct[0]["attempts"][0]["error_kind"] == "connection"


def test_a_failed_request_without_fallback_fails_alike(tmp_path: Path, stub: str, faults: FaultUpstream) -> None:
    (lite, direct) = _both(tmp_path, stub, {"model": "openai/fault-429", "api_base": faults.base, "fallbacks": []},
                           stream=False, sync=True)
    assert lite == direct
    assert direct[1] == ("error", "rate_limit", 429)
    assert direct[2]["error"] == "<error>"


def test_deployment_failover_is_the_same(tmp_path: Path, stub: str, faults: FaultUpstream) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    primary = {"model": "openai/gpt-4o-mini", "deployments": [{"api_base": dead, "weight": 1e6},
                                                              {"api_base": faults.base, "weight": 1e-6}]}
    (lite, direct) = _both(tmp_path, stub, primary, stream=True, sync=True)
    assert lite == direct
    attempts = direct[0]["attempts"]
    assert [(a["strategy"], a["error_kind"]) for a in attempts] == [("primary", "connection"), ("primary", None)]


@pytest.mark.parametrize("sync", [True, False])
def test_a_stream_without_usage_is_estimated_alike(tmp_path: Path, stub: str, faults: FaultUpstream,
                                                   sync: bool) -> None:
    (lite, direct) = _both(tmp_path, stub, {"model": "openai/nousage", "api_base": faults.base},
                           stream=True, sync=sync)
    assert lite == direct
    assert direct[1] == "red"
    # No usage chunk came: both paths count with litellm's token counter (prompt and streamed text).
    first = direct[0]["attempts"][0]
    assert first["prompt_tokens"] and first["prompt_tokens"] > 0 and first["completion_tokens"] == 1


def _unmetered(receipt: dict[str, Any]) -> Any:
    """The receipt without what the scripted upstream varies per request (prompt_tokens = 10 + n)."""
    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k not in ("prompt_tokens", "cost_usd")}
        return [drop(v) for v in value] if isinstance(value, list) else value
    return drop(_strip(receipt))


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_come_back_alike(tmp_path: Path, stub: str, scripted: ScriptedUpstream, stream: bool) -> None:
    tools = [{"type": "function", "function": {"name": "lookup_price", "parameters": {"type": "object"}}}]
    choice = {"type": "function", "function": {"name": "Invoice"}}
    bodies = []
    results = []
    for api in ("litellm", "openai"):
        router = Router.from_file(_policy(tmp_path, api, {"model": "openai/gpt-4o-mini", "api_base": scripted.base},
                                          stub), ledger=str(tmp_path / f"tools-{api}.sqlite"))
        try:
            out = router.completion(messages=ASK, tools=tools, tool_choice=choice, stream=stream, request_id=api)
            if stream:
                chunks = list(out)
                calls = [tc.function.arguments for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
                results.append(("".join(calls), _unmetered(out.triage)))
            else:
                call = out.choices[0].message.tool_calls[0]
                results.append((call.function.name, call.function.arguments, out.choices[0].finish_reason,
                                _unmetered(out._hidden_params["triage"])))
            bodies.append(scripted.requests[-1])
        finally:
            router.close()
    # The same body reached the upstream (the allowlisted fields, the model without its prefix) ...
    assert bodies[0] == bodies[1] and bodies[1]["model"] == "gpt-4o-mini"
    # ... and the same answer and receipt came back.
    assert results[0] == results[1]
    assert "widget" in json.dumps(results[1])


def test_the_path_is_chosen_per_strategy(tmp_path: Path, stub: str) -> None:
    def strategy(**fields: Any) -> Any:
        policy = {"name": "p", "version": 1, "probe": "default", "strategies": {"s": fields},
                  "tiers": {"easy": "s", "normal": "s", "hard": "s"},
                  "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.9}}}
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(policy))
        return load_policy(path).strategies["s"]

    assert uses_direct(strategy(model="openai/m", api_base=stub))
    assert uses_direct(strategy(model="hosted_vllm/m", api_base=stub, api="openai"))
    assert not uses_direct(strategy(model="openai/m", api_base=stub, api="litellm"))  # forced
    assert not uses_direct(strategy(model="openai/gpt-4o-mini"))  # the provider's own endpoint
    assert not uses_direct(strategy(model="hosted_vllm/m", api_base=stub))  # litellm maps it
    assert not uses_direct(strategy(model="local/smollm2-135m"))
    assert not uses_direct(strategy(model="openai/m", api_base=stub, extra={"drop_params": True}))  # litellm's option
    with pytest.raises((ConfigError, ValueError), match="OpenAI-compatible server: set api_base"):
        strategy(model="openai/m", api="openai")


def test_async_calls_share_one_pooled_session_that_closes_with_its_loop(
        faults: FaultUpstream, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder) -> None:
    """One aiohttp session per loop, reused by every call on it; ``asyncio.run`` closes it as the loop
    ends (no "Unclosed client session" error from aiohttp when the session is collected). The loopback
    fault server stands in for the upstream: what is tested is Triage's client pool, not an answer."""
    import gc

    from triage.router.providers import http_clients, openai_direct

    sessions, loops = [], []

    async def calls() -> list[str]:
        loops.append(asyncio.get_running_loop())
        out = []
        for stream in (False, True, False):
            answer = await openai_direct.acompletion(model="openai/gpt-4o-mini", messages=ASK, api_base=faults.base,
                                                     api_key="sk-test", timeout=5.0, stream=stream)
            if stream:
                out.append("".join([c.choices[0].delta.content or "" async for c in answer if c.choices]))
            else:
                out.append(answer.choices[0].message.content)
            sessions.append(await http_clients.async_session())
        return out

    for _ in range(2):
        assert asyncio.run(calls()) == ["red", "red", "red"]
    assert len({id(s) for s in sessions[:3]}) == 1 and sessions[0] is not sessions[3]  # per loop
    assert all(s.closed for s in sessions)
    assert not [lp for lp in loops if lp in http_clients._async_sessions]  # entries gone, not only closed
    del sessions[:]
    gc.collect()
    assert "Unclosed" not in caplog.text
    assert not [w for w in recwarn if "Unclosed client session" in str(w.message)]


def test_an_async_stream_left_early_frees_its_connection(faults: FaultUpstream,
                                                          recwarn: pytest.WarningsRecorder) -> None:
    """A caller that stops reading a stream (a client gone mid-answer) closes it without error, and the
    pool keeps serving the next calls on the loop (the loopback fault server stands in for the upstream,
    as above)."""
    import gc

    from triage.router.providers import openai_direct

    async def calls() -> list[str]:
        out = []
        for _ in range(3):
            stream = await openai_direct.acompletion(model="openai/gpt-4o-mini", messages=ASK, api_base=faults.base,
                                                     api_key="sk-test", timeout=5.0, stream=True)
            first = await stream.__anext__()
            out.append(first.choices[0].delta.content)
            await stream.aclose()
        answer = await openai_direct.acompletion(model="openai/gpt-4o-mini", messages=ASK, api_base=faults.base,
                                                 api_key="sk-test", timeout=5.0)
        out.append(answer.choices[0].message.content)
        return out

    assert asyncio.run(calls(), debug=True) == ["re", "re", "re", "red"]  # debug: aiohttp warns of unclosed responses
    gc.collect()
    assert not [w for w in recwarn if "Unclosed" in str(w.message)]
