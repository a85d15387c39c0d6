"""The default kind: a litellm model string (``openai/gpt-4o``, ``hosted_vllm/...``), served by litellm."""

from __future__ import annotations

from triage.policies.kinds.base import DEFAULT_KIND, KINDS, StrategyKind


@KINDS.register
class LitellmKind(StrategyKind):
    name = DEFAULT_KIND
    syntax = "<provider>/<model>"

    def startup_problem(self, model: str, *, installed: bool = False) -> str | None:
        # The check litellm.completion itself makes first, without calling anything.
        from triage.policies.pricing import import_litellm

        litellm = import_litellm()
        try:
            litellm.get_llm_provider(model=model)
        except Exception:  # noqa: BLE001 - litellm raises its BadRequestError (and others) for unknown names
            return (f"no provider serves {model!r}: prefix it with a litellm provider (e.g. "
                    f"openai/{model.split('/')[-1]}, anthropic/..., hosted_vllm/...) or use local/<name>")
        return None
