"""Entry point of the `triage` CLI: one typer app, sub-commands in sibling modules.

Errors caused by the user's input (:class:`TriageError`, bad files, unknown names) are printed as
one line on stderr and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from triage.router.cli import (
    learn_cmd,
    ledger_cmd,
    models_cmd,
    policy_cmd,
    probe_cmd,
    replay_cmd,
    replay_eval_cmd,  # noqa: F401  (adds `replay evaluate` to replay_cmd.app)
    replay_simulate_cmd,  # noqa: F401  (adds `replay simulate` to replay_cmd.app)
    sdk_cmd,
    serve_cmd,
    token_router_cmd,
)

app = typer.Typer(
    name="triage",
    help="Triage: an adaptive reasoning router. Probe a query, pick a strategy, call, record.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(replay_cmd.app, name="replay")
app.add_typer(probe_cmd.app, name="probe")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(ledger_cmd.app, name="ledger")
app.add_typer(token_router_cmd.app, name="token-router")
app.add_typer(models_cmd.app, name="models")
sdk_cmd.register(app)
serve_cmd.register(app)
learn_cmd.register(app)


def main() -> None:  # pragma: no cover - thin wrapper used by `python -m triage.router.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
