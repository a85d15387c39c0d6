"""Every error path of the real sidecar (`triage serve` on loopback): OpenAI-style error JSON with the
right status, the x-triage-* headers on every response, never a 5xx for bad input, upstream failures
absorbed by the policy's fallback (the real local model answers) or reported as 502/504, and no key
or upstream credential in the responses, the log or the ledger."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.sidecar import (
    ALL_SECRETS,
    BROKE_KEY,
    CLIENT_KEY,
    LIMITED_KEY,
    OTHER_KEY,
    RESTRICTED_KEY,
    SPENDER_KEY,
    UPSTREAM_KEY,
    FailingUpstream,
    SidecarProcess,
    record_of,
    write_policies,
)

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sidecar-errors")
    five_xx, hang = FailingUpstream("5xx"), FailingUpstream("hang")
    proc = SidecarProcess(folder, write_policies(folder, five_xx, hang))
    proc.five_xx, proc.hang = five_xx, hang
    yield proc
    proc.stop()
    five_xx.close()
    hang.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as c:
        yield c


def check_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    assert len(r.headers["x-triage-request-id"]) == 32
    assert r.headers["x-triage-tier"] and r.headers["x-triage-strategy"]
    return err


@pytest.mark.parametrize("content, code", [
    (b'{"model": "triage/local", "messages": [', "invalid_json"),
    (b"not json at all", "invalid_json"),
    (b"[1, 2, 3]", "invalid_body"),
    (b'"a string"', "invalid_body"),
])
def test_malformed_json_is_400(http, content, code):
    check_error(http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"}),
                400, code)


@pytest.mark.parametrize("body, param", [
    ({"model": "triage/local", "messages": []}, "messages"),
    ({"model": "triage/local"}, "messages"),
    ({"messages": MSG}, "model"),
    ({"model": "triage/local", "messages": "hello"}, "messages"),
    ({"model": 42, "messages": MSG}, "model"),
    ({"model": "triage/local", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": "triage/local", "messages": [{"role": "user"}]}, "messages.0"),
    ({"model": "triage/local", "messages": MSG, "max_tokens": "lots"}, "max_tokens"),
    ({"model": "triage/local", "messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"model": "triage/local", "messages": MSG, "temperature": 7}, "temperature"),
    ({"model": "triage/local", "messages": MSG, "n": 3}, "n"),
    ({"model": "triage/local", "messages": MSG, "stream": "yes please"}, "stream"),
])
def test_wrong_shapes_are_422(http, body, param):
    check_error(http.post("/v1/chat/completions", json=body), 422, "invalid_value", param)


def test_refused_passthrough_field_is_400(http):
    body = {"model": "triage/local", "messages": MSG, "api_base": "http://attacker.example/v1"}
    check_error(http.post("/v1/chat/completions", json=body), 400, "unsupported_field", "api_base")


@pytest.mark.parametrize("model", ["gpt-nonexistent", "triage/no-such-policy", "openai/gpt-4o"])
def test_unknown_model_is_404(http, model):
    check_error(http.post("/v1/chat/completions", json={"model": model, "messages": MSG}), 404, "model_not_found",
                "model")


def test_body_over_the_limit_is_413(http):
    big = {"model": "triage/local", "messages": [{"role": "user", "content": "x" * 70_000}]}
    check_error(http.post("/v1/chat/completions", json=big), 413, "request_too_large")

    def chunks():  # no Content-Length: counted while it arrives
        yield b'{"model": "triage/local", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 2048
        yield b'"}]}'

    check_error(http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}),
                413, "request_too_large")


def test_unknown_path_and_wrong_method(http):
    check_error(http.get("/v1/nothing-here"), 404, "unknown_url")
    check_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_authentication_errors_are_401(server):
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for headers, code in [({}, "missing_api_key"), ({"authorization": "Bearer sk-wrong"}, "invalid_api_key"),
                              ({"authorization": f"Token {CLIENT_KEY}"}, "invalid_authorization")]:
            r = anon.post("/v1/chat/completions", json={"model": "triage/local", "messages": MSG}, headers=headers)
            err = check_error(r, 401, code)
            assert err["type"] == "authentication_error" and r.headers["www-authenticate"].startswith("Bearer")
        check_error(anon.get("/v1/models"), 401)
        assert anon.get("/healthz").status_code == 200  # probes stay open


def test_model_restricted_key_is_403(server):
    h = {"authorization": f"Bearer {RESTRICTED_KEY}"}
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "triage/priced", "messages": MSG}, headers=h)
    check_error(r, 403, "model_not_allowed")
    models = httpx.get(server.url + "/v1/models", headers=h).json()["data"]
    assert [m["id"] for m in models] == ["triage/local"]


def test_spent_budget_is_403(server):
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "triage/local", "messages": MSG},
                   headers={"authorization": f"Bearer {BROKE_KEY}"})
    assert check_error(r, 403, "budget_exceeded")["type"] == "permission_error"
    h = {"authorization": f"Bearer {SPENDER_KEY}"}
    first = httpx.post(server.url + "/v1/chat/completions", json={"model": "triage/priced", "messages": MSG,
                                                                  "max_tokens": 4}, headers=h, timeout=300)
    assert first.status_code == 200, first.text  # priced at 1000 USD/Mtok: this one call spends the budget
    second = httpx.post(server.url + "/v1/chat/completions", json={"model": "triage/priced", "messages": MSG},
                        headers=h)
    assert "spent" in check_error(second, 403, "budget_exceeded")["message"]


def test_rate_limit_is_429_with_retry_after(server):
    h = {"authorization": f"Bearer {LIMITED_KEY}"}
    statuses = []
    for _ in range(3):  # burst 2, then 0.2/s: the bad bodies are cheap but still count
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": "triage/local", "messages": []}, headers=h)
        statuses.append(r.status_code)
    assert statuses[:2] == [422, 422]
    err = check_error(r, 429, "rate_limit_exceeded")
    assert err["type"] == "rate_limit_error" and int(r.headers["retry-after"]) >= 1


def test_upstream_5xx_falls_back_to_the_local_model(http, server):
    calls = server.five_xx.calls
    r = http.post("/v1/chat/completions", json={"model": "triage/rescued", "messages": MSG, "max_tokens": 6})
    assert r.status_code == 200, r.text
    assert r.headers["x-triage-strategy"] == "rescue"
    assert r.json()["choices"][0]["message"]["content"].strip()
    assert server.five_xx.calls == calls + 1
    rec = record_of(server.ledger, r.headers["x-triage-request-id"])
    assert [a.kind for a in rec.attempts] == ["primary", "fallback"]
    assert rec.attempts[0].error and UPSTREAM_KEY not in rec.attempts[0].error
    assert rec.strategy == "rescue" and rec.tenant == "acme" and rec.api_key_id == "team-a"


def test_streaming_falls_back_before_the_first_chunk(http):
    body = {"model": "triage/rescued", "messages": MSG, "max_tokens": 6, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        text = r.read().decode()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-triage-strategy"] == "rescue"
    assert text.rstrip().endswith("data: [DONE]")


def test_upstream_5xx_without_fallback_is_502(http, server):
    for stream in (False, True):
        r = http.post("/v1/chat/completions", json={"model": "triage/down", "messages": MSG, "stream": stream})
        err = check_error(r, 502, "upstream_server_error")
        assert err["type"] == "upstream_error" and "no fallback" in err["message"]
        assert UPSTREAM_KEY not in r.text
        rec = record_of(server.ledger, r.headers["x-triage-request-id"])
        assert rec is not None and rec.error and UPSTREAM_KEY not in rec.error


def test_upstream_timeout_without_fallback_is_504(http):
    t0 = time.monotonic()
    r = http.post("/v1/chat/completions", json={"model": "triage/stuck", "messages": MSG})
    check_error(r, 504, "upstream_timeout")
    assert time.monotonic() - t0 < 30  # the strategy's 1 s timeout, not the client's


def test_feedback_errors(http, server):
    check_error(http.post("/v1/feedback", json={"request_id": "no-such-id", "score": 1}), 404, "unknown_request_id")
    check_error(http.post("/v1/feedback", json={"request_id": "x", "score": 1.5}), 422, param="score")
    check_error(http.post("/v1/feedback", json={"request_id": "x", "score": 1, "source": "has space"}), 422)
    r = http.post("/v1/chat/completions", json={"model": "triage/down", "messages": MSG})
    rid = r.headers["x-triage-request-id"]
    other = httpx.post(server.url + "/v1/feedback", json={"request_id": rid, "score": 1},
                       headers={"authorization": f"Bearer {OTHER_KEY}"})
    check_error(other, 404, "unknown_request_id")  # another tenant's request is not revealed
    ok = http.post("/v1/feedback", json={"request_id": rid, "score": 0.0, "source": "judge"})
    assert ok.status_code == 200 and ok.json() == {"request_id": rid, "recorded": True}


def test_bad_summary_queries(http):
    check_error(http.get("/v1/ledger/summary", params={"by": "colour"}), 422, param="by")
    check_error(http.get("/v1/ledger/summary", params={"since": "last tuesday-ish"}), 400, "invalid_summary_query")
    assert http.get("/v1/ledger/summary", params={"by": "tier", "since": "1d"}).status_code == 200


def test_no_secret_reaches_the_log_or_the_ledger(http, server):
    # Put the client key where careless code would log it: a header, and the request body.
    http.post("/v1/chat/completions", json={"model": "triage/down", "messages": [
        {"role": "user", "content": f"my key is {CLIENT_KEY}"}]})
    http.post("/v1/chat/completions", json={"model": "triage/stuck", "messages": MSG})
    log, ledger = server.log_text(), server.ledger_bytes()
    assert '"event": "request"' in log  # JSON access log lines exist...
    for secret in ALL_SECRETS:
        assert secret not in log, secret  # ...and carry no key, no upstream credential
        assert secret.encode() not in ledger, secret
