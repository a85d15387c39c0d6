"""`triage serve`: the OpenAI-compatible sidecar on uvicorn, with JSON logs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer

from triage.router.cli.common import fail, user_errors
from triage.errors import ConfigError


class JsonLogFormatter(logging.Formatter):
    """uvicorn's own log lines as JSON, in the same shape as structlog's (event, level, timestamp)."""

    def format(self, record: logging.LogRecord) -> str:
        from datetime import datetime, timezone

        from triage.scrub import scrub_text

        doc: dict[str, Any] = {
            "event": scrub_text(record.getMessage()),
            "level": record.levelname.lower(),
            "logger": record.name,
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
        }
        if record.exc_info:
            doc["exception"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(doc)


def uvicorn_log_config(level: str, as_json: bool) -> dict[str, Any]:
    formatter: dict[str, Any] = (
        {"()": "triage.router.cli.serve_cmd.JsonLogFormatter"} if as_json
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
        },
    }


def http_protocol(settings: Any) -> dict[str, Any]:
    """uvicorn's ``http`` option: httptools with the head limits of :mod:`triage.router.sidecar.protocol`.

    Without httptools (it comes with ``uvicorn[standard]``) h11 bounds the head's size itself, but
    answers an oversized head with a plain-text 400 and has no head read timeout.
    """
    import importlib.util

    if importlib.util.find_spec("httptools") is not None:
        from triage.router.sidecar.protocol import IMPORT_PATH

        return {"http": IMPORT_PATH}
    return {"http": "h11", "h11_max_incomplete_event_size": settings.max_header_bytes}


def check_settings_models(settings: Any) -> None:
    """Concrete (non-glob) names in ``models`` must be callable, like the policies' models."""
    from triage.router.core.preflight import model_problem

    for name in settings.models:
        if not any(c in name for c in "*?["):
            problem = model_problem(name, installed=True)
            if problem is not None:
                raise ConfigError(f"sidecar settings: models: {problem}")


def run_server(settings: Any) -> None:
    """Validate, load, then serve until interrupted (one process, or ``workers`` processes)."""
    import asyncio  # here: the CLI's other commands (and --help) need no event loop

    import uvicorn

    from triage.policies.loader import load_policy
    from triage.router.core.preflight import (
        check_policy_credentials,
        check_policy_models,
        register_settings_secrets,
    )
    from triage.router.sidecar.app import RESOLVED_ENV, configure_protocol, create_app
    from triage.router.sidecar.services import Services, check_model_aliases
    from triage.router.sidecar.settings import is_loopback

    if not settings.api_keys and not settings.anonymous_allowed:
        fail(f"no api_keys configured and host {settings.host} is not loopback: every request would be refused; "
             "configure api_keys or set allow_anonymous: true")
    register_settings_secrets(settings)  # scrubbed from error bodies, logs and the ledger from now on
    log_config = uvicorn_log_config(settings.log_level, settings.log_json)
    common: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_config": log_config,
                              "access_log": False, "server_header": False,
                              "timeout_graceful_shutdown": settings.shutdown_grace_s}
    if settings.anonymous_allowed and not is_loopback(settings.host):
        logging.getLogger("uvicorn.error").warning("serving without API keys on a non-loopback host")
    check_settings_models(settings)
    common.update(http_protocol(settings))
    configure_protocol(settings)
    if settings.workers == 1:
        from triage.router.sidecar.reload import ignore_sighup

        ignore_sighup()  # until the lifespan's handler (which then checks the files once)
        services = Services.open(settings)
        try:
            for router in services.routers.values():  # served models must be installed, not just known
                check_policy_models(router.policy, installed=True)
        except BaseException:
            services.close()
            raise
        try:
            asyncio.run(services.warm_up())
        except BaseException:
            services.close()
            raise
        try:
            uvicorn.Server(uvicorn.Config(create_app(settings, services), **common)).run()
        finally:
            services.close()  # commits what is queued; the app drained its in-flight responses first
        return
    loaded = {}
    for path in settings.policies:  # fail here, once, rather than in every worker
        policy = load_policy(path)
        check_policy_credentials(policy)
        check_policy_models(policy, installed=True)
        loaded[policy.name] = policy
    check_model_aliases(settings, loaded)
    os.environ[RESOLVED_ENV] = settings.model_dump_json()
    serve_workers(settings.workers, {**common, "timeout_worker_healthcheck": settings.worker_healthcheck_s})


