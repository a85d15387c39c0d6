"""Shadow sampling (policy `shadow:`, triage.router.core.shadow): a sampled share of answered requests
also runs another strategy in the background; its outcome is recorded, linked, budgeted and never
returned. Upstream: the scripted upstream on loopback, answering with the model's name (and slowly
for the shadow model, to show the caller never waits); a real SQLite ledger; the real sidecar.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from triage.router.core import Router
from triage.router.ledger import open_ledger
from triage.router.ledger.export import export_jsonl
from triage.router.ledger.report import ledger_report

from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.sidecar import CLIENT_KEY, FailingUpstream, SidecarProcess

SLOW_S = 2.0
ASK = [{"role": "user", "content": "Name one primary colour."}]
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


class NamedUpstream(ScriptedUpstream):
    """Says which model it was asked for; the `slow` model takes SLOW_S seconds."""

    @staticmethod
    def reply(req: dict[str, Any], n: int) -> tuple[dict[str, Any], str]:
        model = str(req.get("model"))
        if "slow" in model:
            time.sleep(SLOW_S)
        return {"role": "assistant", "content": f"answer of {model}"}, "stop"


@pytest.fixture()
def upstream() -> Iterator[NamedUpstream]:
    up = NamedUpstream()
    yield up
    up.close()


def _policy(folder: Path, base: str, shadow: dict[str, Any] | None, *, shadow_base: str | None = None,
            grader: bool = False) -> Path:
    strategies = {
        "primary": {"model": "openai/fast", "api_base": base, "max_tokens": 16, "price": PRICE},
        "other": {"model": "openai/slow", "api_base": shadow_base or base, "max_tokens": 16, "price": PRICE,
                  "timeout_s": 30},
    }
    doc: dict[str, Any] = {"name": "shadowed", "version": 1, "probe": "default", "strategies": strategies,
                           "tiers": {"easy": "primary", "normal": "primary", "hard": "primary"},
                           "ledger": {"store_prompts": True}}
    if shadow is not None:
        doc["shadow"] = shadow
    if grader:
        doc["grader"] = {"type": "exact"}
    path = folder / "shadowed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _records(ledger: Path) -> list[Any]:
    store = open_ledger(str(ledger))
    try:
        return [e.record for e in store.iter_entries()]
    finally:
        store.close()


SHADOW_ALL = {"rate": 1.0, "strategies": ["primary", "other"], "max_cost_usd_per_day": 100.0}


def test_every_request_gets_one_linked_shadow_never_returned_nor_waited_for(tmp_path: Path,
                                                                             upstream: NamedUpstream) -> None:
    ledger = tmp_path / "l.sqlite"
    with Router.from_file(_policy(tmp_path, upstream.base, SHADOW_ALL), ledger=str(ledger)) as router:
        ids = []
        for i in range(3):
            t0 = time.perf_counter()
            resp = router.completion(messages=ASK, request_id=f"req-{i}", metadata={"gold": "answer of fast"})
            took = time.perf_counter() - t0
            assert resp.choices[0].message.content == "answer of fast"  # the primary's, never the shadow's
            assert resp._hidden_params["triage"]["strategy"] == "primary"
            assert took < SLOW_S / 2, f"the caller waited {took:.2f}s: the shadow was on its path"
            ids.append(f"req-{i}")
        assert router.shadow.drain(30)
        assert router.shadow.counts["recorded"] == 3
    recs = {r.request_id: r for r in _records(ledger)}
    assert len(recs) == 6
    for rid in ids:
        primary, shadow = recs[rid], recs[rid + ":shadow"]
        assert primary.strategy == "primary" and "shadow_of" not in primary.metadata
        assert shadow.metadata["shadow_of"] == rid and shadow.metadata["shadow"] is True
        assert shadow.strategy == "other" and shadow.model == "openai/slow"
        assert shadow.metadata["answer"] == "answer of slow"
        assert shadow.metadata["gold"] == "answer of fast"
        # pi(other) = 0, so P(other observed) = rate * pi(primary) * q(other | primary) = 1 * 1 * 1
        assert shadow.propensity == pytest.approx(1.0) and shadow.metadata["shadow_choice_propensity"] == 1.0
        assert shadow.latency_s >= SLOW_S * 0.9


def test_graded_export_and_report(tmp_path: Path, upstream: NamedUpstream) -> None:
    """Both outcomes are graded; the export holds the shadow as its own marked row; the report keeps
    shadows out of the request counts and cost and shows them apart."""
    ledger = tmp_path / "l.sqlite"
    shadow = {**SHADOW_ALL, "rate": 0.5}
    with Router.from_file(_policy(tmp_path, upstream.base, shadow, grader=True), ledger=str(ledger)) as router:
        for i in range(12):
            router.completion(messages=ASK, request_id=f"q-{i}", metadata={"gold": "answer of slow"})
        assert router.shadow.drain(60)
        n_shadow = router.shadow.counts["recorded"]
    assert 0 < n_shadow < 12  # rate 0.5, seeded per request id
    store = open_ledger(str(ledger))
    try:
        report = ledger_report(store)
        assert report["n"] == 12 and report["overall"]["requests"] == 12
        assert {g["key"] for g in report["groups"]} == {"primary"}
        primary_cost = report["overall"]["total_cost"]
        assert report["shadow"]["requests"] == n_shadow and report["shadow"]["cost_usd"] > 0
        assert primary_cost == pytest.approx(sum(r.cost_usd for r in _records(ledger)
                                                 if "shadow_of" not in r.metadata))
        out = tmp_path / "export.jsonl"
        result = export_jsonl(store, out, require_prompts=True)
    finally:
        store.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.written == 12 + n_shadow
    shadows = [r for r in rows if r["logged"].get("shadow")]
    assert len(shadows) == n_shadow
    for r in shadows:
        assert r["id"] == r["logged"]["shadow_of"] + ":shadow"
        assert list(r["outcomes"]) == ["other"] and r["outcomes"]["other"]["score"] == 1.0  # graded: gold matches
        assert r["logged"]["strategy"] == "other" and r["logged"]["propensity"] == pytest.approx(0.5)
    primaries = [r for r in rows if not r["logged"].get("shadow")]
    assert all(r["outcomes"]["primary"]["score"] == 0.0 and r["logged"]["propensity"] == 1.0 for r in primaries)
    # the router logs the primary's observation probability too (what the trainer weights by)
    assert all(r["logged"]["observed_propensity"] == 1.0 for r in primaries)
    # The bandit trainer reads the shadow rows as observed outcomes of `other`, weighted 1 / 0.5.
    from triage.probes.bandit import make_logged_labels
    from triage.replay.schema import ReplayRecord

    labels = make_logged_labels([ReplayRecord.model_validate(r) for r in rows], min_rows=1)
    other = labels.candidates.index(shadows[0]["logged"]["candidate"])  # other's probe success label
    assert int((labels.label == other).sum()) == n_shadow
    assert set(labels.weight[labels.label == other]) == {2.0}


def test_budget_stops_shadows(tmp_path: Path, upstream: NamedUpstream) -> None:
    ledger = tmp_path / "l.sqlite"
    shadow = {**SHADOW_ALL, "max_cost_usd_per_day": 1e-9}  # one shadow spends it
    with Router.from_file(_policy(tmp_path, upstream.base, shadow), ledger=str(ledger)) as router:
        router.completion(messages=ASK, request_id="b-0")
        assert router.shadow.drain(30)
        for i in range(1, 4):
            router.completion(messages=ASK, request_id=f"b-{i}")
        assert router.shadow.drain(30)
        assert router.shadow.counts["recorded"] == 1 and router.shadow.counts["dropped_budget"] == 3
    assert sum("shadow_of" in r.metadata for r in _records(ledger)) == 1


@pytest.mark.parametrize("shadow", [None, {**SHADOW_ALL, "rate": 0.0}], ids=["absent", "rate0"])
def test_no_shadow_without_the_block_or_at_rate_zero(tmp_path: Path, upstream: NamedUpstream,
                                                     shadow: dict[str, Any] | None) -> None:
    ledger = tmp_path / "l.sqlite"
    with Router.from_file(_policy(tmp_path, upstream.base, shadow), ledger=str(ledger)) as router:
        for i in range(5):
            router.completion(messages=ASK, request_id=f"n-{i}")
        assert router.shadow.drain(5)
        assert sum(router.shadow.counts.values()) == 0
    assert len(_records(ledger)) == 5
    assert all(not m["model"].endswith("slow") for m in upstream.requests)


def test_a_failing_shadow_never_touches_the_caller(tmp_path: Path, upstream: NamedUpstream) -> None:
    broken = FailingUpstream("5xx")
    ledger = tmp_path / "l.sqlite"
    try:
        path = _policy(tmp_path, upstream.base, SHADOW_ALL, shadow_base=broken.base)
        with Router.from_file(path, ledger=str(ledger)) as router:
            resp = router.completion(messages=ASK, request_id="f-0")
            assert resp.choices[0].message.content == "answer of fast"
            assert router.shadow.drain(30)
            assert router.shadow.counts["failed"] == 1
    finally:
        broken.close()
    recs = {r.request_id: r for r in _records(ledger)}
    assert recs["f-0"].error is None
    assert recs["f-0:shadow"].error is not None and recs["f-0:shadow"].metadata["shadow_of"] == "f-0"


def test_async_shadow_runs_as_a_task(tmp_path: Path, upstream: NamedUpstream) -> None:
    ledger = tmp_path / "l.sqlite"

    async def go(router: Router) -> float:
        t0 = time.perf_counter()
        resp = await router.acompletion(messages=ASK, request_id="a-0")
        took = time.perf_counter() - t0
        assert resp.choices[0].message.content == "answer of fast"
        assert await router.shadow.adrain(30)
        return took

    with Router.from_file(_policy(tmp_path, upstream.base, SHADOW_ALL), ledger=str(ledger)) as router:
        took = asyncio.run(go(router))
        assert took < SLOW_S / 2
        assert router.shadow.counts["recorded"] == 1
    assert {r.request_id for r in _records(ledger)} == {"a-0", "a-0:shadow"}


def test_sidecar_shadow(tmp_path: Path, upstream: NamedUpstream) -> None:
    from openai import OpenAI

    policy = _policy(tmp_path, upstream.base, SHADOW_ALL)
    server = SidecarProcess(tmp_path, [policy])
    try:
        with OpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60) as client:
            t0 = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(model="triage/shadowed", messages=ASK)
            took = time.perf_counter() - t0
        resp = raw.parse()
        rid = raw.headers["x-triage-request-id"]
        assert resp.choices[0].message.content == "answer of fast"
        assert raw.headers["x-triage-strategy"] == "primary"
        assert took < SLOW_S / 2 + 0.5
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_records(server.ledger)) < 2:
            time.sleep(0.2)
    finally:
        server.stop()
    recs = {r.request_id: r for r in _records(server.ledger)}
    assert set(recs) == {rid, rid + ":shadow"}
    assert recs[rid + ":shadow"].metadata["shadow_of"] == rid and recs[rid + ":shadow"].strategy == "other"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_report_keeps_shadow_records_apart_on_both_stores(tmp_path: Path, backend: str,
                                                          request: pytest.FixtureRequest) -> None:
    from triage.router.ledger.records import LedgerRecord

    url = str(tmp_path / "l.sqlite") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    with open_ledger(url) as store:
        store.write_records([
            LedgerRecord(request_id="q", strategy="s", model="m", cost_usd=0.1),
            LedgerRecord(request_id="q:shadow", strategy="t", model="m2", cost_usd=0.25,
                         metadata={"shadow": True, "shadow_of": "q"})])
        report = ledger_report(store)
    assert report["n"] == 1 and report["overall"]["total_cost"] == pytest.approx(0.1)
    assert report["shadow"] == {"requests": 1, "cost_usd": pytest.approx(0.25)}
    from typer.testing import CliRunner

    from triage.router.cli.main import app

    result = CliRunner().invoke(app, ["ledger", "report", "--ledger", url])
    assert result.exit_code == 0, result.output
    assert "1 requests" in result.output and "shadow: 1 requests, $0.2500" in result.output


def test_a_shadow_block_naming_an_unknown_strategy_is_refused(tmp_path: Path) -> None:
    from triage.policies.loader import load_policy

    path = _policy(tmp_path, "http://127.0.0.1:9/v1", {"rate": 0.1, "strategies": ["primary", "nope"]})
    with pytest.raises(Exception, match=r"shadow\.strategies\.1'?: unknown strategy 'nope'"):
        load_policy(path)
