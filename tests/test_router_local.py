"""The routing core against the real local model (SmolLM2-135M-Instruct from PyPI), no API key.

Generations are short (<= 16 tokens). SmolLM2-135M is often wrong: these tests check mechanics
(usage, decisions, attempts, streaming, ledger), not answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from triage.policies.loader import DEFAULT_POLICY
from triage.router.core import Router, TriageStream

pytestmark = pytest.mark.slow

EASY = [{"role": "user", "content": "What is 2 + 2?"}]
HARD = [{"role": "user", "content": (
    "A train leaves at 3:40 pm travelling at 72 km/h; a second train leaves the same station at 4:15 pm "
    "at 96 km/h on a parallel track. At what time does the second train catch up, and how far from the "
    "station are they? Show each step."
)}]


@pytest.fixture(scope="module")
def router(tmp_path_factory) -> Router:
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.sqlite"
    r = Router.from_file(DEFAULT_POLICY, ledger=str(ledger))
    yield r.warm()
    r.close()


def test_default_policy_routes_and_answers_with_usage(router):
    response = router.completion(messages=EASY, max_tokens=12)
    info = response._hidden_params["triage"]
    decision = info["decision"]
    assert decision["policy"] == "local" and decision["probe_version"]
    assert set(decision["tier_probs"]) == {"easy", "normal", "hard"}
    assert decision["strategy"] in router.policy.strategies
    assert response.model.endswith("smollm2-135m") or info["model"] == "local/smollm2-135m"
    text = response.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    usage = response.usage
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 12
    assert info["prompt_tokens"] == usage.prompt_tokens and info["completion_tokens"] == usage.completion_tokens
    assert info["cost_usd"] == 0.0  # local model: free unless the strategy sets a price
    assert info["attempts"][0]["reason"] == "primary"
    assert info["latency_s"] >= info["decision_latency_s"] > 0
    # the record was committed before the answer came back
    rec = router.ledger.store.get(info["request_id"])
    assert rec is not None and rec.tier == decision["tier"] and rec.completion_tokens == usage.completion_tokens
    assert rec.prompt is None and rec.prompt_sha256  # prompt text is not stored by default


def test_decision_depends_on_the_query(router):
    easy, hard = router.route(EASY), router.route(HARD)
    assert easy.tier_probs != hard.tier_probs
    assert hard.tier_probs["hard"] + hard.tier_probs["normal"] > easy.tier_probs["hard"] + easy.tier_probs["normal"]


def test_strategy_prompt_and_budget_reach_the_model(router):
    # the strategy's max_tokens is the budget; a caller's max_tokens can only tighten it
    d = router.route(EASY)
    response = router.completion(messages=EASY, max_tokens=4)
    assert response.usage.completion_tokens <= 4
    info = response._hidden_params["triage"]
    # The attempt records the cap the call was sent; the decision keeps the strategy's budget.
    assert d.max_tokens > 4 and info["decision"]["max_tokens"] == d.max_tokens
    assert info["attempts"][0]["max_tokens"] == 4


def test_streaming_matches_non_streaming_at_temperature_0(router):
    kwargs = {"max_tokens": 16}
    full = router.completion(messages=EASY, **kwargs)
    stream = router.completion(messages=EASY, stream=True, **kwargs)
    assert isinstance(stream, TriageStream)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert full._hidden_params["triage"]["decision"]["temperature"] == 0.0
    assert text == full.choices[0].message.content
    assert stream.triage["decision"] == full._hidden_params["triage"]["decision"]
    assert stream.triage["completion_tokens"] == full.usage.completion_tokens
    assert chunks[0]._hidden_params["triage"]["request_id"] == stream.triage["request_id"]
    assert router.ledger.store.get(stream.triage["request_id"]) is not None


def test_async_completion_and_async_stream(router):
    async def go():
        response = await router.acompletion(messages=EASY, max_tokens=16)
        stream = await router.acompletion(messages=EASY, max_tokens=16, stream=True)
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return response, text, stream.triage

    response, text, info = asyncio.run(go())
    assert text == response.choices[0].message.content
    assert info["completion_tokens"] == response.usage.completion_tokens


def test_litellm_directly_reaches_the_local_provider(router):
    import litellm

    response = litellm.completion(model="local/smollm2-135m", messages=EASY, max_tokens=6, temperature=0)
    assert response.usage.completion_tokens <= 6 and response.usage.prompt_tokens > 0
    assert response.choices[0].finish_reason in ("stop", "length")


def _policy(tmp_path: Path, name: str, **overrides) -> Router:
    raw = {
        "name": name, "probe": "default",
        "strategies": {
            "short": {"model": "local/smollm2-135m", "max_tokens": 3, "temperature": 0.0},
            "longer": {"model": "local/smollm2-135m", "max_tokens": 12, "temperature": 0.0,
                       "system_prompt": "Answer in one short sentence."},
        },
        "tiers": {"easy": "short", "normal": "short", "hard": "longer"},
    }
    for key, value in overrides.items():
        if key == "short":
            raw["strategies"]["short"].update(value)
        else:
            raw[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return Router.from_file(path)


def test_truncation_retry_and_escalation_are_recorded_as_attempts(tmp_path):
    # every tier threshold at 0 sends everything to 'hard'; at 1, to 'easy' (the 3-token strategy)
    easy_only = {"type": "thresholds", "thresholds": {"normal": 1.0, "hard": 1.0}}
    retry = _policy(tmp_path, "retry", rule=easy_only,
                    short={"on_truncation": "retry", "retry_max_tokens": 10})
    info = retry.completion(messages=HARD)._hidden_params["triage"]
    assert [a["reason"] for a in info["attempts"]] == ["primary", "retry"]
    assert info["attempts"][0]["truncated"] and info["attempts"][0]["completion_tokens"] == 3
    assert info["attempts"][1]["max_tokens"] == 10 and info["retried"] and not info["escalated"]

    escalate = _policy(tmp_path, "escalate", rule=easy_only, short={"on_truncation": "escalate"})
    info = escalate.completion(messages=HARD)._hidden_params["triage"]
    assert [(a["reason"], a["strategy"]) for a in info["attempts"]] == [("primary", "short"), ("escalation", "longer")]
    assert info["attempts"][0]["escalated_because"] == "truncated"
    assert info["strategy"] == "longer" and info["completion_tokens"] == sum(
        a["completion_tokens"] for a in info["attempts"])

    accept = _policy(tmp_path, "accept", rule=easy_only)
    info = accept.completion(messages=HARD)._hidden_params["triage"]
    assert len(info["attempts"]) == 1 and info["truncated"]


def test_cascade_escalates_on_token_uncertainty(tmp_path):
    # An entropy bar nothing can pass forces escalation; a bar nothing can fail keeps the cheap answer.
    def cascade(max_entropy: float) -> Router:
        return _policy(tmp_path, f"cascade{max_entropy}", short={"max_tokens": 8}, rule={
            "type": "cascade", "start": "short", "escalate_to": "longer", "max_mean_entropy": max_entropy,
            "escalate_on_truncation": False, "top_logprobs": 3})

    info = cascade(0.0).completion(messages=EASY)._hidden_params["triage"]
    first = info["attempts"][0]
    assert [a["reason"] for a in info["attempts"]] == ["primary", "escalation"]
    assert first["escalated_because"] == "entropy" and first["uncertainty"]["mean_entropy"] > 0
    assert first["uncertainty"]["tokens"] == first["completion_tokens"]

    info = cascade(1e6).completion(messages=EASY)._hidden_params["triage"]
    assert len(info["attempts"]) == 1 and info["attempts"][0]["uncertainty"]["tokens"] > 0

    # streaming a cascade: the cheap step is judged whole, then replayed (or the escalation streamed)
    stream = cascade(0.0).completion(messages=EASY, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text and [a["reason"] for a in stream.triage["attempts"]] == ["primary", "escalation"]


def test_feedback_attaches_outcomes(router):
    info = router.completion(messages=EASY, max_tokens=4)._hidden_params["triage"]
    router.feedback(info["request_id"], 1.0, source="exact-match")
    outcomes = router.ledger.store.outcomes(info["request_id"])
    assert [(o.score, o.source) for o in outcomes] == [(1.0, "exact-match")]
