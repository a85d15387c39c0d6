"""LangChain: TriageChatModel over the real local model (invoke, stream, batch and async forms)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from triage.policies.loader import DEFAULT_POLICY
from triage.router.sdk.langchain import TriageChatModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm() -> TriageChatModel:
    return TriageChatModel(policy=str(DEFAULT_POLICY), max_tokens=12)


def _check(msg: AIMessage) -> dict:
    assert isinstance(msg.content, str) and msg.content.strip()
    triage = msg.response_metadata["triage"]
    assert triage["decision"]["tier"] in ("easy", "normal", "hard")
    assert triage["decision"]["policy"] == "local"
    assert msg.response_metadata["model_name"] == "local/smollm2-135m"
    usage = msg.usage_metadata
    assert usage["input_tokens"] > 0 and 1 <= usage["output_tokens"] <= 12
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    return triage


def test_invoke_with_a_string_and_with_messages(llm):
    _check(llm.invoke("What is 2 + 2?"))
    triage = _check(llm.invoke([SystemMessage("Answer briefly."), HumanMessage("Name a primary colour.")]))
    assert triage["attempts"][0]["reason"] == "primary"


def test_stream_yields_the_invoke_text_and_ends_with_the_decision(llm):
    full = llm.invoke("What is 2 + 2?")
    chunks = list(llm.stream("What is 2 + 2?"))
    assert len(chunks) > 2
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.content == full.content  # temperature 0 in the local policy's strategies
    assert merged.response_metadata["triage"]["decision"] == full.response_metadata["triage"]["decision"]
    assert merged.usage_metadata["output_tokens"] == full.usage_metadata["output_tokens"]


def test_batch_and_async_forms(llm):
    questions = ["What is 2 + 2?", "What colour is the sky on a clear day?"]
    for msg in llm.batch(questions, config={"max_concurrency": 2}):
        _check(msg)

    async def go():
        one = await llm.ainvoke(questions[0])
        many = await llm.abatch(questions)
        pieces = [c async for c in llm.astream(questions[0])]
        return one, many, pieces

    one, many, pieces = asyncio.run(go())
    _check(one)
    for msg in many:
        _check(msg)
    merged = pieces[0]
    for c in pieces[1:]:
        merged = merged + c
    assert merged.content == one.content
    assert merged.response_metadata["triage"]["request_id"]
