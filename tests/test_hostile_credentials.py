"""Hostile credentials: no caller can send the upstream key elsewhere, and no upstream error can
echo it back.

The real sidecar (`triage serve` on loopback) calls fault-injecting upstreams: one that always
fails with 503 (so litellm would move on to any ``fallbacks`` a caller slipped in), one that fails
quoting the key it was sent, as real providers do (``Incorrect API key provided: <key>``). An
"attacker" server on loopback counts every request it gets and would answer 200 with its own text.
The upstream key deliberately has no known token shape (no ``sk-``), so only scrubbing the exact
configured value can keep it out of bodies, logs and the ledger.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from triage.router.core import Router
from triage.router.core.fields import CHAT_FIELDS, UnsupportedFieldError
from triage.errors import ConfigError
from tests.support.hostile import count_secrets
from tests.support.sidecar import (
    CLIENT_KEY,
    REPO,
    FailingUpstream,
    SidecarProcess,
    free_port,
)

UPSTREAM_SECRET = "upstream-provider-Qx7T2mZ9vL4kWd83"  # no token shape: only exact-value scrubbing finds it
DEFAULT_SECRET = "ambient-openai-key-R5n8Pw2Kc7"  # stands for OPENAI_API_KEY, which litellm reads by default
KEY_ENV = "HOSTILE_UPSTREAM_KEY"
MSG = [{"role": "user", "content": "What is 2 + 2?"}]
SECRETS = (UPSTREAM_SECRET, DEFAULT_SECRET)


class Recorder:
    """A loopback HTTP server that records each request (path, Authorization, body) and answers via
    ``reply(handler, body) -> (status, json)``."""

    def __init__(self, reply: Any) -> None:
        self.hits: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                outer.hits.append({"path": self.path, "authorization": self.headers.get("authorization"),
                                   "body": body})
                status, doc = reply(self, body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _attacker_reply(_: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"id": "chatcmpl-evil", "object": "chat.completion", "created": 0, "model": body.get("model", "x"),
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "attacker's answer"}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def _echo_reply(handler: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Fail quoting the key received; ``echo-bad`` as a malformed-request 400, otherwise a 401."""
    key = (handler.headers.get("authorization") or "").removeprefix("Bearer ")
    if str(body.get("model", "")).endswith("echo-bad"):
        return 400, {"error": {"message": f"Unrecognized request argument; key in use: {key}",
                               "type": "invalid_request_error", "code": None}}
    return 401, {"error": {"message": f"Incorrect API key provided: {key}. You can find your API key in "
                                      "your account settings.", "type": "invalid_request_error",
                           "code": "invalid_api_key"}}


def _policy(folder: Path, name: str, strategies: dict[str, Any], **more: Any) -> Path:
    first = next(iter(strategies))
    doc = {"name": name, "probe": "default", "strategies": strategies,
           "tiers": {"easy": first, "normal": first, "hard": first}, **more}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(doc))
    return path


def _remote(model: str, base: str, env: str | None = KEY_ENV) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": model, "api_base": base, "max_tokens": 8, "timeout_s": 5.0}
    if env is not None:
        spec["api_key_env"] = env
    return spec


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("hostile-credentials")
    failing, attacker, echo = FailingUpstream("5xx"), Recorder(_attacker_reply), Recorder(_echo_reply)
    policies = [
        _policy(folder, "hijack", {"primary": _remote("openai/hijack-target", failing.base)}),
        _policy(folder, "echo", {"primary": _remote("openai/echo-auth", echo.base),
                                 "bad": _remote("openai/echo-bad", echo.base)}),
    ]
    proc = SidecarProcess(folder, policies, env={KEY_ENV: UPSTREAM_SECRET, "OPENAI_API_KEY": DEFAULT_SECRET})
    proc.failing, proc.attacker, proc.echo = failing, attacker, echo
    yield proc
    proc.stop()
    for server in (failing, attacker, echo):
        server.close()


