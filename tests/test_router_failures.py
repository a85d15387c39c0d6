"""Provider failures: a clear TriageProviderError, or the policy's fallback; nothing hangs.

The failing provider is a real HTTP server on loopback (stdlib ``http.server`` in a thread) that
answers like a broken OpenAI-compatible endpoint: HTTP 500, a 401 for a bad key, or no answer for
longer than the strategy's timeout. It stands in for a failing provider -- there is no other way to
make a real provider fail on demand. Triage reaches it through litellm's ``openai/`` provider with
``api_base``, exactly as it would reach a real one. The fallback that answers is the real local model.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from triage.router.core import Router, TriageProviderError

FAKE_KEY = "sk-test-triage-not-a-real-key-123456"
MESSAGES = [{"role": "user", "content": "What is 3 + 4?"}]


class _FailingProvider(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        mode = self.path.strip("/").split("/")[0]
        with self.lock:
            self.hits[mode] = self.hits.get(mode, 0) + 1
        if mode == "slow":
            time.sleep(8)  # far beyond the strategy's timeout
            status, body = 200, {"error": {"message": "too late"}}
        elif mode == "badkey":
            status, body = 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}}
        else:
            status, body = 500, {"error": {"message": "upstream exploded", "type": "server_error"}}
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            pass


@pytest.fixture(scope="module")
def failing_provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingProvider)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", autouse=True)
def _warm_litellm(failing_provider, tmp_path_factory):
    """litellm imports parts of itself on its first call (seconds on a busy machine); do that once
    here so the timings below measure Triage's timeouts, not Python imports."""
    import os

    os.environ.setdefault("TRIAGE_TEST_UPSTREAM_KEY", FAKE_KEY)
    router = Router.from_file(make_policy(tmp_path_factory.mktemp("warm"), failing_provider, "error500", fallback=False))
    with pytest.raises(TriageProviderError):
        router.completion(messages=MESSAGES)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("TRIAGE_TEST_UPSTREAM_KEY", FAKE_KEY)
    _FailingProvider.hits.clear()


def make_policy(tmp_path: Path, base: str, mode: str, *, fallback: bool, timeout_s: float = 1.5) -> Path:
    strategies = {
        "remote": {"model": "openai/test-model", "api_base": f"{base}/{mode}/v1",
                   "api_key_env": "TRIAGE_TEST_UPSTREAM_KEY", "max_tokens": 8, "timeout_s": timeout_s,
                   "temperature": 0.0},
    }
    raw = {"name": f"fail-{mode}", "probe": "default", "strategies": strategies,
           "tiers": {"easy": "remote", "normal": "remote", "hard": "remote"}}
    if fallback:
        strategies["local_backup"] = {"model": "local/smollm2-135m", "max_tokens": 8, "temperature": 0.0}
        raw["fallback"] = "local_backup"
    path = tmp_path / f"{mode}-{fallback}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("mode", "kind", "status"), [("error500", "server", 500), ("badkey", "auth", 401),
                                                      ("slow", "timeout", None)])
def test_failure_without_fallback_raises_a_clear_error_quickly(tmp_path, failing_provider, mode, kind, status):
    router = Router.from_file(make_policy(tmp_path, failing_provider, mode, fallback=False))
    router.warm()
    started = time.perf_counter()
    with pytest.raises(TriageProviderError) as info:
        router.completion(messages=MESSAGES)
    elapsed = time.perf_counter() - started
    err = info.value
    assert err.kind == kind and err.status_code == status
    assert err.strategy == "remote" and err.model == "openai/test-model"
    assert "no fallback" in str(err) and "strategy 'remote'" in str(err)
    assert FAKE_KEY not in str(err) and all(FAKE_KEY not in json.dumps(a) for a in err.attempts)
    assert len(err.attempts) == 1 and err.attempts[0]["error"]
    # no hidden client retries: the provider saw exactly one request; a timeout stops at the budget
    assert _FailingProvider.hits.get(mode) == 1
    assert elapsed < 6.0, f"took {elapsed:.1f}s"  # the slow provider would have held us 8 s


def test_async_timeout_raises_without_hanging(tmp_path, failing_provider):
    router = Router.from_file(make_policy(tmp_path, failing_provider, "slow", fallback=False, timeout_s=1.0))
    router.warm()

    async def go():
        started = time.perf_counter()
        with pytest.raises(TriageProviderError) as info:
            await router.acompletion(messages=MESSAGES)
        return time.perf_counter() - started, info.value

    elapsed, err = asyncio.run(go())
    assert err.kind == "timeout" and elapsed < 6.0


def test_caller_timeout_only_shortens(tmp_path, failing_provider):
    router = Router.from_file(make_policy(tmp_path, failing_provider, "slow", fallback=False, timeout_s=30))
    router.warm()
    started = time.perf_counter()
    with pytest.raises(TriageProviderError, match="timeout"):
        router.completion(messages=MESSAGES, timeout=1.0)
    assert time.perf_counter() - started < 6.0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["error500", "slow", "badkey"])
def test_failure_falls_back_to_the_policy_fallback(tmp_path, failing_provider, mode):
    ledger = tmp_path / "ledger.sqlite"
    with Router.from_file(make_policy(tmp_path, failing_provider, mode, fallback=True), ledger=str(ledger)) as router:
        response = router.completion(messages=MESSAGES)
        info = response._hidden_params["triage"]
        assert [a["reason"] for a in info["attempts"]] == ["primary", "fallback"]
        assert info["attempts"][0]["error"] and info["attempts"][0]["error_kind"] in ("server", "timeout", "auth")
        assert info["fell_back"] and info["strategy"] == "local_backup" and info["model"] == "local/smollm2-135m"
        assert info["decision"]["strategy"] == "remote"  # the decision is kept as it was made
        assert response.choices[0].message.content
        assert response.usage.completion_tokens <= 8
        assert _FailingProvider.hits.get(mode) == 1
        # the ledger holds both attempts
        record = router.ledger.store.get(info["request_id"])
        assert [a.kind for a in record.attempts] == ["primary", "fallback"]
        assert record.strategy == "local_backup" and record.attempts[0].error


@pytest.mark.slow
def test_streaming_falls_back_before_the_first_chunk(tmp_path, failing_provider):
    router = Router.from_file(make_policy(tmp_path, failing_provider, "error500", fallback=True))
    stream = router.completion(messages=MESSAGES, stream=True)
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text
    assert [a["reason"] for a in stream.triage["attempts"]] == ["primary", "fallback"]
    assert stream.triage["strategy"] == "local_backup"
