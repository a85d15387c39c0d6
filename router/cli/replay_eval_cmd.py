"""`triage replay evaluate`: registered on the `replay` sub-app."""

from __future__ import annotations

from router.cli.replay_cmd import app  # noqa: F401
