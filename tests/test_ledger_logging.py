"""Logging that makes learning possible: propensities, candidates, probe features and prompts in the
ledger, the export's `logged` block, and the export's refusal when nothing trainable was kept.

Real parts: the local model (SmolLM2-135M, generations of <= 3 tokens), the default probe, SQLite
and PostgreSQL ledgers, the CLI, and `triage serve` on loopback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from triage.policies.decide import decide
from triage.policies.loader import DEFAULT_POLICY, load_policy
from triage.probes.calibration import apply_all
from triage.probes.types import ProbeOutput
from triage.replay import read_replay
from triage.router.cli.main import app
from triage.router.core import Router
from triage.router.ledger import LedgerWriter, OutcomeRecord, open_ledger
from triage.router.ledger.export import export_jsonl
from triage.router.ledger.logged import PromptsMissingError
from triage.router.ledger.records import ProbeRecord
from tests.support.ledger import ledger_url, make_record  # noqa: F401 - fixture
from tests.support.sidecar import CLIENT_KEY, SidecarProcess, record_of

runner = CliRunner()
QUESTIONS = ["What is 2 + 2?", "Name a primary colour.", "Prove that there are infinitely many primes, step by step.",
             "What is the capital of France?", "Integrate x^2 sin x dx and explain each step.", "Say hi."]


def write_policy(folder: Path, *, exploration: dict | None, ledger: dict | None, name: str = "local-explore") -> Path:
    raw = yaml.safe_load(DEFAULT_POLICY.read_text())
    raw = copy.deepcopy(raw)
    raw["name"] = name
    if exploration is not None:
        raw["exploration"] = exploration
    if ledger is not None:
        raw["ledger"] = ledger
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli(*args: str):
    return runner.invoke(app, list(args))


def probe_output_of(rec) -> ProbeOutput:
    return ProbeOutput(tier_probs=rec.probe.tier_probs, success=rec.probe.success, probe_version=rec.probe.probe_version)


def test_routed_records_carry_the_logged_bandit_data_into_the_export(tmp_path: Path) -> None:
    path = write_policy(tmp_path, exploration={"type": "epsilon", "epsilon": 0.5},
                        ledger={"store_prompts": True, "store_features": True})
    url = str(tmp_path / "ledger.sqlite")
    policy = load_policy(path)
    with Router.from_file(path, ledger=url) as router:
        # Request ids chosen so that both explored and greedy decisions are among them.
        chosen: list[tuple[str, str]] = []
        explored = greedy = 0
        for i in range(200):
            q = QUESTIONS[i % len(QUESTIONS)]
            d = router.route([{"role": "user", "content": q}], request_id=f"q-{i}")
            if d.explored and explored < 2:
                explored += 1
            elif not d.explored and greedy < 2:
                greedy += 1
            else:
                continue
            chosen.append((f"q-{i}", q))
            if len(chosen) == 4:
                break
        assert explored == 2 and greedy == 2
        for rid, q in chosen:
            resp = router.completion(messages=[{"role": "user", "content": q}], request_id=rid, max_tokens=3)
            info = resp._hidden_params["triage"]
            assert info["request_id"] == rid and "propensity" in info["decision"]
        for rid, _ in chosen:
            router.feedback(rid, 1.0, source="test")
        probe = router.probe
    with open_ledger(url) as store:
        recs = {rid: store.get(rid) for rid, _ in chosen}
    for rid, rec in recs.items():
        again = decide(policy, probe_output_of(rec), request_id=rid)  # the draw replays exactly
        assert (rec.decided_strategy, rec.propensity, rec.candidates, rec.explored, rec.greedy_strategy) == (
            again.strategy, again.propensity, again.candidates, again.explored, again.greedy_strategy)
        assert rec.propensity < 1.0 and rec.candidates == ["terse", "standard", "step_by_step"]
        assert rec.policy_version == "1" and rec.probe.probe_version == probe.version
    res = cli("ledger", "export", "--ledger", url, "-o", str(tmp_path / "x.jsonl"))
    assert res.exit_code == 0, res.output
    rows = read_replay(tmp_path / "x.jsonl")
    assert {r.id for r in rows} == set(recs)
    dim = sum(f.dim for f in probe.card.features)
    for row in rows:
        rec, logged = recs[row.id], row.model_extra["logged"]
        assert logged["strategy"] == rec.decided_strategy and logged["propensity"] == rec.propensity
        assert logged["candidates"] == rec.candidates and logged["explored"] == rec.explored
        assert logged["candidate"] == policy.strategies[rec.decided_strategy].candidate
        assert (logged["policy"], logged["policy_version"], logged["probe_version"]) == (
            "local-explore", "1", probe.version)
        assert logged["tier_probs"] == rec.probe.tier_probs and logged["success"] == rec.probe.success
        assert row.messages()[-1]["content"] in QUESTIONS  # the prompt text was kept
        # store_features round-trips: the head re-run on the stored row gives the logged probabilities
        features = np.asarray(logged["features"], dtype=np.float32)[None, :]
        assert features.shape == (1, dim)
        success, tier = apply_all(probe.card.calibration, *probe.head_proba(features))
        assert np.allclose(tier[0], [logged["tier_probs"][t] for t in ("easy", "normal", "hard")], atol=1e-4)
        assert np.allclose(success[0], [logged["success"][n] for n in probe.labels], atol=1e-4)


def test_export_refuses_records_without_prompts_in_one_line(tmp_path: Path) -> None:
    # The policy says no prompts: it wins over Router(store_prompts=True).
    path = write_policy(tmp_path, exploration=None, ledger={"store_prompts": False}, name="no-prompts")
    url = str(tmp_path / "ledger.sqlite")
    with Router.from_file(path, ledger=url, store_prompts=True) as router:
        assert router.store_prompts is False
        for i, q in enumerate(QUESTIONS[:2]):
            router.completion(messages=[{"role": "user", "content": q}], request_id=f"n-{i}", max_tokens=2)
            router.feedback(f"n-{i}", 0.0)
    out = tmp_path / "x.jsonl"
    res = cli("ledger", "export", "--ledger", url, "-o", str(out))
    assert res.exit_code == 2 and not out.exists()
    [line] = res.output.strip().splitlines()
    assert "2 of 2 records" in line and "store_prompts: true" in line and "--without-prompts" in line
    res = cli("ledger", "export", "--ledger", url, "-o", str(out), "--without-prompts")
    assert res.exit_code == 0, res.output
    rows = read_replay(out)
    assert len(rows) == 2 and all(r.prompt == "" for r in rows)
    assert all(r.model_extra["logged"]["propensity"] == 1.0 and r.model_extra["logged"]["features"] is None
               for r in rows)
    report = cli("ledger", "report", "--ledger", url)
    assert report.exit_code == 0 and "stored for training: prompts 0 / features 0 of 2 records" in report.output
    # ... and a policy asking for prompts wins over Router(store_prompts=False)
    path = write_policy(tmp_path, exploration=None, ledger={"store_prompts": True}, name="prompts")
    with Router.from_file(path, ledger=url, store_prompts=False) as router:
        router.completion(messages=[{"role": "user", "content": "Say hi."}], request_id="p-0", max_tokens=2)
    rep = json.loads(cli("ledger", "report", "--ledger", url, "--json").stdout)
    assert rep["stored"] == {"records": 3, "prompts": 1, "features": 0, "neither": 2}


def test_logged_fields_round_trip_in_both_stores(ledger_url: str, tmp_path: Path) -> None:  # noqa: F811
    features = [0.125, -2.5, 3.0e-7]
    old = make_record(0)  # a record from before propensities were logged
    new = make_record(1, probe=ProbeRecord(probe_version="text-v1", tier="normal",
                                           tier_probs={"easy": 0.2, "normal": 0.5, "hard": 0.3},
                                           success={"small": 0.4}, features=features),
                      decided_strategy="small-fast", decided_candidate="small", propensity=0.25,
                      greedy_strategy="large-think", explored=True,
                      candidates=["small-fast", "small-think", "large-think"])
    store = open_ledger(ledger_url)
    try:
        with LedgerWriter(store, spool=None) as w:
            w.record(old)
            w.record(new)
        store.add_outcomes([OutcomeRecord(request_id=r.request_id, score=1.0) for r in (old, new)])
        assert store.get(new.request_id) == new and store.get(new.request_id).probe.features == features
        with pytest.raises(PromptsMissingError, match="1 of 2 records"):  # the old one kept nothing
            export_jsonl(store, tmp_path / "x.jsonl", require_prompts=True)
        assert not (tmp_path / "x.jsonl").exists()
        export_jsonl(store, tmp_path / "x.jsonl")
    finally:
        store.close()
    rows = {r.id: r.model_extra["logged"] for r in read_replay(tmp_path / "x.jsonl")}
    assert rows[new.request_id] == {
        "strategy": "small-fast", "candidate": "small", "propensity": 0.25,
        "candidates": ["small-fast", "small-think", "large-think"], "explored": True,
        "greedy_strategy": "large-think", "policy": "default", "policy_version": "1", "probe_version": "text-v1",
        "tier_probs": {"easy": 0.2, "normal": 0.5, "hard": 0.3}, "success": {"small": 0.4}, "features": features}
    legacy = rows[old.request_id]
    assert legacy["propensity"] is None and legacy["candidates"] == [] and legacy["strategy"] == old.strategy


def test_sidecar_seeds_exploration_with_the_request_id_and_the_policy_keeps_prompts(tmp_path: Path) -> None:
    path = write_policy(tmp_path, exploration={"type": "epsilon", "epsilon": 1.0}, ledger={"store_prompts": True})
    policy = load_policy(path)
    server = SidecarProcess(tmp_path, [path], extra={"store_prompts": False})
    try:
        for i in range(3):
            r = httpx.post(server.url + "/v1/chat/completions", timeout=300,
                           headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                           json={"model": "triage/local-explore", "max_tokens": 2,
                                 "messages": [{"role": "user", "content": QUESTIONS[i]}]})
            assert r.status_code == 200, r.text
            rid = r.headers["x-triage-request-id"]
            rec = record_of(server.ledger, rid)
            again = decide(policy, probe_output_of(rec), request_id=rid)
            assert (rec.decided_strategy, rec.propensity) == (again.strategy, pytest.approx(1 / 3))
            assert rec.candidates == ["terse", "standard", "step_by_step"]
            assert rec.prompt == [{"role": "user", "content": QUESTIONS[i]}]  # the policy's choice wins
        route = httpx.post(server.url + "/v1/route", timeout=300, headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                           json={"model": "triage/local-explore", "messages": [{"role": "user", "content": "hi"}]})
        decision = route.json()["decision"]
        assert decision["propensity"] == pytest.approx(1 / 3) and len(decision["candidates"]) == 3
    finally:
        server.stop()
