"""The ``token-routed`` litellm provider: R2R-style token-level routing over a local model pair.

    from triage.router.providers.token_routed import register_token_routed_provider
    register_token_routed_provider()
    litellm.completion(model="token-routed/qwen2.5-coder-0.5b+qwen2.5-coder-1.5b", messages=[...],
                       max_tokens=256, token_routing={"method": "token-router"})

The model string names the pair ``<small>+<large>`` (local models sharing a tokenizer, see
:mod:`triage.token_router.pair`); ``token_routing`` (optional) picks the controller: ``method``
(``token-router``, ``entropy-threshold``, ``speculative-thinking``, ``small-only``, ``large-only``),
``threshold``, ``tau``, ``head``. Decoding is greedy (the router's labels were made greedily), so a
``temperature`` is accepted and ignored. ``response._hidden_params["token_routing"]`` carries the
tokens written by each model, which the router copies into the ledger record.

Streaming yields the whole answer in one chunk after decoding: the hand-off loop keeps both KV
caches in step, and it is not worth interleaving with an event loop for a CPU-bound local pair.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.llms.openai import ChatCompletionUsageBlock
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage

from triage.router.providers.local import _iterate_in_thread

PROVIDER = "token-routed"
DEFAULT_MAX_TOKENS = 256


def parse_pair(model: str) -> tuple[str, str]:
    """``small+large`` -> (small, large); a clear error for anything else."""
    small, sep, large = model.partition("+")
    if not sep or not small.strip() or not large.strip():
        raise litellm.BadRequestError(
            message=f"token-routed model must be '<small>+<large>' (local model names), got {model!r}",
            model=model, llm_provider=PROVIDER)
    return small.strip(), large.strip()


class TokenRoutedProvider(CustomLLM):
    """litellm ``CustomLLM`` running :class:`triage.token_router.runner.TokenRoutedExecutor`."""

    def __init__(self) -> None:
        super().__init__()
        self._executors: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()  # one decode at a time: the pair's KV caches are not shared state

    def _executor(self, model: str, options: dict[str, Any]) -> Any:
        from pydantic import ValidationError

        from triage.token_router.runner import TokenRoutingConfig

        small, large = parse_pair(model)
        try:
            cfg = TokenRoutingConfig(small=small, large=large, **(options or {}))
        except (ValidationError, TypeError) as exc:
            raise litellm.BadRequestError(message=f"bad token_routing options: {exc}", model=model,
                                          llm_provider=PROVIDER) from exc
        key = (cfg.small, cfg.large, cfg.method, cfg.threshold, cfg.tau, str(cfg.head))
        if key not in self._executors:
            self._executors[key] = cfg.executor()
        return self._executors[key]

    def _run(self, model: str, messages: list, optional_params: dict) -> Any:
        p = optional_params or {}
        max_tokens = p.get("max_tokens") or p.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        with self._lock:
            executor = self._executor(model, p.get("token_routing") or {})
            try:
                return executor.complete(messages, max_tokens=int(max_tokens))
            except FileNotFoundError as exc:  # router head or model files missing: say which command makes them
                raise litellm.APIError(status_code=500, message=str(exc), llm_provider=PROVIDER, model=model) from exc

    @staticmethod
    def _hidden(r: Any) -> dict[str, Any]:
        return {"method": r.method, "small_model": r.small_model, "large_model": r.large_model,
                "small_tokens": r.small_tokens, "large_tokens": r.large_tokens,
                "large_token_fraction": r.large_tokens / max(1, r.completion_tokens),
                "decode_seconds": round(r.latency_s, 4), "params": r.params}

    def completion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,  # type: ignore[override]
                   model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                   logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> ModelResponse:
        r = self._run(model, messages, optional_params)
        choice = model_response.choices[0]
        choice.message.content = r.text
        choice.finish_reason = r.finish_reason
        model_response.model = f"{PROVIDER}/{model}"
        model_response.created = int(time.time())
        setattr(model_response, "usage", Usage(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                                               total_tokens=r.prompt_tokens + r.completion_tokens))
        model_response._hidden_params["token_routing"] = self._hidden(r)
        return model_response

    def streaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,  # type: ignore[override]
                  model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                  logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        r = self._run(model, messages, optional_params)

        def chunks() -> Iterator[GenericStreamingChunk]:
            yield GenericStreamingChunk(
                text=r.text, tool_use=None, is_finished=True, finish_reason=r.finish_reason, index=0,
                usage=ChatCompletionUsageBlock(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                                               total_tokens=r.prompt_tokens + r.completion_tokens),
                provider_specific_fields={"token_routing": self._hidden(r)},
            )

        return chunks()

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)

    def astreaming(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _iterate_in_thread(self.streaming(model, messages, *args, **kwargs))


_register_lock = threading.Lock()


def register_token_routed_provider() -> TokenRoutedProvider:
    """Make ``token-routed/<small>+<large>`` work in litellm (idempotent); returns the handler."""
    with _register_lock:
        for item in litellm.custom_provider_map:
            if item.get("provider") == PROVIDER:
                return item["custom_handler"]  # type: ignore[return-value]
        handler = TokenRoutedProvider()
        litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": PROVIDER, "custom_handler": handler}]
        litellm.utils.custom_llm_setup()
        return handler
