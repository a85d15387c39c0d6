"""Hostile client input against the real sidecar (`triage serve` on loopback): every case gets its
documented 4xx with an OpenAI-style JSON error and the right `code`, never a 5xx, and within a bounded
time. Raw-bytes cases go through a raw socket (what a client library would refuse to send); the
rest through httpx with ``content=bytes``. Each case is recorded in the hostile report.

Also: start-up refuses models no provider serves (exit 2, one line) and duplicate YAML keys;
``parse_since`` bounds; a refused connection classifies as ``connection``; the SDK's probe reads
lone surrogates instead of raising.
"""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.sidecar import (
    CLIENT_KEY,
    LOCAL_POLICY,
    REPO,
    FailingUpstream,
    SidecarProcess,
    free_port,
    write_policies,
)

pytestmark = pytest.mark.slow
READ_TIMEOUT_S = 2.0  # the sidecar's request_read_timeout_s in these tests
BOUND_S = 10.0  # every answer, the timed-out ones included, must come within this
CHAT = "/v1/chat/completions"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}


def _policy(folder: Path, name: str, model: str, **extra: object) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(json.dumps({"name": name, "probe": "default", "tiers": {t: "p" for t in ("easy", "normal", "hard")},
                             "strategies": {"p": {"model": model, "max_tokens": 8, **extra}}}))
    return p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-input")
    five_xx, hang = FailingUpstream("5xx"), FailingUpstream("hang")
    closed_port = free_port()  # nothing listens here: connections are refused
    refused = _policy(folder, "refused", "openai/refused", api_base=f"http://127.0.0.1:{closed_port}/v1",
                      api_key_env="TEST_UPSTREAM_KEY", timeout_s=5.0)
    proc = SidecarProcess(folder, [*write_policies(folder, five_xx, hang), refused],
                          extra={"request_read_timeout_s": READ_TIMEOUT_S, "models": ["nosuchprovider/*"]})
    yield proc
    proc.stop()
    five_xx.close()
    hang.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=BOUND_S, headers=AUTH) as c:
        yield c


def check_error(status: int, headers: dict[str, str], body: bytes, want: int, code: str) -> dict:
    assert status == want, body[:500]
    assert headers.get("content-type", "").startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    assert err["code"] == code, err
    assert len(headers["x-triage-request-id"]) == 32
    return err


def timed_post(http: httpx.Client, path: str, content: bytes, **kw) -> tuple[httpx.Response | None, int]:
    try:
        return http.post(path, content=content, **kw), 0
    except httpx.TimeoutException:
        return None, 1


# -- bodies json.loads accepts or chokes on --------------------------------------------------------

SURROGATE_CHAT = b'{"model": "triage/local", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
DEEP = b'{"model": "triage/local", "messages": [{"role": "user", "content": "x"}], "tools": ' + b"[" * 5000 + b"]" * 5000 + b"}"
NESTED_100 = b'{"model": "triage/local", "messages": [{"role": "user", "content": "x"}], "tools": ' + b"[" * 100 + b"]" * 100 + b"}"
HUGE_INT = b'{"model": "triage/local", "messages": [{"role": "user", "content": "x"}], "seed": ' + b"9" * 5000 + b"}"
BIG_INT = b'{"model": "triage/local", "messages": [{"role": "user", "content": "x"}], "seed": ' + b"9" * 30 + b"}"
NAN = b'{"model": "triage/local", "messages": [{"role": "user", "content": "x"}], "top_logprobs": NaN}'
BAD_UTF8 = b'{"model": "triage/local", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
UTF8_SURROGATE = b'{"model": "triage/local", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'


