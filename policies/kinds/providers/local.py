"""The ``local`` litellm provider: local causal LMs (transformers, CPU) behind ``litellm.completion``.

    from triage.policies.kinds.providers.local import register_local_provider
    register_local_provider()
    litellm.completion(model="local/smollm2-135m", messages=[...], max_tokens=16, temperature=0)

Supported: chat template, ``max_tokens``/``max_completion_tokens``, ``temperature`` (0 = greedy),
``top_p``, ``stop``, ``seed``, ``logprobs``/``top_logprobs`` (OpenAI format; each entry also carries
the exact ``entropy`` in nats), streaming, async, usage counts. ``finish_reason`` is ``"length"``
when ``max_tokens`` cut the answer. Other OpenAI parameters (``reasoning_effort``, penalties, ...)
are accepted and ignored; ``n > 1`` and tools are refused.

The model comes from :func:`triage.lm.get_local_lm`, shared with the difficulty probe: when the
probe has just run ``prefill`` on the same messages, generation continues from that KV cache.
``response._hidden_params["local"]`` reports ``prefill_reused``, ``model_sha256`` and timings.

litellm is imported here (with its cost map read from the installed package: there is no
network); torch is not imported until a request arrives.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm.types.utils import (  # noqa: E402
    ChatCompletionTokenLogprob,
    ChoiceLogprobs,
    Delta,
    GenericStreamingChunk,
    ModelResponse,
    ModelResponseStream,
    StreamingChoices,
    TopLogprob,
    Usage,
)

from triage.lm.specs import (  # noqa: E402
    MODEL_SPECS,
    GenerationTimeoutError,
    LocalModelError,
    ModelLoadError,
    PromptTooLongError,
    UnknownLocalModelError,
)
from triage.lm.types import GenerationResult, TokenInfo  # noqa: E402
from triage.policies.kinds.providers.base import ThreadedProvider, final_chunk, register_provider  # noqa: E402

PROVIDER = "local"

# OpenAI parameters we cannot honour and must not silently drop.
_REFUSED = ("tools", "functions", "tool_choice", "function_call", "response_format")


class _Request:
    """The generation parameters of one request, validated."""

    def __init__(self, optional_params: dict[str, Any], timeout: Any) -> None:
        p = optional_params or {}
        for key in _REFUSED:
            if p.get(key):
                raise LocalModelError(f"the local provider does not support {key!r}")
        n = p.get("n")
        if n not in (None, 1):
            raise LocalModelError(f"the local provider returns one choice; n={n!r} is not supported")
        self.max_tokens = p.get("max_tokens", p.get("max_completion_tokens"))
        self.temperature = p.get("temperature")
        self.top_p = p.get("top_p")
        self.stop = p.get("stop")
        self.seed = p.get("seed")
        top = p.get("top_logprobs")
        self.logprobs = bool(p.get("logprobs")) or bool(top)
        self.top_logprobs = top or 0  # validated by the runtime
        self.timeout_s = _timeout_seconds(timeout)

    def generation_kwargs(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "seed": self.seed,
            "top_logprobs": self.top_logprobs,
            "timeout_s": self.timeout_s,
        }


def _timeout_seconds(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)):
        return float(timeout)
    read = getattr(timeout, "read", None)  # httpx.Timeout
    return float(read) if isinstance(read, (int, float)) else None


def _map_error(exc: LocalModelError, model: str) -> Exception:
    """Our errors -> litellm's (OpenAI-compatible) exception types, message kept readable."""
    msg = str(exc)
    if isinstance(exc, UnknownLocalModelError):
        return litellm.NotFoundError(message=msg, model=model, llm_provider=PROVIDER)
    if isinstance(exc, PromptTooLongError):
        return litellm.ContextWindowExceededError(message=msg, model=model, llm_provider=PROVIDER)
    if isinstance(exc, GenerationTimeoutError):
        return litellm.Timeout(message=msg, model=model, llm_provider=PROVIDER)
    if isinstance(exc, ModelLoadError):
        return litellm.APIError(status_code=500, message=msg, llm_provider=PROVIDER, model=model)
    return litellm.BadRequestError(message=msg, model=model, llm_provider=PROVIDER)


