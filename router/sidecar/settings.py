"""Settings of the sidecar server: a YAML or TOML file, ``TRIAGE_SIDECAR_*`` variables, CLI flags.

Precedence, highest first: values passed in code (the CLI's flags), environment variables
(``TRIAGE_SIDECAR_PORT=9000``; lists and key tables as JSON, e.g.
``TRIAGE_SIDECAR_POLICIES='["policies/examples/local.yaml"]'``), the config file
(``--config FILE`` or ``TRIAGE_SIDECAR_CONFIG_FILE``), defaults.

API keys are configured by their SHA-256 (``printf %s "$KEY" | sha256sum``), never in clear, so a
config file can be committed and logged. Upstream credentials are not sidecar settings at all: a
policy's strategies name the environment variable holding them (``api_key_env``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from triage.policies.loader import load_yaml
from triage.errors import ConfigError

ENV_PREFIX = "TRIAGE_SIDECAR_"
KEY_ID_PATTERN = r"^[A-Za-z0-9_.:@\-]{1,64}$"
# Aliases and their targets are echoed in x-triage-alias* headers: printable ASCII, no spaces, bounded.
ALIAS_PATTERN = re.compile(r"^[!-~]{1,200}$")


class ApiKeySpec(BaseModel):
    """One accepted Bearer key: its hash, the id recorded in the ledger, and its limits."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=KEY_ID_PATTERN, description="Name of the key; recorded as the ledger's api_key_id.")
    sha256: str = Field(description="Hex SHA-256 of the key (`printf %s \"$KEY\" | sha256sum`).")
    tenant: str | None = Field(default=None, max_length=200, description="Ledger tenant; default: the id.")
    rate_per_s: float | None = Field(default=None, gt=0.0, description="Sustained requests per second.")
    burst: int | None = Field(default=None, ge=1, description="Bucket size; default: max(1, rate_per_s).")
    budget_usd: float | None = Field(default=None, ge=0.0, description="Spend allowed to this key (ledger cost).")
    models: list[str] | None = Field(
        default=None, description="Models this key may use (`triage/<policy>`, concrete names, globs); default all."
    )
    admin: bool = Field(
        default=False, description="Operator key: sees every tenant in /v1/ledger/summary (`tenant=` filters) "
        "and reads /metrics when it is not public.",
    )

    @field_validator("sha256", mode="before")
    @classmethod
    def _hex_digest(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError("read as a number: quote the hash in the config file")
        if isinstance(value, str):
            value = value.strip().lower().removeprefix("sha256:")
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ValueError("must be the 64-character hex SHA-256 of the key, not the key itself")
        return value

    @property
    def tenant_name(self) -> str:
        return self.tenant or self.id


class SidecarSettings(BaseSettings):
    """Everything `triage serve` needs. Validated once at start-up; a bad value fails with its field."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    config_file: Path | None = Field(default=None, description="YAML or TOML file holding these settings.")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    policies: list[Path] = Field(default_factory=list, description="Policy files; `triage/<name>` selects one.")
    models: list[str] = Field(
        default_factory=list,
        description="Concrete models callable as-is besides those the policies use (fnmatch globs allowed).",
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Client-facing model names -> `triage/<policy>` or a served concrete model, e.g. "
        "{\"gpt-4o\": \"triage/default\"}: a client with a hard-coded model name is routed unchanged. "
        "Checked at start-up against the loaded policies.",
    )
    ledger_url: str | None = Field(default=None, description="SQLite path or postgresql:// URL; default: the ledger's.")
    store_prompts: bool = Field(default=False, description="Keep prompt text in the ledger (a hash is always kept).")
    ledger_spool: Path | None = Field(
        default=None, description="Spool file for records the ledger cannot take (store down, disk full); "
        "default: beside a SQLite ledger, or in the cache dir. Put it on another disk than the ledger's.",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0.0, description="On shutdown, how long in-flight responses may finish before "
        "they are cancelled (cancelled streams are still recorded before the ledger closes).",
    )
    worker_healthcheck_s: float = Field(
        default=30.0, ge=1.0, le=3600.0, description="With workers > 1: how long a worker may leave the "
        "supervisor's health ping unanswered before it is killed and replaced (uvicorn's own default, 5 s, "
        "kills busy workers on a loaded machine - with their in-flight requests and unflushed ledger records).",
    )
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    allow_anonymous: bool | None = Field(
        default=None, description="Accept requests without a key. Default: only when no keys are configured "
        "and the server listens on loopback.",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_header_bytes: int = Field(default=32768, ge=1024, le=1_048_576,
                                  description="Request line + headers larger than this get 431.")
    request_read_timeout_s: float = Field(
        default=30.0, gt=0.0, le=3600.0, description="Headers must arrive within this long of a request's first "
        "byte, and the body within this long after the headers; else 408 and the connection is closed.",
    )
    upstream_timeout_s: float = Field(default=60.0, gt=0.0, description="Cap on any upstream call's timeout.")
    budget_status: Literal[403, 429] = Field(default=403, description="Status when a key's budget is spent.")
    public_metrics: bool = Field(
        default=False, description="Serve /metrics without a key. Default: an admin key is needed "
        "(the counters cover every tenant), unless the server accepts anonymous callers.",
    )
    public_docs: bool = Field(
        default=False, description="Serve /docs, /redoc and /openapi.json without a key. Default: any "
        "configured key, unless the server accepts anonymous callers.",
    )
    watch_policies_s: float | None = Field(
        default=None, gt=0.0, le=86400.0, description="Poll the policy files and the probes they name every "
        "this many seconds and reload them when they change (off by default; POST /v1/admin/reload and "
        "SIGHUP reload on demand).",
    )
    decision_token_secret: SecretStr | None = Field(
        default=None, min_length=16, description="HMAC key of the decision tokens /v1/route returns (a chat "
        "call reuses the route's decision with them). Default: random per process, so tokens do not survive a "
        "restart nor cross workers; set it (env TRIAGE_SIDECAR_DECISION_TOKEN_SECRET) when workers > 1.",
    )
    decision_token_ttl_s: float = Field(default=300.0, gt=0.0, le=86400.0,
                                        description="How long a decision token from /v1/route is accepted.")
    log_json: bool = True
    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    access_log: bool = Field(default=True, description="One JSON line per request (never keys or bodies).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls, init_settings, env_settings)

    @field_validator("policies")
    @classmethod
    def _policies_exist(cls, value: list[Path]) -> list[Path]:
        for p in value:
            if not p.is_file():
                raise ValueError(f"policy file not found: {p}")
        return value

    @field_validator("model_aliases")
    @classmethod
    def _alias_names(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, target in value.items():
            if not ALIAS_PATTERN.match(alias):
                raise ValueError(f"alias {alias[:60]!r}: 1-200 printable ASCII characters without spaces")
            if alias == "triage" or alias.startswith("triage/"):
                raise ValueError(f"alias {alias!r} would shadow the policies' names (triage, triage/<policy>)")
            if not ALIAS_PATTERN.match(target) or target == alias:
                raise ValueError(f"alias {alias!r}: the target must be triage/<policy> or another model's name")
        return value

    @model_validator(mode="after")
    def _keys_unique(self) -> "SidecarSettings":
        ids = [k.id for k in self.api_keys]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"api_keys: duplicate id {sorted(dup)[0]!r}")
        hashes = [k.sha256 for k in self.api_keys]
        if len(set(hashes)) != len(hashes):
            raise ValueError("api_keys: the same key hash is configured twice")
        return self

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return not self.api_keys and is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``) mapping; ConfigError when unreadable."""
    if not path.is_file():
        raise ConfigError(f"sidecar config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = load_yaml(text)  # refuses duplicate keys (TOML does so itself)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        first = (f"line {mark.line + 1}: {problem}" if mark is not None and problem
                 else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ConfigError(f"{path}: invalid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'} ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config file must hold a mapping, got {type(data).__name__}")
    # Paths in the file are relative to the file, like a policy's probe path.
    if isinstance(data.get("policies"), list):
        data["policies"] = [str((path.parent / p).resolve()) if isinstance(p, str) and not Path(p).is_absolute()
                            else p for p in data["policies"]]
    return data


class ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the config file named by ``config_file`` (passed in code or in the environment)."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource,
                 env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        path = init().get("config_file") or env().get("config_file")
        self._data = read_config_file(Path(path)) if path else {}
        self._data.pop("config_file", None)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def load_sidecar_settings(**overrides: Any) -> SidecarSettings:
    """Settings from flags (``overrides``; None means "not given"), environment and config file.

    Raises :class:`ConfigError` with one readable line per problem, the first first.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SidecarSettings(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown setting (check the spelling)"
            path = _field_path(tuple(err.get("loc", ())))
            lines.append(f"sidecar settings: {path}: {msg}" if path else f"sidecar settings: {msg}")
        raise ConfigError("\n".join(lines)) from None
    except json.JSONDecodeError as exc:  # a malformed JSON list in an environment variable
        raise ConfigError(f"sidecar settings: an environment variable holds invalid JSON ({exc.msg})") from None
    except ValueError as exc:  # pydantic-settings' SettingsError for unparsable env values
        raise ConfigError(f"sidecar settings: {str(exc).splitlines()[0]}") from None
