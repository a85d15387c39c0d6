"""One request executor: the same request streamed and not streamed gives the same receipt and the
same ledger record (tokens, cost, attempts, metadata) - through the SDK (sync and async), the
litellm-style function and the sidecar.

The answers come from the real SmolLM2 model at temperature 0 (local.yaml); cost parity with a priced
model uses the stub upstream on loopback (eval/bench/stub_upstream.py), since a local model costs 0.
Also the three drift bugs of the four old loops: a streamed request lost litellm's `response_cost`
and a non-provider exception went unrecorded; the token-routed split is checked in
tests/test_token_router.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from triage.router.core import Router
from triage.router.ledger import open_ledger

from tests.support.sidecar import CLIENT_KEY, LOCAL_POLICY, SidecarProcess, record_of
from tests.support.sidecar import stub_upstream as run_stub_upstream

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Name one primary colour."}]
_VOLATILE = {"request_id", "latency_s", "decision_latency_s", "time", "created_at"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _record(store: Any, request_id: str) -> dict[str, Any]:
    rec = store.get(request_id)
    assert rec is not None, f"no ledger record for {request_id}"
    data = _strip(rec.model_dump(mode="json"))
    data.get("metadata", {}).pop("stream", None)  # the one field that says how it was asked
    return data


def _drain(stream: Any) -> str:
    return "".join((c.choices[0].delta.content or "") for c in stream)


async def _adrain(stream: Any) -> str:
    return "".join([(c.choices[0].delta.content or "") async for c in stream])


@pytest.fixture(scope="module")
def local_router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    router = Router.from_file(LOCAL_POLICY, ledger=str(tmp_path_factory.mktemp("parity") / "ledger.sqlite"))
    yield router
    router.close()


def test_sdk_stream_and_non_stream_give_the_same_receipt_and_record(local_router: Router) -> None:
    plain = local_router.completion(messages=ASK, max_tokens=12)
    stream = local_router.completion(messages=ASK, max_tokens=12, stream=True)
    text = _drain(stream)
    assert text == plain.choices[0].message.content
    a, b = plain._hidden_params["triage"], stream.triage
    assert a["completion_tokens"] and a["completion_tokens"] > 0
    assert _strip(a) == _strip(b)
    store = local_router.ledger.store
    assert _record(store, a["request_id"]) == _record(store, b["request_id"])


def test_async_stream_and_non_stream_give_the_same_receipt_and_record(local_router: Router) -> None:
    async def both() -> tuple[Any, Any]:
        plain = await local_router.acompletion(messages=ASK, max_tokens=12)
        stream = await local_router.acompletion(messages=ASK, max_tokens=12, stream=True)
        assert await _adrain(stream) == plain.choices[0].message.content
        return plain._hidden_params["triage"], stream.triage

    a, b = asyncio.run(both())
    assert _strip(a) == _strip(b)
    store = local_router.ledger.store
    assert _record(store, a["request_id"]) == _record(store, b["request_id"])


def test_litellm_style_function_gives_the_same_record_streamed_or_not(local_router: Router) -> None:
    from triage.router.sdk.completion import triage_completion

    plain = triage_completion(messages=ASK, router=local_router, max_tokens=12)
    stream = triage_completion(messages=ASK, router=local_router, max_tokens=12, stream=True)
    _drain(stream)
    store = local_router.ledger.store
    assert _record(store, plain._hidden_params["triage"]["request_id"]) == _record(store, stream.triage["request_id"])


def test_usage_chunk_only_when_the_caller_asks_for_it(local_router: Router) -> None:
    chunks = list(local_router.completion(messages=ASK, max_tokens=8, stream=True))
    assert chunks and all(c.choices for c in chunks)  # the docs' `chunk.choices[0]` loop works
    asked = list(local_router.completion(messages=ASK, max_tokens=8, stream=True,
                                         stream_options={"include_usage": True}))
    usage = [c for c in asked if getattr(c, "usage", None) is not None]
    assert usage and usage[-1].usage.completion_tokens > 0


# -- a priced model: litellm's response_cost on both paths -----------------------------------------


@pytest.fixture(scope="module")
def stub_upstream() -> str:
    """The benchmark's stub upstream: a priced model's answer without a provider account (the
    answers this module compares for equality come from it; the local model cannot be priced)."""
    with run_stub_upstream() as url:
        yield url + "/v1"


def _priced_policy(folder: Path, api_base: str) -> Path:
    policy = {
        "name": "priced", "version": 1, "probe": "default",
        "strategies": {"only": {"model": "openai/gpt-4o-mini", "api_base": api_base, "api_key_env": "PARITY_KEY",
                                "max_tokens": 16}},
        "tiers": {"easy": "only", "normal": "only", "hard": "only"},
        "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.9}},
    }
    path = folder / "priced.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def test_streamed_cost_equals_non_streamed_cost(tmp_path: Path, stub_upstream: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARITY_KEY", "sk-parity-not-a-real-key")
    router = Router.from_file(_priced_policy(tmp_path, stub_upstream), ledger=str(tmp_path / "l.sqlite"))
    try:
        plain = router.completion(messages=ASK)
        stream = router.completion(messages=ASK, stream=True)
        _drain(stream)
        a, b = plain._hidden_params["triage"], stream.triage
        assert a["cost_usd"] is not None and a["cost_usd"] > 0
        assert b["cost_usd"] == pytest.approx(a["cost_usd"])
        assert _record(router.ledger.store, a["request_id"]) == _record(router.ledger.store, b["request_id"])
    finally:
        router.close()


def test_a_non_provider_error_in_a_stream_is_recorded(tmp_path: Path, stub_upstream: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while reading a stream (here: a chunk handler that raises) still leaves a ledger record."""
    monkeypatch.setenv("PARITY_KEY", "sk-parity-not-a-real-key")
    router = Router.from_file(_priced_policy(tmp_path, stub_upstream), ledger=str(tmp_path / "l.sqlite"))
    try:
        stream = router.completion(messages=ASK, stream=True)
        rid = stream.request_id
        boom = KeyError("injected fault while handling a chunk")

        def failing_next() -> Any:
            raise boom

        stream._inner = type("Failing", (), {"__next__": lambda self: failing_next(), "close": lambda self: None})()
        with pytest.raises(KeyError):
            _drain(stream)
        rec = router.ledger.store.get(rid)
        assert rec is not None and rec.error is not None and "KeyError" in rec.error
    finally:
        router.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_non_provider_error_when_opening_is_recorded(tmp_path: Path, stub_upstream: str, stream: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected fault: the call itself raises a non-provider error (a bug, not an outage)."""
    import litellm
    from triage.router.providers import openai_direct

    monkeypatch.setenv("PARITY_KEY", "sk-parity-not-a-real-key")
    router = Router.from_file(_priced_policy(tmp_path, stub_upstream), ledger=str(tmp_path / "l.sqlite"))

    def broken(**kwargs: Any) -> Any:
        raise KeyError("injected fault inside the call")

    try:
        router.warm()
        monkeypatch.setattr(litellm, "completion", broken)
        monkeypatch.setattr(openai_direct, "completion", broken)  # this policy's path (openai/ + api_base)
        with pytest.raises(KeyError):
            router.completion(messages=ASK, stream=stream, request_id=f"broken-{stream}")
        rec = router.ledger.store.get(f"broken-{stream}")
        assert rec is not None and "KeyError" in (rec.error or "")
        assert rec.attempts and "KeyError" in (rec.attempts[-1].error or "")
    finally:
        router.close()


# -- the sidecar ----------------------------------------------------------------------------------


def test_sidecar_stream_and_non_stream_give_the_same_record(tmp_path: Path) -> None:
    from openai import OpenAI

    proc = SidecarProcess(tmp_path, [LOCAL_POLICY])
    try:
        with OpenAI(base_url=proc.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=300) as client:
            raw = client.chat.completions.with_raw_response.create(model="triage/local", messages=ASK, max_tokens=12)
            plain_id = raw.headers["x-triage-request-id"]
            with client.chat.completions.with_streaming_response.create(
                    model="triage/local", messages=ASK, max_tokens=12, stream=True) as resp:
                stream_id = resp.headers["x-triage-request-id"]
                chunks = list(resp.parse())
        assert chunks and all(c.choices for c in chunks)  # no usage-only chunk unless asked
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == raw.parse().choices[0].message.content
        store = open_ledger(str(proc.ledger))
        try:
            assert _record(store, plain_id) == _record(store, stream_id)
        finally:
            store.close()
        assert record_of(proc.ledger, stream_id).completion_tokens > 0
    finally:
        proc.stop()
