"""The one base of Triage's litellm custom providers: registration and the threaded async side.

A provider implements litellm's sync ``completion`` and ``streaming``; :class:`ThreadedProvider`
runs them in a worker thread for ``acompletion``/``astreaming`` (local models are CPU-bound: the
event loop stays free). :class:`OneShotProvider` goes further for providers that compute the whole
answer at once: implement :meth:`OneShotProvider.answer`, and the response and the one-chunk stream
are built for you. :func:`register_provider` puts a handler into ``litellm.custom_provider_map``
once per provider name.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm import CustomLLM  # noqa: E402
from litellm.types.llms.openai import ChatCompletionUsageBlock  # noqa: E402
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage  # noqa: E402

H = TypeVar("H")
_register_lock = threading.Lock()


def register_provider(name: str, factory: Callable[[], H], after: Callable[[], None] | None = None) -> H:
    """Make ``<name>/<model>`` work in litellm (idempotent); returns the registered handler.

    ``after`` runs once, right after the first registration (e.g. cost-map entries).
    """
    with _register_lock:
        for item in litellm.custom_provider_map:
            if item.get("provider") == name:
                return item["custom_handler"]  # type: ignore[no-any-return]
        handler = factory()
        litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": name, "custom_handler": handler}]
        litellm.utils.custom_llm_setup()
        if after is not None:
            after()
        return handler


async def iterate_in_thread(chunks: Iterator[Any]) -> AsyncIterator[Any]:
    """Drive a blocking iterator from a worker thread, one item per await."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, chunks, done)
            if item is done:
                return
            yield item
    finally:
        try:
            chunks.close()  # type: ignore[attr-defined]
        except (ValueError, AttributeError):  # still running in its thread: it ends on its own
            pass


def final_chunk(finish_reason: str, prompt_tokens: int, completion_tokens: int, hidden: dict[str, Any],
                text: str = "") -> GenericStreamingChunk:
    """A stream's last chunk, in litellm's generic dict form: the form whose ``usage`` litellm keeps
    (a ModelResponseStream without content is swallowed with its usage). ``hidden`` reaches the
    router as the chunk's ``provider_specific_fields`` (e.g. the per-model token split)."""
    return GenericStreamingChunk(
        text=text, tool_use=None, is_finished=True, finish_reason=finish_reason, index=0,
        usage=ChatCompletionUsageBlock(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                       total_tokens=prompt_tokens + completion_tokens),
        provider_specific_fields=dict(hidden),
    )


class ThreadedProvider(CustomLLM):
    """A ``CustomLLM`` whose async calls run its sync ``completion``/``streaming`` in a worker thread."""

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)

    def astreaming(self, model: str, messages: list, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        # ``streaming`` runs here, synchronously: litellm calls this from a worker thread, so bad
        # input (and a model load) raises before the stream is handed out.
        return iterate_in_thread(self.streaming(model, messages, *args, **kwargs))


@dataclass
class Answer:
    """A whole answer of a :class:`OneShotProvider`; ``hidden`` goes to ``_hidden_params`` (and,
    streamed, to the chunk's ``provider_specific_fields``), e.g. ``{"token_routing": {...}}``."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    hidden: dict[str, Any] = field(default_factory=dict)


class OneShotProvider(ThreadedProvider):
    """A provider that computes the whole answer, then returns it (streamed: as one chunk)."""

    provider: str = ""

    def answer(self, model: str, messages: list, optional_params: dict) -> Answer:
        raise NotImplementedError

    def completion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,  # type: ignore[override]
                   model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                   logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> ModelResponse:
        a = self.answer(model, messages, optional_params or {})
        choice = model_response.choices[0]
        choice.message.content = a.text  # type: ignore[union-attr]
        choice.finish_reason = a.finish_reason
        model_response.model = f"{self.provider}/{model}"
        model_response.created = int(time.time())
        setattr(model_response, "usage", Usage(prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens,
                                               total_tokens=a.prompt_tokens + a.completion_tokens))
        model_response._hidden_params.update(a.hidden)
        return model_response

    def streaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,  # type: ignore[override]
                  model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                  logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        a = self.answer(model, messages, optional_params or {})  # at call time: errors raise before streaming

        def chunks() -> Iterator[GenericStreamingChunk]:
            yield final_chunk(a.finish_reason, a.prompt_tokens, a.completion_tokens, a.hidden, text=a.text)

        return chunks()
