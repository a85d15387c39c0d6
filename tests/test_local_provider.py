"""The `local` litellm provider, driven through litellm's public API with the real SmolLM2-135M."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from triage.probes.features import make_feature
from triage.probes.features.lm_internals import lm_features_from_prefill, query_messages
from triage.probes.features.output_uncertainty import (
    UNCERTAINTY_STAT_NAMES,
    TokenUncertainty,
    tokens_from_local,
    tokens_from_response,
    uncertainty_from_response,
    uncertainty_stats,
)
from triage.router.providers import register_local_provider

register_local_provider()

import litellm  # noqa: E402  (after registration, which also sets litellm's offline cost map)

MODEL = "local/smollm2-135m"
MESSAGES = query_messages("What is the capital of France?")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def lm():
    from triage.lm import get_local_lm

    return get_local_lm("smollm2-135m")


def _text(chunks) -> str:
    return "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_registration_is_idempotent():
    n = len(litellm.custom_provider_map)
    handler = register_local_provider()
    assert register_local_provider() is handler
    assert len(litellm.custom_provider_map) == n
    assert [i["provider"] for i in litellm.custom_provider_map].count("local") == 1


def test_completion_text_usage_finish_reason_logprobs(lm):
    resp = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3)
    choice = resp.choices[0]
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    ids, _ = lm.encode_chat(MESSAGES)
    assert resp.usage.prompt_tokens == len(ids)
    assert 1 <= resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob >= t.logprob - 1e-6  # greedy picks the top token
        assert bytes(t.bytes).decode("utf-8") == t.token
    assert resp._hidden_params["local"]["model_sha256"] == lm.sha256
    # the same answer as the runtime gives directly
    direct = lm.generate(MESSAGES, max_tokens=12, temperature=0)
    assert direct.text == choice.message.content and direct.completion_tokens == resp.usage.completion_tokens


def test_max_tokens_hit_is_reported_as_length():
    resp = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3
    resp = litellm.completion(model=MODEL, messages=MESSAGES, max_completion_tokens=2, temperature=0)
    assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 2


def test_streaming_yields_the_same_text_as_non_streaming():
    full = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
    chunks = list(
        litellm.completion(
            model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) > 2
    assert _text(chunks) == full.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [full.choices[0].finish_reason]
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].prompt_tokens == full.usage.prompt_tokens
    assert usage[-1].completion_tokens == full.usage.completion_tokens
    built = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert built.choices[0].message.content == full.choices[0].message.content
    assert built.usage.completion_tokens == full.usage.completion_tokens


def test_streaming_logprobs_per_chunk():
    chunks = list(litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0, stream=True, logprobs=True))
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert tokens and "".join(t.token for t in tokens) == _text(chunks)


def test_async_completion_and_streaming():
    async def run():
        resp = await litellm.acompletion(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
        stream = await litellm.acompletion(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, stream=True)
        chunks = [c async for c in stream]
        # the event loop stays responsive while the model runs in a worker thread
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        again = await litellm.acompletion(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
        ticker.cancel()
        return resp, chunks, again, ticks

    resp, chunks, again, ticks = asyncio.run(run())
    sync = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert resp.choices[0].message.content == sync.choices[0].message.content == again.choices[0].message.content
    assert _text(chunks) == sync.choices[0].message.content
    assert ticks > 1


def test_stop_sequences_are_honoured():
    free = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0).choices[0].message.content
    word = " " + free.split()[2]
    resp = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0, stop=[word, "\n\n"])
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == free[: free.index(word)]
    chunks = list(litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0, stop=word, stream=True))
    assert _text(chunks) == free[: free.index(word)]


def test_seed_makes_sampling_reproducible():
    kw = dict(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=1.0, top_p=0.9, seed=123)
    a = litellm.completion(**kw).choices[0].message.content
    b = litellm.completion(**kw).choices[0].message.content
    assert a == b


def _raises_within(fn, seconds: float = 120.0) -> BaseException:
    """Run ``fn`` in a thread; it must raise, and must not hang."""
    out: dict[str, BaseException] = {}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the call hung"
    assert "exc" in out, "the call did not raise"
    return out["exc"]


def test_unknown_model_is_a_clear_not_found_error():
    exc = _raises_within(lambda: litellm.completion(model="local/no-such-model", messages=MESSAGES, max_tokens=2))
    assert isinstance(exc, litellm.NotFoundError)
    assert "unknown local model 'no-such-model'" in str(exc) and "smollm2-135m" in str(exc)
    exc = _raises_within(
        lambda: list(litellm.completion(model="local/no-such-model", messages=MESSAGES, max_tokens=2, stream=True))
    )
    assert isinstance(exc, litellm.NotFoundError)
    exc = _raises_within(lambda: asyncio.run(litellm.acompletion(model="local/nope", messages=MESSAGES)))
    assert isinstance(exc, litellm.NotFoundError)


def test_bad_parameters_are_bad_requests():
    for kwargs, needle in (
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n=2"),
        ({"temperature": -1}, "temperature"),
    ):
        exc = _raises_within(lambda kw=kwargs: litellm.completion(model=MODEL, messages=MESSAGES, **kw))
        assert isinstance(exc, litellm.BadRequestError), (kwargs, exc)
        assert needle in str(exc)
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]
    exc = _raises_within(lambda: litellm.completion(model=MODEL, messages=image, max_tokens=2))
    assert isinstance(exc, litellm.BadRequestError) and "text only" in str(exc)
    long = query_messages("word " * 9000)
    exc = _raises_within(lambda: litellm.completion(model=MODEL, messages=long, max_tokens=2))
    assert isinstance(exc, litellm.ContextWindowExceededError)


def test_timeout_stops_generation():
    exc = _raises_within(lambda: litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=64, timeout=0.001))
    assert isinstance(exc, litellm.Timeout) and "timed out" in str(exc)


def test_self_probe_routing_and_answering_cost_one_prefill(lm):
    question = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
    msgs = query_messages(question)
    lm.forget_prefills()
    pre = lm.prefill(msgs)  # the probe's features come from the served model's own prefill
    features = lm_features_from_prefill(pre)
    np.testing.assert_array_equal(features, make_feature("lm").transform([question])[0])
    resp = litellm.completion(model=MODEL, messages=msgs, max_tokens=6, temperature=0)
    assert resp._hidden_params["local"]["prefill_reused"] is True
    lm.forget_prefills()
    fresh = litellm.completion(model=MODEL, messages=msgs, max_tokens=6, temperature=0)
    assert fresh._hidden_params["local"]["prefill_reused"] is False
    assert fresh.choices[0].message.content == resp.choices[0].message.content


def test_output_uncertainty_from_provider_logprobs(lm):
    resp = litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=5)
    direct = lm.generate(MESSAGES, max_tokens=8, temperature=0)
    from_provider = uncertainty_stats(tokens_from_response(resp), k=8)
    np.testing.assert_allclose(from_provider, uncertainty_stats(tokens_from_local(direct.tokens), k=8), atol=1e-5)
    named = uncertainty_from_response(resp, k=8)
    assert list(named) == list(UNCERTAINTY_STAT_NAMES)
    # without the exact entropy (a remote provider) the top-5 estimate is a lower bound
    stripped = {
        "content": [
            {"token": t.token, "logprob": t.logprob, "top_logprobs": [{"token": a.token, "logprob": a.logprob} for a in t.top_logprobs]}
            for t in resp.choices[0].logprobs.content
        ]
    }
    estimated = [u.entropy for u in tokens_from_response({"choices": [{"logprobs": stripped}]})]
    exact = [t.entropy for t in direct.tokens]
    assert all(e <= x + 1e-5 for e, x in zip(estimated, exact, strict=True))
    assert all(isinstance(u, TokenUncertainty) for u in tokens_from_response(resp))
    with pytest.raises(ValueError, match="no logprobs"):
        tokens_from_response(litellm.completion(model=MODEL, messages=MESSAGES, max_tokens=2, temperature=0))
