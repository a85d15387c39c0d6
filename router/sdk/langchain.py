"""LangChain chat model: ``TriageChatModel`` routes every call through a Triage policy.

    from triage.router.sdk.langchain import TriageChatModel
    llm = TriageChatModel(policy="policies/examples/local.yaml")
    msg = llm.invoke("What is 2 + 2?")
    msg.response_metadata["triage"]["decision"]["tier"]   # the decision and attempts
    msg.usage_metadata                                     # input/output/total tokens

invoke / stream / batch and ainvoke / astream / abatch all work (batch runs through LangChain's
default executor over invoke). The decision travels in ``response_metadata["triage"]`` (for a
stream: on the last chunk, so it is in the merged message too).

Tools and structured output work as with ``langchain-openai``'s ChatOpenAI (``bind_tools``,
``with_structured_output``; :mod:`triage.router.sdk.langchain_tools`): answers carry
``tool_calls`` (streams: ``tool_call_chunks``), and AIMessage tool calls / ToolMessages in the
history go back to the model as OpenAI ``tool_calls`` / ``role: tool`` messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr

from triage.router.core.router import Router
from triage.router.sdk.langchain_tools import (
    StructuredMethod,
    ToolLike,
    openai_messages,
    parse_tool_calls,
    structured_output,
    tool_bindings,
    tool_call_chunks,
)


def _usage(info: dict[str, Any]) -> UsageMetadata | None:
    if info.get("prompt_tokens") is None and info.get("completion_tokens") is None:
        return None
    inp, out = int(info.get("prompt_tokens") or 0), int(info.get("completion_tokens") or 0)
    usage = UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)
    if info.get("reasoning_tokens"):
        usage["output_token_details"] = {"reasoning": int(info["reasoning_tokens"])}
    return usage


def _metadata(info: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {"triage": info, "model_name": info.get("model"), "finish_reason": finish_reason,
            "request_id": info.get("request_id")}


class TriageChatModel(BaseChatModel):
    """A LangChain chat model whose model, prompt and budget are chosen per query by a Triage policy."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: str | None = Field(default=None, description="Policy YAML path (default: the local policy).")
    router: Router | None = Field(default=None, exclude=True, description="A router to use instead of `policy`.")
    max_tokens: int | None = Field(default=None, description="Caps every answer (tightens the strategy's budget).")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra litellm arguments.")
    _router: Router | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "triage"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"policy": self.policy or "default", "max_tokens": self.max_tokens}

    def _get_router(self) -> Router:
        if self.router is not None:
            return self.router
        if self._router is None:
            from triage.router.sdk.completion import get_router

            self._router = get_router(self.policy)
        return self._router

    def _call_kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.model_kwargs)
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        if stop:
            out["stop"] = stop
        out.update(kwargs)
        return out

    def bind_tools(self, tools: Sequence[ToolLike], *, tool_choice: dict[str, Any] | str | bool | None = None,
                   strict: bool | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (dicts, pydantic classes, functions, BaseTools) as ChatOpenAI does.

        ``tool_choice``: a tool's name, ``"auto"``, ``"none"``, ``"required"``/``"any"``/``True``, or an
        OpenAI dict. Other ``kwargs`` must be OpenAI chat fields (``parallel_tool_calls``...): a field
        the router refuses (``api_base``, ``fallbacks``...) raises UnsupportedFieldError here.
        """
        return self.bind(**tool_bindings(tools, tool_choice, strict, **kwargs))

    def with_structured_output(self, schema: Any = None, *, method: StructuredMethod = "function_calling",
                               include_raw: bool = False, strict: bool | None = None,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into ``schema`` (a pydantic class, TypedDict or JSON schema), as ChatOpenAI
        does: ``function_calling`` (a forced tool call), ``json_schema`` or ``json_mode``
        (``response_format``). ``include_raw=True`` gives ``{"raw", "parsed", "parsing_error"}``; the
        raw AIMessage keeps the decision in ``response_metadata["triage"]``."""
        return structured_output(self, schema, method=method, include_raw=include_raw, strict=strict, kwargs=kwargs)

    @staticmethod
    def _result(response: Any) -> ChatResult:
        info = response._hidden_params["triage"]
        choice = response.choices[0]
        calls, invalid = parse_tool_calls(getattr(choice.message, "tool_calls", None))
        message = AIMessage(content=choice.message.content or "", tool_calls=calls, invalid_tool_calls=invalid,
                            response_metadata=_metadata(info, choice.finish_reason),
                            usage_metadata=_usage(info), id=info.get("request_id"))
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"triage": info})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        response = self._get_router().completion(messages=openai_messages(messages),
                                                 **self._call_kwargs(stop, kwargs))
        return self._result(response)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        response = await self._get_router().acompletion(messages=openai_messages(messages),
                                                        **self._call_kwargs(stop, kwargs))
        return self._result(response)

    @staticmethod
    def _piece(chunk: Any) -> tuple[AIMessageChunk | None, str | None]:
        """The message piece of a stream chunk (None when it has no text and no tool call) and its finish reason."""
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            return None, None
        delta = getattr(choices[0], "delta", None)
        text = getattr(delta, "content", None) or ""
        calls = tool_call_chunks(delta)
        piece = AIMessageChunk(content=text, tool_call_chunks=calls) if text or calls else None
        return piece, getattr(choices[0], "finish_reason", None)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = self._get_router().completion(messages=openai_messages(messages), stream=True,
                                               **self._call_kwargs(stop, kwargs))
        finish = None
        for chunk in stream:
            piece, reason = self._piece(chunk)
            finish = reason or finish
            if piece is not None:
                out = ChatGenerationChunk(message=piece)
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece.text, chunk=out)
                yield out
        info = stream.triage
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=_metadata(info, finish),
                                                         usage_metadata=_usage(info), chunk_position="last"))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        stream = await self._get_router().acompletion(messages=openai_messages(messages), stream=True,
                                                      **self._call_kwargs(stop, kwargs))
        finish = None
        async for chunk in stream:
            piece, reason = self._piece(chunk)
            finish = reason or finish
            if piece is not None:
                out = ChatGenerationChunk(message=piece)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece.text, chunk=out)
                yield out
        info = stream.triage
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=_metadata(info, finish),
                                                         usage_metadata=_usage(info), chunk_position="last"))