@pytest.mark.parametrize("name, path, content, status, code", [
    ("lone surrogate in content", CHAT, SURROGATE_CHAT, 400, "invalid_json"),
    ("lone surrogate, stream", CHAT, SURROGATE_CHAT[:-1] + b', "stream": true}', 400, "invalid_json"),
    ("lone surrogate in /v1/route", "/v1/route", SURROGATE_CHAT, 400, "invalid_json"),
    ("lone surrogate in a key", CHAT, SURROGATE_CHAT[:-1] + b', "\\udc00": 1}', 400, "invalid_json"),
    ("lone surrogate in feedback", "/v1/feedback", b'{"request_id": "\\ud83d", "score": 1}', 400, "invalid_json"),
    ("surrogate encoded as UTF-8 bytes", CHAT, UTF8_SURROGATE, 400, "invalid_json"),
    ("invalid UTF-8", CHAT, BAD_UTF8, 400, "invalid_json"),
    ("nesting past the parser's recursion limit", CHAT, DEEP, 400, "invalid_json"),
    ("nesting past 64 levels", CHAT, NESTED_100, 400, "invalid_json"),
    ("5000-digit integer", CHAT, HUGE_INT, 400, "invalid_json"),
    ("integer over 64 bits", CHAT, BIG_INT, 400, "invalid_json"),
    ("NaN literal", CHAT, NAN, 400, "invalid_json"),
])
def test_unreadable_json_is_400_invalid_json(http, hostile, name, path, content, status, code):
    r, hung = timed_post(http, path, content)
    case = hostile.case(name, statuses=[r.status_code] if r is not None else [], hangs=hung)
    assert case.hangs == 0 and case.count_5xx == 0
    check_error(r.status_code, dict(r.headers), r.content, status, code)


@pytest.mark.parametrize("name, content, param", [
    ("content part without a type", [{"text": "hi"}], "messages.0.content"),
    ("content part with an empty type", [{"type": "", "text": "hi"}], "messages.0.content"),
    ("text part without text", [{"type": "text"}], "messages.0.content"),
    ("user part of an unknown type", [{"type": "tool_result", "text": "hi"}], "messages.0"),
])
def test_malformed_content_parts_are_422(http, hostile, name, content, param):
    body = {"model": "triage/local", "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    r, hung = timed_post(http, CHAT, json.dumps(body).encode())
    case = hostile.case(name, statuses=[r.status_code] if r is not None else [], hangs=hung)
    assert case.hangs == 0 and case.count_5xx == 0
    err = check_error(r.status_code, dict(r.headers), r.content, 422, "invalid_value")
    assert err["param"] == param, err


@pytest.mark.parametrize("name, token", [
    ("decision token of 24 KB (under the 32 KB head cap)", "A" * 12_000 + "." + "B" * 12_000),
    ("decision token of dots only", "." * 4000),
    ("decision token with many parts", ".".join(["QUFB"] * 500)),
    ("decision token of base64 garbage", "eyJyaWQiOiJ4In0." + "A" * 43),
    ("decision token with latin-1 bytes", "\xe9\xe8.\xff"),
    ("empty decision token", ""),
])
def test_forged_decision_tokens_are_400_and_call_nothing(http, server, hostile, name, token):
    """The decision-token header (a /v1/route decision reused) is untrusted input: any value the
    server did not sign is a 400 ``invalid_decision_token`` before routing - linear in the header's
    length, nothing called or recorded (tests/test_decision_token.py has the signed-token cases)."""
    body = json.dumps({"model": "triage/local", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "What is 2 + 2?"}]}).encode()
    before = server.ledger_bytes()
    t0 = time.perf_counter()
    r, hung = timed_post(http, CHAT, body, headers={"x-triage-decision-token": token.encode("latin-1")})
    case = hostile.case(name, statuses=[r.status_code] if r is not None else [], hangs=hung)
    assert case.hangs == 0 and case.count_5xx == 0
    err = check_error(r.status_code, dict(r.headers), r.content, 400, "invalid_decision_token")
    assert err["param"] == "x-triage-decision-token"
    assert time.perf_counter() - t0 < BOUND_S
    assert server.ledger_bytes() == before


