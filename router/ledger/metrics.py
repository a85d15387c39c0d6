"""Prometheus metrics for the sidecar: requests, tokens and cost by tier/strategy/model, decision latency.

Collectors live in a :class:`~prometheus_client.CollectorRegistry` owned by the
:class:`LedgerMetrics` instance (never the process-global registry), so several apps or tests
in one process do not collide. The sidecar serves :meth:`LedgerMetrics.render` at ``/metrics``.

Request, token and cost counters are fed from committed ledger records (pass the metrics object
to :class:`~triage.router.ledger.writer.LedgerWriter`), so they agree with what the ledger holds.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from triage.router.ledger.records import LedgerRecord, OutcomeRecord

LABELS = ("tier", "strategy", "model")
# Probe + policy run in milliseconds; a slow decision is a bug worth seeing, so the buckets are fine.
DECISION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class LedgerMetrics:
    """The collectors, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "triage") -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.requests = Counter("requests", "Routed requests recorded in the ledger.",
                                (*LABELS, "outcome"), namespace=ns, registry=r)
        self.tokens = Counter("tokens", "Tokens billed, by kind (prompt, completion, reasoning).",
                              (*LABELS, "kind"), namespace=ns, registry=r)
        self.cost = Counter("cost_usd", "Cost in US dollars.", LABELS, namespace=ns, registry=r)
        self.escalations = Counter("escalations", "Requests that escalated to another model.",
                                   LABELS, namespace=ns, registry=r)
        self.truncations = Counter("truncations", "Requests whose answer was cut by the token budget.",
                                   LABELS, namespace=ns, registry=r)
        self.decision_latency = Histogram("decision_latency_seconds", "Probe + policy time per request.",
                                          ("tier", "strategy"), namespace=ns, registry=r, buckets=DECISION_BUCKETS)
        self.request_latency = Histogram("request_latency_seconds", "Wall time per routed request.",
                                         LABELS, namespace=ns, registry=r, buckets=REQUEST_BUCKETS)
        self.feedback = Counter("feedback", "Outcomes attached to requests.", ("source",),
                                namespace=ns, registry=r)
        self.ledger_commit = Histogram("ledger_commit_seconds", "Time to commit one ledger batch.",
                                       namespace=ns, registry=r, buckets=COMMIT_BUCKETS)
        self.ledger_batch = Histogram("ledger_batch_records", "Records per ledger commit.",
                                      namespace=ns, registry=r, buckets=BATCH_BUCKETS)

    def observe_record(self, rec: LedgerRecord) -> None:
        labels = (rec.tier or "unknown", rec.strategy, rec.model)
        self.requests.labels(*labels, "error" if rec.error else "ok").inc()
        for kind, n in (("prompt", rec.prompt_tokens), ("completion", rec.completion_tokens),
                        ("reasoning", rec.reasoning_tokens)):
            if n:
                self.tokens.labels(*labels, kind).inc(n)
        if rec.cost_usd:
            self.cost.labels(*labels).inc(rec.cost_usd)
        if rec.escalated:
            self.escalations.labels(*labels).inc()
        if rec.truncated:
            self.truncations.labels(*labels).inc()
        if rec.decision_latency_s is not None:
            self.decision_latency.labels(labels[0], labels[1]).observe(rec.decision_latency_s)
        if rec.latency_s is not None:
            self.request_latency.labels(*labels).observe(rec.latency_s)

    def observe_batch(self, records: list[LedgerRecord], commit_seconds: float) -> None:
        """Called by the writer after a commit: the records are now in the ledger."""
        for rec in records:
            self.observe_record(rec)
        self.ledger_commit.observe(commit_seconds)
        self.ledger_batch.observe(len(records))

    def observe_decision(self, seconds: float, *, tier: str, strategy: str) -> None:
        """For callers that time the decision themselves (e.g. ``/v1/route`` without a call)."""
        self.decision_latency.labels(tier, strategy).observe(seconds)

    def observe_outcome(self, outcome: OutcomeRecord) -> None:
        self.feedback.labels(outcome.source).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for a ``/metrics`` endpoint."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
