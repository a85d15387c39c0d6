"""The sidecar as users run it: `triage serve --config ...` on loopback with the offline default policy
(policies/examples/local.yaml: the real SmolLM2-135M on CPU), driven by the official openai client
(sync, async, streaming), LangChain's ChatOpenAI and litellm's openai/ provider. Answers arrive,
x-triage-* headers are set, ledger rows exist in the real SQLite file, and a client that drops a
stream stops the model."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.support.sidecar import (
    ALL_SECRETS,
    CLIENT_KEY,
    LOCAL_MODEL,
    LOCAL_POLICY,
    SidecarProcess,
    openai_client,
    record_of,
)

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Scraped without a key, as a Prometheus on the same host would (default: an admin key).
    proc = SidecarProcess(tmp_path_factory.mktemp("sidecar-clients"), [LOCAL_POLICY], extra={"public_metrics": True})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


def assert_triage_headers(headers) -> str:
    rid = headers["x-triage-request-id"]
    assert len(rid) == 32
    assert headers["x-triage-tier"] in ("easy", "normal", "hard")
    assert headers["x-triage-strategy"] in ("terse", "standard", "step_by_step", "passthrough")
    return rid


def test_openai_sync_answer_headers_and_ledger_row(client, server):
    raw = client.chat.completions.with_raw_response.create(model="triage/local", messages=ASK, max_tokens=12)
    rid = assert_triage_headers(raw.headers)
    completion = raw.parse()
    assert completion.choices[0].message.content.strip()
    assert completion.model == LOCAL_MODEL
    assert 0 < completion.usage.completion_tokens <= 12 and completion.usage.prompt_tokens > 0
    rec = record_of(server.ledger, rid)
    assert rec is not None, "the answered request must already be in the ledger"
    assert rec.policy_name == "local" and rec.tier == raw.headers["x-triage-tier"]
    assert rec.strategy == raw.headers["x-triage-strategy"] and rec.model == LOCAL_MODEL
    assert rec.completion_tokens == completion.usage.completion_tokens
    assert rec.tenant == "acme" and rec.api_key_id == "team-a"
    assert rec.metadata["requested_model"] == "triage/local" and rec.prompt is None


def test_openai_async_concurrent_requests(server):
    from openai import AsyncOpenAI

    async def run() -> list:
        async with AsyncOpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=300) as c:
            calls = [c.chat.completions.with_raw_response.create(
                model="triage/local", max_tokens=8, messages=[{"role": "user", "content": q}])
                for q in ("Name a primary colour.", "What is 3 + 5?")]
            return await asyncio.gather(*calls)

    raws = asyncio.run(run())
    ids = {assert_triage_headers(r.headers) for r in raws}
    assert len(ids) == 2
    for r in raws:
        assert r.parse().choices[0].message.content.strip()
        assert record_of(server.ledger, r.headers["x-triage-request-id"]) is not None


def test_openai_streaming_matches_non_streaming(client, server):
    q = [{"role": "user", "content": "Say hello to Ada."}]
    plain = client.chat.completions.create(model="triage/local", messages=q, max_tokens=10, temperature=0)
    with client.chat.completions.with_streaming_response.create(
            model="triage/local", messages=q, max_tokens=10, temperature=0, stream=True,
            stream_options={"include_usage": True}) as resp:
        rid = assert_triage_headers(resp.headers)
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == plain.choices[0].message.content
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens > 0
    rec = record_of(server.ledger, rid)
    assert rec is not None and rec.metadata["stream"] is True and rec.completion_tokens == usage[-1].completion_tokens


def test_openai_async_streaming(server):
    from openai import AsyncOpenAI

    async def run() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=300) as c:
            async with c.chat.completions.with_streaming_response.create(
                    model="triage/local", messages=ASK, max_tokens=8, stream=True) as resp:
                rid = assert_triage_headers(resp.headers)
                parts = [ch.choices[0].delta.content or "" async for ch in await resp.parse() if ch.choices]
            return rid, "".join(parts)

    rid, text = asyncio.run(run())
    assert text.strip()
    assert record_of(server.ledger, rid) is not None


def test_concrete_model_is_called_as_is_and_recorded(client, server):
    raw = client.chat.completions.with_raw_response.create(model=LOCAL_MODEL, messages=ASK, max_tokens=6)
    rid = assert_triage_headers(raw.headers)
    assert raw.headers["x-triage-strategy"] == "passthrough"
    assert raw.parse().choices[0].message.content.strip()
    rec = record_of(server.ledger, rid)
    assert rec.policy_name == "passthrough" and rec.model == LOCAL_MODEL and rec.tier == raw.headers["x-triage-tier"]


def test_unknown_fields_pass_through_to_the_provider(client):
    import openai

    # seed is passed on and accepted; tools reach the local provider, which refuses them clearly.
    ok = client.chat.completions.create(model="triage/local", messages=ASK, max_tokens=4, seed=7)
    assert ok.choices[0].message.content is not None
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="triage/local", messages=ASK, max_tokens=4, tools=[tool])
    assert "tool" in str(err.value).lower()


def test_openai_client_sees_typed_errors(client):
    import openai

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-unknown", messages=ASK)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="triage/local", messages=[])
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=str(client.base_url), api_key="sk-wrong", max_retries=0).models.list()


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "triage/local" and LOCAL_MODEL in ids


def test_langchain_chat_openai(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, model="triage/local", max_tokens=8,
                     max_retries=0, timeout=300)
    before = _count(server)
    msg = llm.invoke("What is the capital of Italy?")
    assert isinstance(msg.content, str) and msg.content.strip()
    assert msg.response_metadata["model_name"] == LOCAL_MODEL
    streamed = "".join(chunk.content for chunk in llm.stream("Name a fruit."))
    assert streamed.strip()
    assert _count(server) == before + 2


def test_litellm_openai_provider(server):
    import litellm

    response = litellm.completion(model="openai/triage/local", api_base=server.url + "/v1", api_key=CLIENT_KEY,
                                  messages=ASK, max_tokens=8, num_retries=0)
    assert response.choices[0].message.content.strip()
    headers = response._hidden_params.get("additional_headers") or {}
    rid = headers.get("llm_provider-x-triage-request-id")
    assert rid and record_of(server.ledger, rid) is not None
    chunks = list(litellm.completion(model="openai/triage/local", api_base=server.url + "/v1", api_key=CLIENT_KEY,
                                     messages=ASK, max_tokens=8, stream=True, num_retries=0))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


def test_route_endpoint_gives_the_sdk_decision_on_200_queries(server):
    from triage.router.core.router import Router
    from triage.settings import get_settings

    path = get_settings().data_dir / "gsm8k" / "test.jsonl"
    questions = [json.loads(line)["question"] for line in path.read_text().splitlines()[:197]]
    questions += ["What is 2 + 2?", "Name the capital of France.", "Prove that there are infinitely many primes."]
    sdk = Router.from_file(LOCAL_POLICY)
    tiers = set()
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=60) as http:
        for q in questions:
            msgs = [{"role": "user", "content": q}]
            r = http.post("/v1/route", json={"model": "triage/local", "messages": msgs})
            assert r.status_code == 200, r.text
            got, want = r.json()["decision"], sdk.route(msgs).model_dump(mode="json")
            assert got == want, q
            assert r.headers["x-triage-tier"] == want["tier"] and r.headers["x-triage-strategy"] == want["strategy"]
            tiers.add(want["tier"])
    assert len(questions) == 200 and len(tiers) >= 2  # the comparison covers more than one tier


def test_feedback_is_attached_and_reported(client, server):
    raw = client.chat.completions.with_raw_response.create(model="triage/local", messages=ASK, max_tokens=4)
    rid = raw.headers["x-triage-request-id"]
    h = {"authorization": f"Bearer {CLIENT_KEY}"}
    r = httpx.post(server.url + "/v1/feedback", json={"request_id": rid, "score": 1.0, "source": "exact-match"},
                   headers=h)
    assert r.status_code == 200 and r.headers["x-triage-request-id"] != rid
    from triage.router.ledger import open_ledger

    with open_ledger(str(server.ledger)) as store:
        assert [(o.score, o.source) for o in store.outcomes(rid)] == [(1.0, "exact-match")]
    summary = httpx.get(server.url + "/v1/ledger/summary", params={"by": "tier"}, headers=h).json()
    assert summary["overall"]["n_scored"] >= 1 and summary["n"] >= 1


def test_metrics_and_health(server):
    text = httpx.get(server.url + "/metrics").text
    assert 'triage_requests_total{' in text and 'tier="' in text
    assert 'triage_http_responses_total{route="/v1/chat/completions",status="200"}' in text
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["checks"] == {
        "policy:local": "ready", "ledger": "reachable", "ledger_writes": "ok", "ledger_spool": "0 bytes waiting"}


def test_client_disconnect_mid_stream_stops_the_model(server):
    import psutil

    proc = psutil.Process(server.proc.pid)
    body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
            "max_tokens": 300, "stream": True}
    with httpx.Client(timeout=300) as c:
        with c.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {CLIENT_KEY}"}) as r:
            rid = r.headers["x-triage-request-id"]
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # one token arrived; now hang up
    # 300 tokens take ~30 s on this CPU; a model left running would keep a core busy.
    deadline = time.monotonic() + 20
    rec = None
    while time.monotonic() < deadline and rec is None:
        time.sleep(0.5)
        rec = record_of(server.ledger, rid)
    assert rec is not None, "the dropped stream must be recorded promptly"
    assert rec.metadata.get("client_disconnected") is True
    time.sleep(1.0)
    cpu0 = sum(proc.cpu_times()[:2])
    time.sleep(3.0)
    busy = sum(proc.cpu_times()[:2]) - cpu0
    assert busy < 1.0, f"the server used {busy:.2f} CPU-seconds in 3 s after the client left"


def test_logs_are_json_and_hold_no_secret(server):
    log = server.log_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    kinds = {e.get("event") for e in events}
    assert "request" in kinds and "sidecar_started" in kinds
    assert any(e.get("logger", "").startswith("uvicorn") for e in events)  # uvicorn's lines are JSON too
    ledger = server.ledger_bytes()
    for secret in ALL_SECRETS:
        assert secret not in log and secret.encode() not in ledger


def _count(server) -> int:
    from triage.router.ledger import open_ledger

    with open_ledger(str(server.ledger)) as store:
        return store.count()
