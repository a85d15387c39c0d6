"""`triage serve`: the OpenAI-compatible sidecar."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `serve` to ``app``."""
