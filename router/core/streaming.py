"""Streams: ``router.completion(..., stream=True)`` returns an iterator of litellm chunks.

The stream classes only move chunks; their :class:`~triage.router.core.execution.Execution` tallies each
chunk, decides whether the caller gets it (the usage-only final chunk only on
``stream_options.include_usage``), fills the receipt and builds the ledger record when the stream
ends, fails or is closed by the caller. The receipt is ``stream.triage`` (also
``chunk._hidden_params["triage"]`` on every chunk), complete once the stream has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from triage.router.core.execution import Execution

Write = Callable[[Any], Any]
AWrite = Callable[[Any], Awaitable[Any]]


def replay_chunks(response: Any) -> list[Any]:
    """A finished answer as two litellm stream chunks (text, then finish reason and usage)."""
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

    from triage.router.core.calls import _get, message_text, tool_calls_of

    choice = response.choices[0]
    # Tool calls travel whole in the first chunk (index per call, as OpenAI streams them).
    calls = [{"index": i, "id": _get(c, "id"), "type": "function",
              "function": {"name": _get(_get(c, "function"), "name"),
                           "arguments": _get(_get(c, "function"), "arguments") or ""}}
             for i, c in enumerate(tool_calls_of(response))]
    delta = Delta(content=message_text(response) or (None if calls else ""), role="assistant",
                  tool_calls=calls or None)
    first = ModelResponseStream(id=response.id, model=response.model, created=response.created,
                                choices=[StreamingChoices(index=0, delta=delta)])
    last = ModelResponseStream(id=response.id, model=response.model, created=response.created,
                               choices=[StreamingChoices(index=0, delta=Delta(), finish_reason=choice.finish_reason)])
    if getattr(response, "usage", None) is not None:
        last.usage = response.usage
    return [first, last]


class _StreamBase:
    def __init__(self, execution: Execution, inner: Any, first: list[Any]) -> None:
        self._ex = execution
        self._inner = inner
        self._buffer = list(first)
        self._recorded = execution.done  # a replayed answer was recorded when the stream opened

    @property
    def triage(self) -> dict[str, Any]:
        """The receipt (complete once the stream has ended)."""
        return self._ex.receipt

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return self._ex.text

    @property
    def strategy(self) -> str:
        """The strategy whose answer this stream carries."""
        return self._ex.strategy

    @property
    def request_id(self) -> str:
        return self._ex.request_id


class TriageStream(_StreamBase, Iterator[Any]):
    """Iterator of litellm ``ModelResponseStream`` chunks; ``.triage`` is the receipt."""

    def __init__(self, execution: Execution, inner: Iterator[Any], first: list[Any], write: Write) -> None:
        super().__init__(execution, inner, first)
        self._write = write

    def __iter__(self) -> "TriageStream":
        return self

    def __next__(self) -> Any:
        while True:
            if self._buffer:
                chunk = self._buffer.pop(0)
            else:
                try:
                    chunk = next(self._inner)
                except StopIteration:
                    self._end(None)
                    raise
                except Exception as exc:  # noqa: BLE001 - classified by the execution
                    raised = self._end(exc)
                    if raised is None or raised is exc:
                        raise
                    raise raised from exc
            if self._ex.see(chunk):
                return chunk

    def _end(self, error: BaseException | None) -> BaseException | None:
        raised = self._ex.stream_ended(error)
        if not self._recorded:
            self._recorded = True
            self._write(self._ex.record())
        return raised

    def close(self) -> None:
        """Stop early (the caller is gone): the partial answer is recorded."""
        closer = getattr(self._inner, "close", None)
        if callable(closer):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort on a stream being abandoned
                pass
        self._end(None)


class AsyncTriageStream(_StreamBase, AsyncIterator[Any]):
    """Async iterator of litellm chunks; ``.triage`` is the receipt."""

    def __init__(self, execution: Execution, inner: Any, first: list[Any], awrite: AWrite) -> None:
        super().__init__(execution, inner, first)
        self._awrite = awrite

    def __aiter__(self) -> "AsyncTriageStream":
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._buffer:
                chunk = self._buffer.pop(0)
            else:
                try:
                    chunk = await self._inner.__anext__()
                except StopAsyncIteration:
                    await self._end(None)
                    raise
                except Exception as exc:  # noqa: BLE001
                    raised = await self._end(exc)
                    if raised is None or raised is exc:
                        raise
                    raise raised from exc
            if self._ex.see(chunk):
                return chunk

    async def _end(self, error: BaseException | None) -> BaseException | None:
        raised = self._ex.stream_ended(error)
        if not self._recorded:
            self._recorded = True
            await self._awrite(self._ex.record())
        return raised

    async def aclose(self) -> None:
        closer = getattr(self._inner, "aclose", None)
        if callable(closer):
            try:
                await closer()
            except Exception:  # noqa: BLE001
                pass
        await self._end(None)


class _Empty:
    """An iterator with nothing left, usable sync and async."""

    def __iter__(self) -> "_Empty":
        return self

    def __next__(self) -> Any:
        raise StopIteration

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


EMPTY = _Empty()
