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
        envs = [(f"strategy '{strategy.name}'", strategy.api_key_env)] + [
            (f"strategy '{strategy.name}' (deployment {i})", d.api_key_env)
            for i, d in enumerate(strategy.deployments or [])]
        for where, env in envs:
            if env is None:
                continue
            value = os.environ.get(env)
            if not value:
                raise ConfigError(
                    f"policy '{policy.name}': {where} reads its API key from the environment "
                    f"variable {env} (api_key_env), which is not set; set it, or remove api_key_env")
            register_secret(value)
    # Strategies without api_key_env (and litellm itself) read the providers' default variables.
    register_env_secrets()


def register_settings_secrets(settings: Any) -> None:
    """Register the secrets of sidecar settings (the ledger URL's password, the decision-token
    HMAC key) for scrubbing."""
    register_url_secret(getattr(settings, "ledger_url", None))
    token_secret = getattr(settings, "decision_token_secret", None)
    if token_secret is not None:
        register_secret(token_secret.get_secret_value())
    register_env_secrets()


# -- models ------------------------------------------------------------------------------------------
# A strategy whose model no provider serves used to load fine and fail every request (502). The names
# are checked when a Router is built (and `triage serve` starts), each by its strategy kind
# (triage.policies.kinds): `local/NAME` must be a registered local model (or a path to one),
# `token-routed/SMALL+LARGE` two of them, anything else a name litellm maps to a provider (the check
# litellm.completion itself makes first, without calling anything).


def model_problem(model: str, *, installed: bool = False) -> str | None:
    """Why ``model`` cannot be called, or None. ``installed`` also requires a registered local
    model's package (a missing one makes every call fail, but deciding and replay need no model)."""
    from triage.policies.kinds.base import kind_of

    return kind_of(model).startup_problem(model, installed=installed)


def check_policy_models(policy: Policy, *, installed: bool = False) -> None:
    """Raise :class:`ConfigError` naming the first strategy whose model cannot be called."""
    for strategy in policy.strategies.values():
        overrides = [d.model for d in strategy.deployments or [] if d.model is not None]
        for model in [strategy.model, *overrides]:
            problem = model_problem(model, installed=installed)
            if problem is not None:
                raise ConfigError(f"policy '{policy.name}': strategy '{strategy.name}': {problem}")
