"""LangChain tool calling through Triage: a two-tool agent loop over TriageChatModel and over the sidecar.

The agent loop is plain langchain-core (bind_tools -> run the tool calls -> ToolMessages -> invoke
again until an answer without tool calls). The model is a scripted OpenAI-compatible upstream on
loopback (tests/support/scripted_upstream.py: a 135M local model cannot call tools on cue); the
router, litellm, the sidecar and the SQLite ledger are real. The script computes each call from
the tool results it is sent, so the final answer is only right when both results made it back.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from tests.support.scripted_upstream import PRICES, ScriptedUpstream
from tests.support.sidecar import CLIENT_KEY, SidecarProcess, record_of
from triage.router.core import Router
from triage.router.core.fields import UnsupportedFieldError
from triage.router.sdk.langchain import TriageChatModel

pytestmark = pytest.mark.slow

QUESTION = "How much do 7 widgets cost?"
ANSWER = "7 widgets cost 17.5."  # 7 x PRICES["widget"]
KEY_ENV = "TEST_UPSTREAM_KEY"  # the variable SidecarProcess sets for its policies


@tool
def lookup_price(item: str) -> float:
    """The unit price of an item in USD."""
    return PRICES[item]


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


TOOLS = {t.name: t for t in (lookup_price, multiply)}


class Invoice(BaseModel):
    """An invoice line."""

    item: str
    quantity: int
    total: float


def _invoice_with_currency() -> type[BaseModel]:
    """A schema with the same tool name as Invoice and one more required field."""
    class Invoice(BaseModel):
        item: str
        quantity: int
        total: float
        currency: str

    return Invoice


def run_agent(model: Any, question: str, max_turns: int = 5) -> tuple[AIMessage, list[AIMessage], list[BaseMessage]]:
    """The smallest tool-calling agent: returns the final answer, every model turn and the history."""
    llm = model.bind_tools(list(TOOLS.values()))
    history: list[BaseMessage] = [HumanMessage(question)]
    turns: list[AIMessage] = []
    for _ in range(max_turns):
        msg = llm.invoke(history)
        turns.append(msg)
        history.append(msg)
        if not msg.tool_calls:
            return msg, turns, history
        for call in msg.tool_calls:
            history.append(ToolMessage(str(TOOLS[call["name"]].invoke(call["args"])), tool_call_id=call["id"]))
    raise AssertionError(f"no final answer after {max_turns} turns: {turns}")


def check_upstream_saw_the_loop(upstream: ScriptedUpstream, first: int) -> None:
    """What the upstream received on turns 2 and 3: the assistant's calls and the tools' results, paired by id."""
    reqs = upstream.requests[first:]
    assert len(reqs) == 3
    assert all({t["function"]["name"] for t in r["tools"]} == set(TOOLS) for r in reqs)
    second, third = reqs[1]["messages"], reqs[2]["messages"]
    call_a = next(m for m in second if m["role"] == "assistant")
    assert call_a["tool_calls"][0]["function"]["name"] == "lookup_price"
    assert not call_a.get("content")  # an assistant turn that only calls tools
    result_a = next(m for m in second if m["role"] == "tool")
    assert result_a == {"role": "tool", "tool_call_id": call_a["tool_calls"][0]["id"], "content": "2.5"}
    tool_msgs = [m for m in third if m["role"] == "tool"]
    calls = [m for m in third if m["role"] == "assistant"]
    assert [c["tool_calls"][0]["function"]["name"] for c in calls] == ["lookup_price", "multiply"]
    assert json.loads(calls[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2.5, "b": 7}
    assert [(m["tool_call_id"], m["content"]) for m in tool_msgs] == [
        (calls[0]["tool_calls"][0]["id"], "2.5"), (calls[1]["tool_calls"][0]["id"], "17.5")]


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    server = ScriptedUpstream()
    yield server
    server.close()


def write_policy(folder: Path, base: str) -> Path:
    def remote(model: str) -> dict[str, Any]:
        return {"model": model, "api_base": base, "api_key_env": KEY_ENV, "max_tokens": 256, "timeout_s": 30,
                "temperature": 0.0}

    raw = {"name": "agent", "probe": "default",
           "strategies": {"small": remote("openai/scripted-small"), "large": remote("openai/scripted-large")},
           "tiers": {"easy": "small", "normal": "small", "hard": "large"}}
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def policy(upstream, tmp_path_factory) -> Path:
    return write_policy(tmp_path_factory.mktemp("agent-policy"), upstream.base)


@pytest.fixture(scope="module")
def sdk(policy, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "sk-scripted-upstream-key")
        ledger = tmp_path_factory.mktemp("agent-ledger") / "ledger.sqlite"
        router = Router.from_file(policy, ledger=str(ledger))
        yield TriageChatModel(router=router), ledger
        router.close()


@pytest.fixture(scope="module")
def sidecar(policy, tmp_path_factory):
    proc = SidecarProcess(tmp_path_factory.mktemp("agent-sidecar"), [policy])
    yield proc
    proc.stop()


def _tier(decision: dict[str, Any]) -> str:
    assert decision["tier"] in ("easy", "normal", "hard")
    return decision["tier"]


# -- the agent loop --------------------------------------------------------------------------------


def test_agent_loop_through_triage_chat_model(sdk, upstream):
    llm, ledger = sdk
    first = len(upstream.requests)
    final, turns, _ = run_agent(llm, QUESTION)
    assert final.content == ANSWER
    assert [[c["name"] for c in t.tool_calls] for t in turns] == [["lookup_price"], ["multiply"], []]
    assert turns[1].tool_calls[0]["args"] == {"a": 2.5, "b": 7}
    check_upstream_saw_the_loop(upstream, first)
    for turn in turns:  # routed per turn, decision on every message, one ledger record per turn
        triage = turn.response_metadata["triage"]
        tier = _tier(triage["decision"])
        assert turn.response_metadata["finish_reason"] == ("tool_calls" if turn.tool_calls else "stop")
        assert turn.usage_metadata["input_tokens"] > 0
        record = record_of(ledger, triage["request_id"])
        assert record is not None, f"no ledger record for turn {triage['request_id']}"
        assert record.tier == tier and record.strategy == triage["decision"]["strategy"]
        assert record.model.startswith("openai/scripted") and record.error is None
    assert len({t.response_metadata["triage"]["request_id"] for t in turns}) == 3


def test_agent_loop_through_the_sidecar_with_chat_openai(sidecar, upstream):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="triage/agent", base_url=sidecar.url + "/v1", api_key=CLIENT_KEY, max_retries=0,
                     include_response_headers=True, timeout=60)
    first = len(upstream.requests)
    final, turns, _ = run_agent(llm, QUESTION)
    assert final.content == ANSWER
    assert [[c["name"] for c in t.tool_calls] for t in turns] == [["lookup_price"], ["multiply"], []]
    check_upstream_saw_the_loop(upstream, first)
    ids = []
    for turn in turns:
        headers = {k.lower(): v for k, v in turn.response_metadata["headers"].items()}
        assert headers["x-triage-tier"] in ("easy", "normal", "hard")
        record = record_of(sidecar.ledger, headers["x-triage-request-id"])
        assert record is not None and record.error is None
        assert record.tier == headers["x-triage-tier"] and record.strategy == headers["x-triage-strategy"]
        assert record.api_key_id == "team-a"
        ids.append(record.request_id)
    assert len(set(ids)) == 3


# -- streaming, structured output, malformed arguments ---------------------------------------------


def test_streamed_tool_call_chunks_merge_into_tool_calls(sdk):
    llm, _ = sdk
    bound = llm.bind_tools(list(TOOLS.values()))
    chunks = list(bound.stream(QUESTION))
    assert sum(1 for c in chunks if c.tool_call_chunks) >= 3  # the arguments came in pieces
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.tool_calls == [{"name": "lookup_price", "args": {"item": "widget"}, "id": merged.tool_calls[0]["id"],
                                  "type": "tool_call"}]
    assert merged.tool_calls[0]["id"].startswith("call_")
    assert _tier(merged.response_metadata["triage"]["decision"])
    assert merged.response_metadata["finish_reason"] == "tool_calls"

    async def go():
        return [c async for c in bound.astream(QUESTION)]

    pieces = asyncio.run(go())
    amerged = pieces[0]
    for c in pieces[1:]:
        amerged = amerged + c
    assert [c["args"] for c in amerged.tool_calls] == [{"item": "widget"}]


def test_unparseable_arguments_become_invalid_tool_calls(sdk):
    llm, _ = sdk
    msg = llm.bind_tools(list(TOOLS.values())).invoke("BROKEN: price of a widget?")
    assert msg.tool_calls == []
    assert len(msg.invalid_tool_calls) == 1
    bad = msg.invalid_tool_calls[0]
    assert bad["name"] == "lookup_price" and bad["args"] == '{"item": "widget"' and bad["error"]
    assert msg.response_metadata["triage"]["decision"]


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_with_structured_output_pydantic(sdk, upstream, method):
    llm, _ = sdk
    expected = Invoice(item="widget", quantity=7, total=17.5)
    assert llm.with_structured_output(Invoice, method=method).invoke("Invoice 7 widgets.") == expected
    sent = upstream.requests[-1]
    if method == "function_calling":
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "Invoice"}}
        assert sent["parallel_tool_calls"] is False
    else:
        assert sent["response_format"]["json_schema"]["name"] == "Invoice"
    out = llm.with_structured_output(Invoice, method=method, include_raw=True).invoke("Invoice 7 widgets.")
    assert out["parsed"] == expected and out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)
    assert _tier(out["raw"].response_metadata["triage"]["decision"])


def test_structured_output_dict_schema_and_parse_failure_with_include_raw(sdk):
    llm, _ = sdk
    schema = Invoice.model_json_schema()  # a JSON schema dict titled "Invoice"
    assert llm.with_structured_output(schema).invoke("x") == {
        "item": "widget", "quantity": 7, "total": 17.5}
    # the upstream's arguments do not fit this schema: include_raw reports it instead of raising

    out = llm.with_structured_output(_invoice_with_currency(), include_raw=True).invoke("x")
    assert out["parsed"] is None and out["parsing_error"] is not None
    assert out["raw"].tool_calls[0]["args"]["total"] == 17.5


# -- what callers may bind -------------------------------------------------------------------------


def test_tool_choice_spellings(sdk):
    llm, _ = sdk
    tools = list(TOOLS.values())
    assert llm.bind_tools(tools, tool_choice="multiply").kwargs["tool_choice"] == {
        "type": "function", "function": {"name": "multiply"}}
    assert llm.bind_tools(tools, tool_choice="any").kwargs["tool_choice"] == "required"
    assert llm.bind_tools(tools, tool_choice=True).kwargs["tool_choice"] == "required"
    assert llm.bind_tools(tools, tool_choice="none").kwargs["tool_choice"] == "none"
    assert "tool_choice" not in llm.bind_tools(tools).kwargs
    with pytest.raises(ValueError, match="names no bound tool"):
        llm.bind_tools(tools, tool_choice="delete_everything")


@pytest.mark.parametrize("hostile", [{"api_base": "http://127.0.0.1:9/v1"},
                                     {"fallbacks": [{"api_base": "http://127.0.0.1:9/v1"}]},
                                     {"mock_response": "pwned"}])
def test_bound_kwargs_cannot_smuggle_connection_fields(sdk, upstream, hostile):
    llm, _ = sdk
    (field,) = hostile
    with pytest.raises(UnsupportedFieldError) as err:  # refused where it is bound...
        llm.bind_tools(list(TOOLS.values()), **hostile)
    assert err.value.field == field
    before = len(upstream.requests)
    with pytest.raises(UnsupportedFieldError):  # ...and by the router when bound around bind_tools
        llm.bind_tools(list(TOOLS.values())).bind(**hostile).invoke(QUESTION)
    with pytest.raises(UnsupportedFieldError):
        llm.with_structured_output(Invoice, **hostile)
    assert len(upstream.requests) == before  # nothing was called


def test_non_function_tools_are_refused(sdk, upstream):
    llm, _ = sdk
    mcp = {"type": "mcp", "server_label": "x", "server_url": "http://127.0.0.1:9/mcp"}
    with pytest.raises(UnsupportedFieldError) as err:
        llm.bind_tools([mcp])
    assert err.value.field == "tools"
    before = len(upstream.requests)
    with pytest.raises(UnsupportedFieldError):
        llm.bind(tools=[mcp]).invoke(QUESTION)
    assert len(upstream.requests) == before


def test_sidecar_refuses_a_smuggled_field_from_chat_openai(sidecar, upstream):
    import openai
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="triage/agent", base_url=sidecar.url + "/v1", api_key=CLIENT_KEY, max_retries=0,
                     timeout=60, extra_body={"api_base": "http://127.0.0.1:9/v1"})
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as err:
        llm.bind_tools(list(TOOLS.values())).invoke(QUESTION)
    assert err.value.body["code"] == "unsupported_field" and err.value.body["param"] == "api_base"
    assert len(upstream.requests) == before


# -- a cascade whose cheap step calls a tool -------------------------------------------------------


def test_a_cascade_keeps_a_cheap_tool_call_and_streams_it_whole(upstream, tmp_path, monkeypatch):
    """Providers give logprobs for text only, so the cheap step's tool call has no tokens to judge.
    It is kept (not escalated as "empty"), and the replayed stream carries the tool call."""
    path = write_policy(tmp_path, upstream.base)
    raw = yaml.safe_load(path.read_text())
    raw["rule"] = {"type": "cascade", "start": "small", "escalate_to": "large", "max_mean_entropy": 1.0,
                   "min_token_logprob": -6.0, "first_k_tokens": 16, "top_logprobs": 2, "skip_threshold": 1.0}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv(KEY_ENV, "sk-scripted-upstream-key")
    router = Router.from_file(path, ledger=str(tmp_path / "ledger.sqlite"))
    try:
        bound = TriageChatModel(router=router).bind_tools(list(TOOLS.values()))
        first = len(upstream.requests)
        msg = bound.invoke(QUESTION)
        assert [c["name"] for c in msg.tool_calls] == ["lookup_price"]
        attempts = msg.response_metadata["triage"]["attempts"]
        assert [a["reason"] for a in attempts] == ["primary"], attempts
        assert [r["model"] for r in upstream.requests[first:]] == ["scripted-small"]

        chunks = list(bound.stream(QUESTION))
        merged = chunks[0]
        for c in chunks[1:]:
            merged = merged + c
        assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("lookup_price", {"item": "widget"})]
        assert merged.response_metadata["finish_reason"] == "tool_calls"
    finally:
        router.close()
