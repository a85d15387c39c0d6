"""Tool calling and structured output for :class:`~triage.router.sdk.langchain.TriageChatModel`.

Mirrors ``langchain-openai``'s ``ChatOpenAI`` (the same tool formats, ``tool_choice`` spellings and
``with_structured_output`` methods), so agent code written for it runs over a Triage policy. What
reaches the router is checked against the one allowlist of :mod:`triage.router.core.fields`: a
bound ``api_base``/``fallbacks``/``mcp`` tool is refused by name, at bind time and again by the
router on every call (a plain ``.bind(...)`` skips ``bind_tools``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, convert_to_openai_messages
from langchain_core.messages.tool import InvalidToolCall, ToolCall, ToolCallChunk, tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
    make_invalid_tool_call,
    parse_tool_call,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from triage.router.core.fields import INTERNAL_FIELDS, caller_fields

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool
StructuredMethod = Literal["function_calling", "json_mode", "json_schema"]
# LangChain's tracing key: popped by BaseChatModel before _generate/_stream, so it never reaches the router.
_LANGCHAIN_ONLY = frozenset({"ls_structured_output_format"})
_CHOICE_WORDS = frozenset({"auto", "none", "required"})


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


# -- binding ---------------------------------------------------------------------------------------


def tool_choice_of(tool_choice: Any, names: Sequence[str]) -> str | dict[str, Any] | None:
    """``tool_choice`` as OpenAI spells it, from ChatOpenAI's spellings: a tool's name, ``auto``,
    ``none``, ``required``/``any``/``True``, an OpenAI dict; ``None``/``False`` = the provider's default."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or tool_choice == "any":  # "any" is other providers' word for "required"
        return "required"
    if isinstance(tool_choice, str):
        if tool_choice in names:
            return {"type": "function", "function": {"name": tool_choice}}
        if tool_choice in _CHOICE_WORDS:
            return tool_choice
        # ChatOpenAI forwards an unknown name and the provider answers 400; saying so here is clearer.
        raise ValueError(f"tool_choice {tool_choice!r} names no bound tool (bound: {', '.join(names) or 'none'})")
    if isinstance(tool_choice, Mapping):
        return dict(tool_choice)
    raise ValueError(f"unrecognised tool_choice {tool_choice!r}: expected a str, a bool or a dict")


def tool_bindings(tools: Sequence[ToolLike], tool_choice: Any = None, strict: bool | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``bind_tools`` binds: OpenAI tools, the normalised ``tool_choice`` and
    ``kwargs``; raises :class:`~triage.router.core.fields.UnsupportedFieldError` on a field (or tool
    type) the router would refuse, so the mistake shows where it is made rather than on first use."""
    formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
    names = [f["function"]["name"] for f in formatted if isinstance(f.get("function"), Mapping)]
    out: dict[str, Any] = {"tools": formatted, **kwargs}
    choice = tool_choice_of(tool_choice, names)
    if choice is not None:
        out["tool_choice"] = choice
    caller_fields(out, internal=INTERNAL_FIELDS | _LANGCHAIN_ONLY)
    return out


# -- messages in and out ---------------------------------------------------------------------------


def openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages (tool calls and ToolMessages included) as OpenAI chat messages.

    An assistant turn that only calls tools gets ``content: null``, as ChatOpenAI sends it: some
    providers refuse an empty string next to ``tool_calls``.
    """
    out = convert_to_openai_messages(list(messages))
    for m in out:
        if m.get("role") == "assistant" and m.get("tool_calls") and not m.get("content"):
            m["content"] = None
    return out


def _raw_tool_call(raw: Any) -> dict[str, Any]:
    fn = _get(raw, "function")
    return {"id": _get(raw, "id"), "type": "function",
            "function": {"name": _get(fn, "name"), "arguments": _get(fn, "arguments") or ""}}


def parse_tool_calls(raw_calls: Sequence[Any] | None) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """An answer's ``tool_calls`` as LangChain tool calls; arguments that are not a JSON object
    become ``invalid_tool_calls`` (with the parse error) instead of failing the whole answer."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for raw in raw_calls or []:
        plain = _raw_tool_call(raw)
        try:
            parsed = parse_tool_call(plain, return_id=True)
        except Exception as exc:  # noqa: BLE001 - OutputParserException, or a name missing
            invalid.append(make_invalid_tool_call(plain, str(exc)))
            continue
        if parsed is not None:
            calls.append(parsed)  # type: ignore[arg-type]
    return calls, invalid


def tool_call_chunks(delta: Any) -> list[ToolCallChunk]:
    """A stream delta's tool-call pieces; LangChain joins chunks of the same ``index`` when merging."""
    out = []
    for i, raw in enumerate(_get(delta, "tool_calls") or []):
        fn = _get(raw, "function")
        index = _get(raw, "index")
        out.append(tool_call_chunk(name=_get(fn, "name"), args=_get(fn, "arguments"), id=_get(raw, "id"),
                                   index=index if isinstance(index, int) else i))
    return out


# -- structured output -----------------------------------------------------------------------------


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def response_format_of(schema: Any, strict: bool | None) -> dict[str, Any]:
    """A ``json_schema`` response format for a pydantic class, TypedDict or JSON schema (as ChatOpenAI
    builds it, but always a dict: the router forwards JSON fields, not classes)."""
    if isinstance(schema, Mapping) and schema.get("type") == "json_schema" and "json_schema" in schema:
        return dict(schema)
    if isinstance(schema, Mapping) and "name" in schema and "schema" in schema:
        return {"type": "json_schema", "json_schema": dict(schema)}
    if strict is None:
        strict = schema["strict"] if isinstance(schema, Mapping) and isinstance(schema.get("strict"), bool) else False
    function = convert_to_openai_function(schema, strict=strict)
    function["schema"] = function.pop("parameters")
    return {"type": "json_schema", "json_schema": function}


def structured_output(llm: Any, schema: Any, *, method: StructuredMethod, include_raw: bool,
                      strict: bool | None, kwargs: dict[str, Any]) -> Runnable[LanguageModelInput, Any]:
    """``with_structured_output`` for ``llm`` (a TriageChatModel): a bound model piped into the
    matching LangChain output parser; with ``include_raw`` a dict of ``raw``, ``parsed`` and
    ``parsing_error`` that never raises on a parse failure."""
    if schema is None and method != "json_mode":
        raise ValueError(f"schema must be specified when method is {method!r}")
    pydantic = _is_pydantic(schema)
    trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    parser: Runnable[Any, Any]
    if method == "function_calling":
        tool_name = convert_to_openai_tool(schema)["function"]["name"]
        bound = llm.bind_tools([schema], tool_choice=tool_name, parallel_tool_calls=False, strict=strict,
                               ls_structured_output_format=trace, **kwargs)
        parser = (PydanticToolsParser(tools=[schema], first_tool_only=True) if pydantic
                  else JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True))
    elif method == "json_schema":
        caller_fields(kwargs, internal=INTERNAL_FIELDS)
        bound = llm.bind(response_format=response_format_of(schema, strict),
                         ls_structured_output_format={**trace, "schema": convert_to_openai_tool(schema)}, **kwargs)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
    elif method == "json_mode":
        caller_fields(kwargs, internal=INTERNAL_FIELDS)
        bound = llm.bind(response_format={"type": "json_object"},
                         ls_structured_output_format={"kwargs": {"method": method}, "schema": schema}, **kwargs)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
    else:
        raise ValueError(f"unrecognised method {method!r}: use 'function_calling', 'json_schema' or 'json_mode'")
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