def _token_logprob(t: TokenInfo) -> ChatCompletionTokenLogprob:
    return ChatCompletionTokenLogprob(
        token=t.token,
        logprob=t.logprob,
        bytes=list(t.token.encode("utf-8")),
        top_logprobs=[
            TopLogprob(token=a.token, logprob=a.logprob, bytes=list(a.token.encode("utf-8"))) for a in t.top_logprobs
        ],
        entropy=t.entropy,
    )


def _usage(result: GenerationResult) -> Usage:
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def _hidden(lm: Any, result: GenerationResult) -> dict[str, Any]:
    return {
        "model_sha256": lm.sha256,
        "prefill_reused": result.prefill_reused,
        "generation_seconds": round(result.seconds, 4),
        "tokens_per_second": round(result.completion_tokens / result.seconds, 2) if result.seconds > 0 else None,
    }


class LocalProvider(ThreadedProvider):
    """litellm ``CustomLLM`` serving :mod:`triage.lm` models (async: in a worker thread, see
    :class:`ThreadedProvider`). Register with :func:`register_local_provider`."""

    # -- shared -------------------------------------------------------------------------------

    def _open(self, model: str, messages: list, optional_params: dict, timeout: Any) -> tuple[Any, Any, _Request]:
        """Resolve, load (once per process) and validate; returns (lm, stream, request)."""
        from triage.lm.models import get_local_lm

        try:
            req = _Request(optional_params, timeout)
            lm = get_local_lm(model)
            stream = lm.stream(messages, **req.generation_kwargs())
        except LocalModelError as exc:
            raise _map_error(exc, model) from exc
        return lm, stream, req

    # -- sync ---------------------------------------------------------------------------------

    def completion(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: Any = None,
        client: Any = None,
    ) -> ModelResponse:
        lm, stream, req = self._open(model, messages, optional_params, timeout)
        try:
            for _ in stream:
                pass
        except LocalModelError as exc:
            raise _map_error(exc, model) from exc
        result = stream.result
        choice = model_response.choices[0]
        choice.message.content = result.text
        choice.finish_reason = result.finish_reason
        if req.logprobs:
            choice.logprobs = ChoiceLogprobs(content=[_token_logprob(t) for t in result.tokens])
        model_response.model = f"{PROVIDER}/{model}"
        model_response.created = int(time.time())
        setattr(model_response, "usage", _usage(result))
        model_response._hidden_params["local"] = _hidden(lm, result)
        return model_response

    def streaming(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: Any = None,
        client: Any = None,
    ) -> Iterator[ModelResponseStream]:
        # A plain function returning a generator: bad input raises here, at call time.
        lm, stream, req = self._open(model, messages, optional_params, timeout)
        return self._chunks(model, lm, stream, req)

    def _chunks(self, model: str, lm: Any, stream: Any, req: _Request) -> Iterator[ModelResponseStream | GenericStreamingChunk]:
        try:
            for event in stream:
                logprobs = None
                if req.logprobs and event.token is not None:
                    logprobs = ChoiceLogprobs(content=[_token_logprob(event.token)])
                if not event.text and logprobs is None:
                    continue
                yield ModelResponseStream(
                    model=f"{PROVIDER}/{model}",
                    choices=[StreamingChoices(index=0, delta=Delta(content=event.text, role="assistant"), logprobs=logprobs)],
                )
        except LocalModelError as exc:
            raise _map_error(exc, model) from exc
        result = stream.result
        yield final_chunk(result.finish_reason, result.prompt_tokens, result.completion_tokens,
                          {"local": _hidden(lm, result)})


def register_local_provider() -> LocalProvider:
    """Make ``local/<model>`` work in litellm (idempotent); returns the handler.

    Also registers the built-in local models in litellm's cost map at zero cost, so cost
    tracking knows them (a policy's price override applies on top).
    """
    return register_provider(PROVIDER, LocalProvider, after=_register_zero_cost_models_quietly)


def _register_zero_cost_models_quietly() -> None:
    # litellm warns that these zero-cost entries lack cache-token prices; they need none.
    lite_logger = logging.getLogger("LiteLLM")
    level = lite_logger.level
    lite_logger.setLevel(logging.ERROR)
    try:
        _register_zero_cost_models()
    finally:
        lite_logger.setLevel(level)


def _register_zero_cost_models() -> None:
    litellm.register_model(
        {
            f"{PROVIDER}/{name}": {
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
                "litellm_provider": PROVIDER,
                "mode": "chat",
            }
            for name in MODEL_SPECS
        }
    )