@pytest.fixture(scope="module")
def http(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=60, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as c:
        yield c


def _ledger_rows(ledger: Path) -> list[str]:
    """Every row of every table of the SQLite ledger, as text (what an export would carry)."""
    conn = sqlite3.connect(str(ledger))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [json.dumps(row, default=str) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"')]
    finally:
        conn.close()


# -- 1. a caller cannot send the upstream key anywhere -------------------------------------------------

HOSTILE_FIELDS: dict[str, Any] = {
    "fallbacks": lambda a: [{"model": "openai/gpt-4o", "api_base": a}],
    "context_window_fallback_dict": lambda a: {"openai/hijack-target": "openai/gpt-4o"},
    "api_base": lambda a: a,
    "base_url": lambda a: a,
    "api_key": lambda a: "caller-chosen-key",
    "extra_headers": lambda a: {"x-forwarded-host": "attacker"},
    "headers": lambda a: {"authorization": "Bearer x"},
    "extra_body": lambda a: {"api_base": a},
    "custom_llm_provider": lambda a: "openai",
    "mock_response": lambda a: "fake answer",
    "litellm_params": lambda a: {"api_base": a},
    "model_list": lambda a: [{"model_name": "x", "litellm_params": {"api_base": a}}],
    "service_tier": lambda a: "priority",
}
SHAPES = {  # routed, pass-through (a concrete model a strategy uses), streaming
    "routed": {"model": "triage/hijack"},
    "passthrough": {"model": "openai/hijack-target"},
    "streaming": {"model": "triage/hijack", "stream": True},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_fields_outside_the_allowlist_are_400_and_reach_no_one(http, stack, hostile, shape):
    failing_before = stack.failing.calls
    statuses, wrong = [], []
    for field, value in HOSTILE_FIELDS.items():
        body = {**SHAPES[shape], "messages": MSG, "max_tokens": 4, field: value(stack.attacker.base)}
        r = http.post("/v1/chat/completions", json=body)
        statuses.append(r.status_code)
        err = r.json().get("error") or {}
        if (r.status_code, err.get("code"), err.get("param")) != (400, "unsupported_field", field):
            wrong.append((field, r.status_code, r.text[:200]))
    # a tool type that makes litellm act on the caller's behalf (its MCP gateway)
    r = http.post("/v1/chat/completions", json={**SHAPES[shape], "messages": MSG, "tools": [
        {"type": "mcp", "server_url": "litellm_proxy", "server_label": "x"}]})
    statuses.append(r.status_code)
    if (r.status_code, r.json()["error"]["param"]) != (400, "tools"):
        wrong.append(("tools", r.status_code, r.text[:200]))
    leaked = count_secrets([json.dumps(h) for h in stack.attacker.hits], SECRETS)
    case = hostile.case(f"exfiltration-{shape}", statuses=statuses, secrets_leaked=leaked,
                        attacker_hits=len(stack.attacker.hits), upstream_calls=stack.failing.calls - failing_before)
    assert not wrong, wrong
    assert case.detail["attacker_hits"] == 0 and case.secrets_leaked == 0
    assert case.detail["upstream_calls"] == 0  # refused before routing: nothing was called
    assert case.count_5xx == 0


def test_allowed_fields_still_reach_the_upstream(http, stack, hostile):
    """The same request without the hostile field goes to the configured upstream (502: it fails),
    with the configured key, and still nothing reaches the attacker."""
    before = stack.failing.calls
    body = {"model": "triage/hijack", "messages": MSG, "max_tokens": 4, "temperature": 0.5, "seed": 3,
            "user": "u1", "store": True, "metadata": {"a": "b"}}
    r = http.post("/v1/chat/completions", json=body)
    case = hostile.case("allowed-fields", statuses=[r.status_code], secrets_leaked=count_secrets([r.text], SECRETS),
                        attacker_hits=len(stack.attacker.hits))
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_server_error", r.text
    assert stack.failing.calls == before + 1
    assert case.detail["attacker_hits"] == 0 and case.secrets_leaked == 0


# -- 2. an upstream that echoes the key: not in the body, the ledger or the log -------------------------


@pytest.mark.parametrize("model, stream, status, code", [
    ("triage/echo", False, 502, "upstream_auth_failed"),
    ("triage/echo", True, 502, "upstream_auth_failed"),
    ("openai/echo-auth", False, 502, "upstream_auth_failed"),
    ("openai/echo-bad", False, 400, "upstream_rejected_request"),
])
def test_an_upstream_echoing_the_key_leaks_it_nowhere(http, stack, hostile, model, stream, status, code):
    hits = len(stack.echo.hits)
    r = http.post("/v1/chat/completions", json={"model": model, "messages": MSG, "stream": stream})
    assert len(stack.echo.hits) == hits + 1 and stack.echo.hits[-1]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    rid = r.headers["x-triage-request-id"]
    rows = [row for row in _ledger_rows(stack.ledger) if rid in row]
    log = stack.log_text()
    leaked = count_secrets([r.text, *rows, log], SECRETS)
    case = hostile.case(f"key-echo-{model}-{'stream' if stream else 'json'}", statuses=[r.status_code],
                        secrets_leaked=leaked, ledger_rows=len(rows))
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (status, code), r.text
    assert case.secrets_leaked == 0
    assert rid in err["message"]  # the generic message points at the ledger record
    if code == "upstream_auth_failed":
        assert "Incorrect API key" not in r.text  # the upstream's own text stays out of the body
    else:
        assert "[redacted]" in err["message"]  # a malformed request keeps its reason, scrubbed
    assert case.detail["ledger_rows"] >= 1  # the failure is recorded (scrubbed), not dropped
    errors = [row for row in rows if "[redacted]" in row]
    assert errors, rows  # the upstream text was stored, with the key replaced


def test_a_self_hosted_base_without_api_key_env_gets_no_default_key(tmp_path, hostile, monkeypatch):
    """litellm would send OPENAI_API_KEY to any openai/ api_base; a strategy without api_key_env
    sends a placeholder instead."""
    echo = Recorder(_echo_reply)
    monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_SECRET)
    try:
        router = Router.from_file(_policy(tmp_path, "selfhosted", {"primary": _remote("openai/echo-auth", echo.base,
                                                                                      env=None)}))
        with pytest.raises(Exception) as info:
            router.completion(messages=MSG)
    finally:
        echo.close()
    sent = [h["authorization"] for h in echo.hits]
    case = hostile.case("no-default-key-to-api-base", secrets_leaked=count_secrets(sent + [str(info.value)], SECRETS),
                        upstream_calls=len(sent))
    assert case.detail["upstream_calls"] == 1 and case.secrets_leaked == 0


# -- 3. an unset api_key_env stops the start -----------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_unset_api_key_env_fails_the_sidecar_start(tmp_path, hostile, workers):
    path = _policy(tmp_path, "unset", {"primary": _remote("openai/x", "http://127.0.0.1:9/v1",
                                                          env="TRIAGE_TEST_NEVER_SET_KEY")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SIDECAR_")}
    env.pop("TRIAGE_TEST_NEVER_SET_KEY", None)
    env["OPENAI_API_KEY"] = DEFAULT_SECRET  # what litellm would have used instead
    done = subprocess.run([sys.executable, "-m", "triage.router.cli.main", "serve", "--policy", str(path),
                           "--port", str(free_port()), "--workers", str(workers),
                           "--ledger", str(tmp_path / "l.sqlite")],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    case = hostile.case(f"unset-api-key-env-workers-{workers}", secrets_leaked=count_secrets([done.stderr], SECRETS),
                        exit_code=done.returncode)
    assert case.detail["exit_code"] == 2, done.stderr
    assert len(lines) == 1 and "TRIAGE_TEST_NEVER_SET_KEY" in lines[0], done.stderr
    assert case.secrets_leaked == 0


def test_unset_api_key_env_fails_router_from_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TRIAGE_TEST_NEVER_SET_KEY", raising=False)
    path = _policy(tmp_path, "unset", {"primary": _remote("openai/x", "http://127.0.0.1:9/v1",
                                                          env="TRIAGE_TEST_NEVER_SET_KEY")})
    with pytest.raises(ConfigError, match="TRIAGE_TEST_NEVER_SET_KEY"):
        Router.from_file(path)
    monkeypatch.setenv("TRIAGE_TEST_NEVER_SET_KEY", "")  # empty is unset too
    with pytest.raises(ConfigError, match="TRIAGE_TEST_NEVER_SET_KEY"):
        Router.from_file(path)


# -- 4. the SDK: caller kwargs cannot replace the strategy's credentials or destination ----------------


@pytest.fixture()
def sdk_router(tmp_path, monkeypatch) -> Iterator[Any]:
    failing, attacker = FailingUpstream("5xx"), Recorder(_attacker_reply)
    monkeypatch.setenv(KEY_ENV, UPSTREAM_SECRET)
    router = Router.from_file(_policy(tmp_path, "sdk", {"primary": _remote("openai/hijack-target", failing.base)}))
    router.failing, router.attacker = failing, attacker
    yield router
    failing.close()
    attacker.close()


def test_sdk_caller_kwargs_cannot_override_credentials(sdk_router, hostile):
    attacker = sdk_router.attacker.base
    wrong = []
    for field, value in HOSTILE_FIELDS.items():
        for stream in (False, True):
            try:
                sdk_router.completion(messages=MSG, stream=stream, **{field: value(attacker)})
                wrong.append((field, stream, "no error"))
            except UnsupportedFieldError as exc:
                if exc.field != field or field not in str(exc):
                    wrong.append((field, stream, str(exc)))
    hits = sdk_router.attacker.hits
    case = hostile.case("sdk-kwargs", secrets_leaked=count_secrets([json.dumps(hits)], SECRETS),
                        attacker_hits=len(hits), upstream_calls=sdk_router.failing.calls)
    assert not wrong, wrong
    assert case.detail["attacker_hits"] == 0 and case.detail["upstream_calls"] == 0 and case.secrets_leaked == 0


def test_sdk_provider_error_carries_no_secret(tmp_path, monkeypatch, hostile):
    echo = Recorder(_echo_reply)
    monkeypatch.setenv(KEY_ENV, UPSTREAM_SECRET)
    try:
        router = Router.from_file(_policy(tmp_path, "sdkecho", {"primary": _remote("openai/echo-auth", echo.base)}))
        with pytest.raises(Exception) as info:
            router.completion(messages=MSG)
    finally:
        echo.close()
    err = info.value
    texts = [str(err), json.dumps(getattr(err, "attempts", []), default=str)]
    case = hostile.case("sdk-key-echo", secrets_leaked=count_secrets(texts, SECRETS), upstream_calls=len(echo.hits))
    assert case.detail["upstream_calls"] == 1 and echo.hits[0]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert case.secrets_leaked == 0 and "[redacted]" in str(err)


def test_the_allowlist_is_the_documented_one():
    doc = (REPO / "docs" / "sidecar.md").read_text()
    missing = sorted(f for f in CHAT_FIELDS if f"`{f}`" not in doc)
    assert not missing, f"docs/sidecar.md does not list {missing}"


def test_log_processor_scrubs_configured_secret_values(hostile, monkeypatch):
    """The structlog processor every Triage log line passes through replaces configured values in
    any field (an error text quoting the key), not only fields named like credentials."""
    from triage.policies.loader import policy_from_dict
    from triage.router.core.preflight import check_policy_credentials
    from triage.logging import _redact_secrets

    monkeypatch.setenv(KEY_ENV, UPSTREAM_SECRET)
    check_policy_credentials(policy_from_dict({
        "name": "logcheck", "probe": "default", "strategies": {"p": _remote("openai/x", "http://127.0.0.1:9/v1")},
        "tiers": {"easy": "p", "normal": "p", "hard": "p"}}))
    event = _redact_secrets(None, "error", {"event": "upstream_failed", "error": f"Incorrect API key provided: "
                                            f"{UPSTREAM_SECRET}", "attempts": [{"error": UPSTREAM_SECRET}]})
    case = hostile.case("log-processor", secrets_leaked=count_secrets([json.dumps(event)], SECRETS))
    assert case.secrets_leaked == 0 and event["event"] == "upstream_failed"
