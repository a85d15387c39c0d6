"""The ``token-routed`` litellm provider: R2R-style token-level routing over a local model pair.

    from triage.policies.kinds.providers.token_routed import register_token_routed_provider
    register_token_routed_provider()
    litellm.completion(model="token-routed/qwen2.5-coder-0.5b+qwen2.5-coder-1.5b", messages=[...],
                       max_tokens=256, token_routing={"method": "token-router"})

The model string names the pair ``<small>+<large>`` (local models sharing a tokenizer, see
:mod:`triage.token_router.pair`); ``token_routing`` (optional) picks the controller: ``method``
(``token-router``, ``entropy-threshold``, ``speculative-thinking``, ``small-only``, ``large-only``),
``threshold``, ``tau``, ``head``. Decoding is greedy (the router's labels were made greedily), so a
``temperature`` is accepted and ignored. ``response._hidden_params["token_routing"]`` carries the
tokens written by each model, which the router copies into the ledger record.

Streaming yields each token's text as the pair produces it (async: driven from a worker thread,
:func:`~triage.policies.kinds.providers.base.iterate_in_thread`); the last chunk carries the usage
and the per-model split, so a streamed call reaches the ledger with the same receipt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import litellm
from litellm.types.utils import Delta, ModelResponse, ModelResponseStream, StreamingChoices

from triage.policies.kinds.providers.base import Answer, OneShotProvider, final_chunk, register_provider

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


class TokenRoutedProvider(OneShotProvider):
    """litellm ``CustomLLM`` running :class:`triage.token_router.runner.TokenRoutedExecutor`."""

    provider = PROVIDER

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

    def answer(self, model: str, messages: list, optional_params: dict) -> Answer:
        p = optional_params
        with self._lock:
            executor = self._executor(model, p.get("token_routing") or {})
            try:
                r = executor.complete(messages, max_tokens=_max_tokens(p))
            except FileNotFoundError as exc:  # router head or model files missing: say which command makes them
                raise _missing(exc, model) from exc
        return Answer(text=r.text, finish_reason=r.finish_reason, prompt_tokens=r.prompt_tokens,
                      completion_tokens=r.completion_tokens, hidden={"token_routing": _hidden(r)})

    def streaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,  # type: ignore[override]
                  model_response: ModelResponse, print_verbose: Any, encoding: Any, api_key: Any,
                  logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Iterator[Any]:
        p = optional_params or {}
        with self._lock:  # bad input and missing files raise here, at call time
            executor = self._executor(model, p.get("token_routing") or {})
            try:
                pair, stream = executor.stream(messages, max_tokens=_max_tokens(p))
            except FileNotFoundError as exc:
                raise _missing(exc, model) from exc
        return self._chunks(model, executor, pair, stream)

    def _chunks(self, model: str, executor: Any, pair: Any, stream: Any) -> Iterator[Any]:
        # The pair's KV caches are one decode's state: the lock is held while this stream decodes
        # (a consumer that stops early closes the generator, which releases it).
        with self._lock:
            for event in stream:
                if event.text:
                    yield ModelResponseStream(
                        model=f"{PROVIDER}/{model}",
                        choices=[StreamingChoices(index=0, delta=Delta(content=event.text, role="assistant"))],
                    )
            r = executor.response(pair, stream)
        yield final_chunk(r.finish_reason, r.prompt_tokens, r.completion_tokens, {"token_routing": _hidden(r)})


def _max_tokens(p: dict[str, Any]) -> int:
    return int(p.get("max_tokens") or p.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)


def _missing(exc: FileNotFoundError, model: str) -> Exception:
    return litellm.APIError(status_code=500, message=str(exc), llm_provider=PROVIDER, model=model)


def _hidden(r: Any) -> dict[str, Any]:
    return {"method": r.method, "small_model": r.small_model, "large_model": r.large_model,
            "small_tokens": r.small_tokens, "large_tokens": r.large_tokens,
            "large_token_fraction": r.large_tokens / max(1, r.completion_tokens),
            "decode_seconds": round(r.latency_s, 4), "params": r.params}


def register_token_routed_provider() -> TokenRoutedProvider:
    """Make ``token-routed/<small>+<large>`` work in litellm (idempotent); returns the handler."""
    return register_provider(PROVIDER, TokenRoutedProvider)