@pytest.mark.parametrize("since", ["99999999999999d", "9999999w", "0001-01-01T00:00:00+05:00"])
def test_since_out_of_range_is_400(http, hostile, since):
    r = http.get("/v1/ledger/summary", params={"since": since})
    case = hostile.case(f"summary since={since}", statuses=[r.status_code])
    assert case.count_5xx == 0
    check_error(r.status_code, dict(r.headers), r.content, 400, "invalid_summary_query")


def test_refused_upstream_connection_is_upstream_unreachable(http, hostile):
    r = http.post(CHAT, json={"model": "triage/refused", "messages": [{"role": "user", "content": "hi"}]})
    case = hostile.case("upstream connection refused", statuses=[r.status_code])
    assert case.count_5xx == 0  # 502 is the documented answer for an upstream the policy cannot reach
    check_error(r.status_code, dict(r.headers), r.content, 502, "upstream_unreachable")


def test_glob_admitted_model_without_a_provider_is_404(http, hostile):
    r = http.post(CHAT, json={"model": "nosuchprovider/x", "messages": [{"role": "user", "content": "hi"}]})
    case = hostile.case("glob-admitted model no provider serves", statuses=[r.status_code])
    assert case.count_5xx == 0
    check_error(r.status_code, dict(r.headers), r.content, 404, "model_not_found")


# -- raw sockets: oversized and half-sent requests --------------------------------------------------


def raw_exchange(port: int, chunks: list[bytes], *, gap_s: float = 0.01,
                 wait_s: float = BOUND_S) -> tuple[int | None, dict[str, str], bytes, float, bool]:
    """Send ``chunks`` (stopping early once the server answers), then read until the server closes.

    Returns (status, headers, body, seconds until closed, closed)."""
    t0 = time.monotonic()
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        for chunk in chunks:
            if select.select([s], [], [], gap_s)[0]:
                break  # the server has answered (and may close): stop sending, read what it said
            try:
                s.sendall(chunk)
            except OSError:
                break
        closed = False
        while time.monotonic() - t0 < wait_s:
            if not select.select([s], [], [], max(0.0, wait_s - (time.monotonic() - t0)))[0]:
                break
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not got:
                closed = True
                break
            data += got
    elapsed = time.monotonic() - t0
    if b"\r\n\r\n" not in data:
        return None, {}, data, elapsed, closed
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return int(lines[0].split()[1]), headers, body, elapsed, closed


