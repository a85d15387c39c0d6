"""Errors Triage raises for bad input. The CLI prints them as one line and exits 2."""


class TriageError(Exception):
    """Base class of errors caused by the caller's input or configuration (not bugs)."""


class ConfigError(TriageError):
    """A policy, probe card, price table or settings value is invalid."""
