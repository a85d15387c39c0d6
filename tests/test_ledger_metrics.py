"""Prometheus metrics: fed by committed records, in a registry of their own."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from triage.router.ledger import LedgerWriter, open_ledger
from triage.router.ledger.metrics import LedgerMetrics
from tests.support.ledger import make_record


def _samples(metrics: LedgerMetrics) -> dict[tuple[str, tuple], float]:
    body, ctype = metrics.render()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_match_the_committed_records(tmp_path: Path) -> None:
    metrics = LedgerMetrics()
    store = open_ledger(str(tmp_path / "l.sqlite"))
    recs = [make_record(i) for i in range(30)]
    recs.append(make_record(30, error="UpstreamTimeout: 30 s"))
    with LedgerWriter(store, metrics=metrics) as w:
        for r in recs:
            w.record(r)
        w.feedback("req-000001", 1.0, source="judge")
    store.close()
    s = _samples(metrics)

    def lab(r, **extra):
        return tuple(sorted({"tier": r.tier, "strategy": r.strategy, "model": r.model, **extra}.items()))

    keys = {(r.tier, r.strategy, r.model) for r in recs}
    for tier, strategy, model in keys:
        group = [r for r in recs if (r.tier, r.strategy, r.model) == (tier, strategy, model)]
        one = group[0]
        ok = sum(1 for r in group if not r.error)
        assert s.get(("triage_requests_total", lab(one, outcome="ok")), 0) == ok
        assert s[("triage_tokens_total", lab(one, kind="prompt"))] == sum(r.prompt_tokens for r in group)
        assert s[("triage_tokens_total", lab(one, kind="completion"))] == sum(r.completion_tokens for r in group)
        cost = sum(r.cost_usd or 0 for r in group)
        assert abs(s.get(("triage_cost_usd_total", lab(one)), 0.0) - cost) < 1e-9
    err = recs[-1]
    assert s[("triage_requests_total", lab(err, outcome="error"))] == 1
    n_decisions = sum(v for (name, _), v in s.items() if name == "triage_decision_latency_seconds_count")
    assert n_decisions == len(recs)
    assert s[("triage_feedback_total", (("source", "judge"),))] == 1
    assert sum(v for (name, _), v in s.items() if name == "triage_ledger_batch_records_sum") == len(recs)


def test_each_instance_has_its_own_registry() -> None:
    a, b = LedgerMetrics(), LedgerMetrics()  # would raise "Duplicated timeseries" on a shared registry
    a.observe_record(make_record(1))
    a.observe_decision(0.003, tier="easy", strategy="small-fast")
    assert any(k[0] == "triage_requests_total" for k in _samples(a))
    assert not any(k[0] == "triage_requests_total" for k in _samples(b))
    assert REGISTRY.get_sample_value("triage_requests_total") is None
