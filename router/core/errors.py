"""Errors of routed calls."""

from __future__ import annotations

from triage.errors import TriageError


class TriageProviderError(TriageError):
    """The model provider failed (timeout, connection, 5xx, bad key...) and no fallback could answer.

    ``kind`` is one of ``timeout``, ``connection``, ``server``, ``auth``, ``rate_limit``,
    ``bad_request``, ``not_found``, ``other``; ``status_code`` is the upstream HTTP status when known.
    ``attempts`` lists every call made (as dicts), the failed ones included. ``summary`` is the
    message without the provider's own text (what the sidecar tells its clients).
    """

    def __init__(self, message: str, *, kind: str = "other", status_code: int | None = None,
                 strategy: str | None = None, model: str | None = None,
                 attempts: list[dict] | None = None, request_id: str | None = None,
                 summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message
        self.kind = kind
        self.status_code = status_code
        self.strategy = strategy
        self.model = model
        self.attempts = attempts or []
        self.request_id = request_id


class UpstreamProtocolError(TriageError):
    """The upstream answered, but not with something usable (e.g. a stream with no choices at all).

    Treated as a provider failure of kind ``server``: the policy's fallback may answer instead.
    """


class EmptyUpstreamStreamError(UpstreamProtocolError):
    """A streamed call ended without a single chunk carrying a choice."""