def _head(path: str = CHAT, extra: str = "", length: int | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {CLIENT_KEY}\r\n" \
           "Content-Type: application/json\r\n" + extra
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode()


def test_a_1mb_authorization_header_is_431(server, hostile):
    big = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + b"a" * 1_000_000 + b"\r\n\r\n"
    status, headers, body, elapsed, closed = raw_exchange(server.port, [big[i:i + 8192] for i in range(0, len(big), 8192)])
    case = hostile.case("1 MB Authorization header", statuses=[status] if status else [],
                        hangs=int(not closed or elapsed > BOUND_S))
    assert case.hangs == 0 and case.count_5xx == 0
    check_error(status, headers, body, 431, "request_header_too_large")
    assert headers.get("connection") == "close"


def test_headers_under_the_cap_are_read_as_usual(server, hostile):
    # 20 KB of headers (under the 32 KiB default): read and answered by the app (an unknown key: 401)
    head = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + b"b" * 20_000 + b"\r\n\r\n"
    status, headers, body, _, _ = raw_exchange(server.port, [head[i:i + 4096] for i in range(0, len(head), 4096)])
    case = hostile.case("20 KB Authorization header", statuses=[status] if status else [])
    assert case.count_5xx == 0
    check_error(status, headers, body, 401, "invalid_api_key")


@pytest.mark.parametrize("name, chunks, code", [
    ("half-sent body (Content-Length)", [_head(length=100), b'{"model": "tri'], "request_timeout"),
    ("half-sent body (chunked)", [_head(extra="Transfer-Encoding: chunked\r\n"), b"9\r\n{\"model\":\r\n"], "request_timeout"),
    ("half-sent headers", [b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"], "request_timeout"),
])
def test_half_sent_requests_get_408_and_are_closed(server, hostile, name, chunks, code):
    status, headers, body, elapsed, closed = raw_exchange(server.port, chunks)
    case = hostile.case(name, statuses=[status] if status else [], hangs=int(not closed), seconds=round(elapsed, 2))
    assert case.hangs == 0 and case.count_5xx == 0
    check_error(status, headers, body, 408, code)
    assert READ_TIMEOUT_S - 0.5 <= elapsed <= READ_TIMEOUT_S + 5.0, elapsed


@pytest.mark.parametrize("name, data", [
    ("broken chunked framing", _head(extra="Transfer-Encoding: chunked\r\n") + b"a\r\n{\"model\":\r\n"),
    ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n"),
    ("header line without a colon", b"GET /v1/models HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"),
])
def test_malformed_http_is_a_json_400(server, hostile, name, data):
    status, headers, body, _, closed = raw_exchange(server.port, [data])
    case = hostile.case(name, statuses=[status] if status else [], hangs=int(not closed))
    assert case.hangs == 0 and case.count_5xx == 0
    check_error(status, headers, body, 400, "invalid_http")


def test_a_slow_but_steady_body_within_the_deadline_is_served(server, hostile):
    body = json.dumps({"model": "triage/local", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}).encode()
    chunks = [_head("/v1/route", length=len(body)), body[:20], body[20:]]
    status, _, out, _, _ = raw_exchange(server.port, chunks, gap_s=0.5, wait_s=BOUND_S)
    case = hostile.case("body sent in pieces within the deadline", statuses=[status] if status else [])
    assert case.count_5xx == 0
    assert status == 200, out[:300]


def test_the_sidecar_still_answers_after_the_hostile_cases(http, server):
    r = http.post("/v1/route", json={"model": "triage/local", "messages": [{"role": "user", "content": "2 + 2?"}]})
    assert r.status_code == 200, r.text
    assert "Traceback" not in server.log_text()


# -- the documentation lists what the sidecar answers -----------------------------------------------


def test_docs_list_every_error_code_of_these_cases():
    doc = (REPO / "docs" / "sidecar.md").read_text()
    for code in ("invalid_json", "invalid_value", "invalid_summary_query", "upstream_unreachable", "model_not_found",
                 "request_header_too_large", "request_timeout", "request_too_large", "invalid_http",
                 "invalid_decision_token"):
        assert f"`{code}`" in doc, code


# -- start-up: models no provider serves, duplicate keys --------------------------------------------


def serve(folder: Path, config: dict | str, *, policy: Path | None = None) -> subprocess.CompletedProcess[str]:
    cfg = folder / "sidecar.yaml"
    cfg.write_text(config if isinstance(config, str) else json.dumps(config))
    args = [sys.executable, "-m", "triage.router.cli.main", "serve", "--config", str(cfg), "--port", str(free_port())]
    return subprocess.run(args, check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**_env(), "HF_HUB_OFFLINE": "1"})


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SIDECAR_")}


@pytest.mark.parametrize("model, says", [
    ("nosuchprovider/x", "no provider serves 'nosuchprovider/x'"),
    ("local/does-not-exist", "unknown local model 'does-not-exist'"),
    ("token-routed/smollm2-135m+nope", "unknown local model 'nope'"),
])
def test_serve_refuses_a_policy_model_no_provider_serves(tmp_path, model, says):
    bad = _policy(tmp_path, "bad", model)
    done = serve(tmp_path, {"policies": [str(bad)], "ledger_url": str(tmp_path / "l.sqlite")})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "strategy 'p'" in lines[0], done.stderr


def test_serve_refuses_a_settings_model_no_provider_serves(tmp_path):
    done = serve(tmp_path, {"policies": [str(LOCAL_POLICY)], "models": ["nosuchprovider/y"],
                            "ledger_url": str(tmp_path / "l.sqlite")})
    assert done.returncode == 2 and "no provider serves 'nosuchprovider/y'" in done.stderr, done.stderr


def test_serve_refuses_duplicate_keys_in_its_settings(tmp_path):
    text = f"policies: [{LOCAL_POLICY}]\nport: 9000\nport: 9001\n"
    done = serve(tmp_path, text)
    assert done.returncode == 2, done.stderr
    assert "duplicate key 'port'" in done.stderr and "line 3" in done.stderr, done.stderr


def test_router_construction_refuses_unknown_models():
    from triage.policies.loader import policy_from_dict
    from triage.router.core.router import Router
    from triage.errors import TriageError

    for model, says in (("nosuchprovider/x", "no provider serves"), ("local/does-not-exist", "unknown local model")):
        policy = policy_from_dict({"name": "bad", "strategies": {"p": {"model": model}},
                                   "tiers": {"easy": "p", "normal": "p", "hard": "p"}})
        with pytest.raises(TriageError, match=says):
            Router(policy)


def test_policy_and_price_files_refuse_duplicate_keys(tmp_path):
    from triage.eval.prices.prices import load_prices
    from triage.policies.loader import load_policy
    from triage.errors import ConfigError

    text = LOCAL_POLICY.read_text()
    dup = tmp_path / "dup.yaml"
    dup.write_text(text.replace("tiers:\n", "tiers:\n  easy: standard\n", 1))  # `easy` twice under tiers
    with pytest.raises(ConfigError, match=r"dup.yaml:\d+: invalid YAML \(duplicate key 'easy'\)"):
        load_policy(dup)
    top = tmp_path / "top.yaml"
    top.write_text(text + "\nname: other\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_policy(top)
    merged = tmp_path / "merged.yaml"  # a << merge may still be overridden
    merged.write_text(text.replace("  terse:\n", "  base: &b {model: local/smollm2-135m, max_tokens: 8}\n"
                                   "  terse:\n    <<: *b\n", 1))
    assert load_policy(merged).strategies["terse"].max_tokens == 48
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  a: {input_per_mtok: 1, output_per_mtok: 2}\n  a: {input_per_mtok: 3, output_per_mtok: 4}\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_prices(prices)


# -- units: parse_since bounds, classify, the SDK's probe on lone surrogates -------------------------


def test_parse_since_bounds():
    from datetime import UTC, datetime, timedelta

    from triage.errors import TriageError
    from triage.router.ledger.report import parse_since

    now = datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("700000d", now).year < 200  # far back but representable
    for text in ("99999999999999d", "9999999999w", "1e9d", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(TriageError):
            parse_since(text, now)


def test_a_refused_connection_classifies_as_connection():
    from triage.policies.pricing import import_litellm
    from triage.router.core.calls import classify

    litellm = import_litellm()
    with pytest.raises(Exception) as info:
        litellm.completion(model="openai/x", api_base=f"http://127.0.0.1:{free_port()}/v1", api_key="k",
                           messages=[{"role": "user", "content": "hi"}], num_retries=0, max_retries=0, timeout=5)
    assert classify(info.value) == ("connection", None)


def test_the_sdk_routes_text_with_lone_surrogates():
    from triage.router.core.messages import normalize_messages
    from triage.router.core.router import Router

    msgs = [{"role": "user", "content": "hi \ud800 there"}, {"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]
    clean = normalize_messages(msgs)
    assert clean[0]["content"] == "hi \ufffd there" and clean[1]["content"][0]["text"] == "\ufffd"
    decision = Router.from_file(LOCAL_POLICY).route(msgs)
    assert decision.tier in ("easy", "normal", "hard")
    assert re.fullmatch(r"[a-z_]+", decision.strategy)
