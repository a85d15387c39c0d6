"""`triage route` and `triage chat`: the SDK from the command line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the top-level SDK commands to ``app``."""
