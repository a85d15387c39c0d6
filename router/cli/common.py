"""Helpers shared by CLI modules: one-line errors with exit code 2, rich console."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from triage.errors import TriageError

# soft_wrap: a line of output is one line whatever the terminal width (paths and messages are not
# cut by newlines, so scripts and tests can read them); tables still fit the console width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

# Errors that mean "the input is wrong", not "Triage is broken".
USER_ERRORS: tuple[type[BaseException], ...] = (
    TriageError,
    FileNotFoundError,
    KeyError,
    ValueError,
    ValidationError,
    json.JSONDecodeError,
)


def fail(message: str) -> None:
    """Print one line and exit 2 (the usage-error code)."""
    # escape: a message is text, not rich markup (`pip install 'x[local]'` kept its extra)
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def read_replay_or_fail(path: Any, *, skip_invalid: bool) -> list[Any]:
    """The replay records of ``path``; skipped invalid lines are reported on stderr, and a file
    with no valid record is one line and exit 2."""
    from triage.replay import read_replay
    from triage.replay.io import SkippedLines

    skipped = SkippedLines()
    records = read_replay(path, skip_invalid=skip_invalid, skipped=skipped)
    if skipped.errors:
        err_console.print(f"[yellow]skipped {len(skipped.errors)} invalid line(s); first: {skipped.errors[0]}[/]",
                          highlight=False, soft_wrap=True)
    if not records:
        fail(f"{path}: no valid records")
    return records


def user_errors(fn: F) -> F:
    """Turn user errors raised inside a command into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            message = str(exc)
            if isinstance(exc, KeyError) and exc.args:
                message = str(exc.args[0])
            fail(message.splitlines()[0] if message else type(exc).__name__)

    return wrapper  # type: ignore[return-value]
