"""One configured structlog logger: console rendering in a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False

# Keys whose values must never be logged, whatever the caller passes.
_SECRET_KEYS = frozenset({"api_key", "authorization", "password", "secret", "token", "bearer", "key"})


def _redact_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Imported here: router.ledger imports this module (a module-level import would be circular).
    from triage.scrub import scrub_value

    for k in list(event_dict):
        if k.lower() in _SECRET_KEYS:
            event_dict[k] = "[redacted]"
        elif isinstance(event_dict[k], str | dict | list | tuple):
            # Configured secret values and token shapes, wherever a message or error quotes them.
            event_dict[k] = scrub_value(event_dict[k])
    return event_dict


class _CurrentStderr:
    """``sys.stderr`` as it is at each write: a test runner or typer's CliRunner swaps it and closes
    its stand-in afterwards, and a logger bound to the stand-in then fails every later write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, json: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog once. ``json=None`` picks JSON unless stderr is a terminal."""
    global _configured
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str = "triage") -> Any:
    if not _configured:
        configure_logging()
    return structlog.get_logger(name)