def serve_workers(workers: int, common: dict[str, Any]) -> None:
    """uvicorn's multi-process supervisor, except that SIGHUP reloads the policies in every worker
    instead of replacing the worker processes (triage.router.sidecar.supervisor)."""
    import uvicorn

    from triage.router.sidecar.reload import MASTER_PID_ENV
    from triage.router.sidecar.supervisor import ReloadingMultiprocess

    os.environ[MASTER_PID_ENV] = str(os.getpid())  # a worker's POST /v1/admin/reload signals us
    config = uvicorn.Config("triage.router.sidecar.app:app_from_env", factory=True, workers=workers, **common)
    supervisor = ReloadingMultiprocess(config, sockets=[config.bind_socket()])
    try:
        supervisor.run()
    except KeyboardInterrupt:
        pass
    if config.uds and os.path.exists(config.uds):
        os.remove(config.uds)
    # uvicorn's supervisor stops every worker when one fails its start-up (exit code 3) and then
    # returns normally, so `triage serve --workers N` used to exit 0 before /readyz ever answered
    # (issue #16). Say so, and exit non-zero.
    from uvicorn.supervisors.multiprocess import STARTUP_FAILURE

    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        logging.getLogger("uvicorn.error").error("worker %s failed to start; see its error above", failed)
        raise SystemExit(STARTUP_FAILURE)


def register(app: typer.Typer) -> None:
    """Add `serve` to ``app``."""

    @app.command("serve")
    @user_errors
    def serve(
        policy: list[Path] = typer.Option(None, "--policy", "-p", help="Policy file (repeat for several)."),
        host: str = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1)."),
        port: int = typer.Option(None, "--port", help="TCP port (default 8080)."),
        workers: int = typer.Option(None, "--workers", help="Worker processes (default 1)."),
        config: Path = typer.Option(None, "--config", help="YAML or TOML settings file."),
        ledger: str = typer.Option(None, "--ledger", help="Ledger: SQLite path or postgresql:// URL."),
        log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
        alias: list[str] = typer.Option(None, "--alias", help="NAME=TARGET: serve model NAME as TARGET "
                                        "(triage/<policy> or a served model); repeat for several."),
        watch_policies: float = typer.Option(None, "--watch-policies", help="Reload the policy files (and "
                                             "their probes) when they change, polling every this many seconds."),
    ) -> None:
        """Serve the OpenAI-compatible sidecar: POST /v1/chat/completions with model=triage/<policy>.

        Settings come from --config, TRIAGE_SIDECAR_* variables and these flags (flags win).
        """
        from triage.logging import configure_logging
        from triage.router.sidecar.settings import load_sidecar_settings

        aliases = None
        if alias:  # given on the command line: replaces the environment's / file's table, like any flag
            aliases = {}
            for item in alias:
                name, sep, target = item.partition("=")
                if not sep or not name.strip() or not target.strip():
                    fail(f"--alias {item!r}: expected NAME=TARGET, e.g. gpt-4o=triage/default")
                aliases[name.strip()] = target.strip()
        settings = load_sidecar_settings(
            config_file=config, policies=list(policy) if policy else None, host=host, port=port,
            workers=workers, ledger_url=ledger, log_level=log_level, model_aliases=aliases,
            watch_policies_s=watch_policies,
        )
        configure_logging(json=settings.log_json, level=settings.log_level)
        run_server(settings)
