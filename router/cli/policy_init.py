"""`triage policy init`: a commented starter policy for the user's own cheap and strong models.

The file is rendered from a template (comments are the point: a user edits it), loaded with the
real policy loader and model checks from a temporary file beside the target, and only then moved
into place, so a refused model or option never leaves a half-written policy behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from triage.errors import ConfigError

# Where litellm looks for each provider's key (its own defaults), for the `api_key_env` guess.
PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY", "text-completion-openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_API_KEY", "gemini": "GEMINI_API_KEY", "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY", "together_ai": "TOGETHERAI_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY", "fireworks_ai": "FIREWORKS_AI_API_KEY", "cohere": "COHERE_API_KEY",
    "cohere_chat": "COHERE_API_KEY", "xai": "XAI_API_KEY", "perplexity": "PERPLEXITYAI_API_KEY",
    "deepinfra": "DEEPINFRA_API_KEY", "cerebras": "CEREBRAS_API_KEY", "huggingface": "HF_TOKEN",
}
# Kinds that run on this machine: no key.
LOCAL_PREFIXES = ("local/", "token-routed/")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./:@+\-]*$")


@dataclass
class StrategySpec:
    model: str
    key_env: str | None
    api_base: str | None
    max_tokens: int


def _yaml_str(value: str) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted (JSON strings are valid YAML)."""
    return value if _PLAIN.match(value) and value.lower() not in ("null", "true", "false", "yes", "no", "on", "off") \
        else json.dumps(value)


def guess_key_env(model: str) -> str | None:
    """The variable litellm reads for ``model``'s provider; None for local models and unknown providers."""
    if model.startswith(LOCAL_PREFIXES):
        return None
    provider = model.split("/", 1)[0] if "/" in model else None
    if provider is None or provider not in PROVIDER_KEY_ENV:
        from triage.policies.pricing import import_litellm

        try:  # unprefixed names litellm knows (gpt-4o -> openai)
            provider = import_litellm().get_llm_provider(model=model)[1]
        except Exception:  # noqa: BLE001 - litellm raises its own errors for names it cannot place
            return None
    return PROVIDER_KEY_ENV.get(provider or "")


def _strategy_block(name: str, role: str, s: StrategySpec, on_truncation: str) -> str:
    if s.key_env:
        key = (f"    api_key_env: {s.key_env}   # environment variable holding the key (never the key "
               "itself: this file can be committed)\n")
    elif s.model.startswith(LOCAL_PREFIXES):
        key = "    # api_key_env: not needed, the model runs on this machine\n"
    else:
        key = "    # api_key_env: NAME_OF_ENV_VAR   # set it if this endpoint needs a key\n"
    base = (f"    api_base: {_yaml_str(s.api_base)}   # OpenAI-compatible or self-hosted endpoint\n"
            if s.api_base else "")
    return (
        f"  {name}:   # {role}\n"
        f"    model: {_yaml_str(s.model)}   # litellm model string (provider/model) or local/<name>\n"
        f"{key}{base}"
        "    temperature: 0.0   # sampling temperature (0 = as deterministic as the provider allows)\n"
        f"    max_tokens: {s.max_tokens}   # completion token budget of one answer\n"
        f"    on_truncation: {on_truncation}   # an answer cut at max_tokens: accept | retry (retry_max_tokens) "
        "| escalate (to the next harder tier's strategy)\n"
        "    timeout_s: 60   # per-call timeout in seconds\n"
        "    # price: {input_per_mtok: 0.15, output_per_mtok: 0.6}   # USD per million tokens; default: "
        "litellm's cost map\n"
    )


def render_policy(name: str, cheap: StrategySpec, strong: StrategySpec) -> str:
    """The starter policy YAML, every field explained by a comment."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return (
        f"# Triage policy written by `triage policy init` on {stamp}.\n"
        "# For every query the probe estimates how hard it is (tier easy / normal / hard); `rule` turns\n"
        "# that estimate into a tier, `tiers` maps the tier to a strategy, and the strategy says which\n"
        "# model answers and how. Every field: `triage policy schema`. Check edits: `triage policy validate`.\n"
        f"name: {_yaml_str(name)}   # the sidecar serves it as model=\"triage/{name}\"\n"
        "version: 1   # bump it when you edit the file: the ledger records it with every request\n"
        f"description: {json.dumps(f'{cheap.model} for easy and normal queries, {strong.model} for hard ones.')}\n"
        "probe: default   # the difficulty probe: `default` (bundled, offline) or a trained probe's folder\n"
        "strategies:   # ways of answering; the names are yours\n"
        + _strategy_block("cheap", "most queries", cheap, "escalate")
        + _strategy_block("strong", "the hard ones", strong, "accept")
        + "tiers:   # which strategy answers each tier\n"
        "  easy: cheap\n"
        "  normal: cheap\n"
        "  hard: strong\n"
        "rule:   # from the probe's tier probabilities to a tier\n"
        "  type: thresholds   # hard when P(hard) >= hard; else normal when P(normal) + P(hard) >= normal\n"
        "  thresholds:   # starting values; fit them to your traffic with `triage policy calibrate`\n"
        "    normal: 0.5\n"
        "    hard: 0.5\n"
        "fallback: [cheap, strong]   # when a strategy's provider fails (timeout, 5xx, bad key), the next of\n"
        "                            # these answers (the failing one is skipped)\n"
    )


def write_policy(out: Path, text: str, *, force: bool) -> None:
    """Validate ``text`` as a policy file with the real loader and model checks, then put it at ``out``.

    ConfigError (one line) when ``out`` exists without ``force``, or the policy is refused.
    """
    from triage.policies.loader import load_policy
    from triage.router.core.preflight import check_policy_models

    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and not out.is_file():
        raise ConfigError(f"{out} is not a file")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"no folder {folder} to write {out.name} into")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        check_policy_models(load_policy(tmp))  # the real loader, on the bytes that will be written
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def next_steps(out: Path, name: str, envs: list[str]) -> list[str]:
    steps = [f"export {e}=...   # the key, in the environment of whatever runs Triage" for e in envs]
    steps += [
        f"triage policy validate {out}",
        f"triage route \"what is 2+2\" --policy {out}   # the decision only; nothing is called",
        f"triage chat \"what is 2+2\" --policy {out}    # calls the chosen model",
        f"triage serve --policy {out}   # then model=\"triage/{name}\" at http://127.0.0.1:8080/v1",
        f"triage policy calibrate --policy {out} --data REPLAY.jsonl --tier-shares 0.5,0.3,0.2   # fit thresholds",
    ]
    return steps
