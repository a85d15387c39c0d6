"""The request loops: sync and async, streamed and not, over one :class:`Execution`.

Each loop only makes the calls (through litellm, or the direct OpenAI-compatible client for the
strategies that take it: :mod:`triage.router.providers.openai_direct`) and writes the ledger
record; the execution builds the arguments,
reads what came back, advances the plan and keeps the books. The record is written before the
answer (or the error) reaches the caller.
"""

from __future__ import annotations

from typing import Any

from triage.router.core.execution import Execution
from triage.router.providers import openai_direct
from triage.router.core.streaming import EMPTY, AsyncTriageStream, AWrite, TriageStream, Write, replay_chunks


def _close_quietly(inner: Any) -> None:
    closer = getattr(inner, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception:  # noqa: BLE001 - abandoning a failed stream
            pass


async def _aclose_quietly(inner: Any) -> None:
    closer = getattr(inner, "aclose", None)
    if callable(closer):
        try:
            await closer()
        except Exception:  # noqa: BLE001
            pass


def _api(ex: Execution, litellm: Any) -> Any:
    """What makes the call just begun: the direct OpenAI-compatible client, or litellm."""
    return openai_direct if ex.direct else litellm


def run(ex: Execution, litellm: Any, write: Write) -> Any:
    """A non-streamed request: the final response (its receipt in ``_hidden_params["triage"]``)."""
    while True:
        kwargs = ex.begin()
        try:
            response = _api(ex, litellm).completion(**kwargs)
        except Exception as exc:  # noqa: BLE001 - classified by the execution
            raised = ex.failed(exc)
            if raised is None:
                continue
            write(ex.record())
            raise raised  # noqa: B904 - chained to the provider error implicitly
        if ex.answered(response):
            write(ex.record())
            return response


async def arun(ex: Execution, litellm: Any, awrite: AWrite) -> Any:
    """Async :func:`run`."""
    while True:
        kwargs = ex.begin()
        try:
            response = await _api(ex, litellm).acompletion(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raised = ex.failed(exc)
            if raised is None:
                continue
            await awrite(ex.record())
            raise raised  # noqa: B904
        if ex.answered(response):
            await awrite(ex.record())
            return response


def _until_answer(ex: Execution, inner: Any) -> list[Any]:
    """Chunks up to the first that carries a choice: until then a failure can still fall back."""
    pending = []
    for chunk in inner:
        pending.append(chunk)
        if ex.has_answer(chunk):
            return pending
    raise ex.empty_stream()


async def _auntil_answer(ex: Execution, inner: Any) -> list[Any]:
    pending = []
    async for chunk in inner:
        pending.append(chunk)
        if ex.has_answer(chunk):
            return pending
    raise ex.empty_stream()


def open_stream(ex: Execution, litellm: Any, write: Write) -> TriageStream:
    """A streamed request, opened: fallback happens before the first chunk with an answer."""
    while True:
        kwargs = ex.begin()
        inner: Any = None
        try:
            if not kwargs.get("stream"):  # a cascade's cheap step: judged on its whole answer
                response = _api(ex, litellm).completion(**kwargs)
            else:
                inner = _api(ex, litellm).completion(**kwargs)
                first = _until_answer(ex, inner)
        except Exception as exc:  # noqa: BLE001
            if inner is not None:
                _close_quietly(inner)
            raised = ex.failed(exc)
            if raised is None:
                continue
            write(ex.record())
            raise raised  # noqa: B904
        if inner is not None:
            return TriageStream(ex, inner, first, write)
        if ex.answered(response):
            write(ex.record())
            return TriageStream(ex, EMPTY, replay_chunks(response), write)


async def aopen_stream(ex: Execution, litellm: Any, awrite: AWrite) -> AsyncTriageStream:
    """Async :func:`open_stream`."""
    while True:
        kwargs = ex.begin()
        inner: Any = None
        try:
            if not kwargs.get("stream"):
                response = await _api(ex, litellm).acompletion(**kwargs)
            else:
                inner = await _api(ex, litellm).acompletion(**kwargs)
                first = await _auntil_answer(ex, inner)
        except Exception as exc:  # noqa: BLE001
            if inner is not None:
                await _aclose_quietly(inner)
            raised = ex.failed(exc)
            if raised is None:
                continue
            await awrite(ex.record())
            raise raised  # noqa: B904
        if inner is not None:
            return AsyncTriageStream(ex, inner, first, awrite)
        if ex.answered(response):
            await awrite(ex.record())
            return AsyncTriageStream(ex, EMPTY, replay_chunks(response), awrite)
