"""The learning loop (issue #15): `triage replay simulate` -> ledger export -> `triage learn [--apply]`.

Traffic is RouteLLM GSM8K (Mixtral-8x7B vs GPT-4, every outcome known) replayed by the simulator
into a real SQLite or PostgreSQL ledger with an epsilon-greedy policy; only the chosen outcome is
revealed. The probe is the session probe (text features the test cache already holds for these
rows), so a learn run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from triage.router.cli.main import app
from tests.support.ledger import ledger_url  # noqa: F401 - fixture
from tests.support.loop import LARGE, SMALL, gsm8k_traffic, one_line_exit_2, policy_doc, runner, simulate, write

ROWS = 240


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gsm8k_traffic(tmp_path_factory.mktemp("loop"), ROWS)


def test_simulate_reveals_only_the_chosen_outcome(traffic: Path, tmp_path: Path) -> None:
    from triage.replay import read_replay

    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    sim = simulate(traffic, policy, ledger, "--n", "120")
    assert sim["queries"] == 120 and 0 < sim["explored"] < 120
    out = tmp_path / "export.jsonl"
    res = runner.invoke(app, ["ledger", "export", "--ledger", ledger, "-o", str(out)])
    assert res.exit_code == 0, res.output
    full = {r.id: r for r in read_replay(traffic)}
    rows = read_replay(out)
    assert len(rows) == 120
    for r in rows:
        (strategy, o), = r.outcomes.items()  # exactly one outcome: the chosen strategy's
        logged = r.model_extra["logged"]
        assert logged["strategy"] == strategy and 0 < logged["propensity"] <= 1
        assert sorted(logged["candidates"]) == ["large", "small"]
        truth = full[r.id.split(":", 1)[1]].outcomes[SMALL if strategy == "small" else LARGE]
        assert o.score == truth.score and o.cost_usd == pytest.approx(truth.cost_usd)
        assert o.model_extra["outcome_source"] == "simulated" and r.prompt_text()
    # propensities are epsilon-greedy's: 1 - eps/2 for the greedy choice, eps/2 for the other
    assert {round(r.model_extra["logged"]["propensity"], 6) for r in rows} == {0.85, 0.15}


def test_learn_writes_a_new_version_whose_probe_routes_differently(traffic: Path, tmp_path: Path,
                                                                     ledger_url: str) -> None:  # noqa: F811
    from triage.policies.decide import decide
    from triage.policies.loader import load_policy
    from triage.router.core.probing import ProbeRunner

    policy = write(tmp_path / "p.yaml", policy_doc())
    simulate(traffic, policy, ledger_url)
    out = tmp_path / "out"
    res = runner.invoke(app, ["learn", "--ledger", ledger_url, "--policy", str(policy), "--out", str(out),
                              "--folds", "3", "--bootstrap", "100", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    new = load_policy(doc["policy"])
    assert new.version == "2" and Path(new.probe) == out / "probe"
    assert doc["rows"] == ROWS and doc["applied"] is None
    for side in ("old", "new"):
        dr = doc["ope"][side]["estimators"]["dr"]["accuracy"]
        assert dr["ci"][0] <= dr["value"] <= dr["ci"][1]
    assert "intervals overlap" in doc["verdict"] or doc["improved"] is not None
    # the new probe loads as the runtime loads it, and routes these queries otherwise than the old one
    old = load_policy(policy)
    texts = [json.loads(line)["prompt"] for line in (out / "export.jsonl").read_text().splitlines()[:60]]
    texts = [t if isinstance(t, str) else t[-1]["content"] for t in texts]
    new_runner, old_runner = ProbeRunner(new, doc["policy"]), ProbeRunner(old, str(policy))
    assert new_runner.probe.version != old_runner.probe.version
    new_out, old_out = new_runner.predict_many(texts), old_runner.predict_many(texts)
    assert set(new_out[0].success) == {SMALL, LARGE}
    changed = sum(decide(new, a).strategy != decide(old, b).strategy for a, b in zip(new_out, old_out))
    probs_moved = sum(abs(a.tier_probs["hard"] - b.tier_probs["hard"]) > 1e-3 for a, b in zip(new_out, old_out))
    assert probs_moved > 50 and changed > 0


def test_refit_applies_the_version_fitted_on_every_logged_query(traffic: Path, tmp_path: Path) -> None:
    """The OPE report describes the version fitted without its held-out queries (kept in evaluated/);
    the written version is the same procedure on every logged query; --no-refit writes the former."""
    from triage.probes.card import read_card

    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger)
    docs = {}
    for flag in ("--refit", "--no-refit"):
        out = tmp_path / flag.strip("-")
        res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--out", str(out),
                                  "--folds", "3", "--bootstrap", "50", "--json", flag])
        assert res.exit_code == 0, res.output
        docs[flag] = doc = json.loads(res.stdout.strip().splitlines()[-1])
        held = doc["holdout_rows"]
        assert 0.15 * ROWS < held < 0.45 * ROWS
        applied, _ = read_card(doc["probe"])
        evaluated, _ = read_card(doc["evaluated"]["probe"])
        # --json carries the written probe's logged-data summary (each label's weighting and why): its card's
        assert doc["training"] == applied.training_data["logged"], (doc["training"], applied.training_data["logged"])
        assert doc["training"]["rows"] == applied.training_data["rows_used"]
        assert evaluated.training_data["rows_used"] == ROWS - held
        assert evaluated.training_data["split"].startswith(f"{ROWS - held} of {ROWS}")
        if flag == "--refit":
            assert doc["refit"] is True and doc["evaluated"]["policy"] == str(out / "evaluated" / "p.yaml")
            assert applied.training_data["rows_used"] == ROWS and applied.training_data["split"] == "all"
            assert doc["notes"] and "refit on all" in doc["notes"][0]
        else:
            assert doc["refit"] is False and doc["evaluated"]["probe"] == doc["probe"] and not doc["notes"]
    # the report is the same in both: the same held-out queries, the same evaluated version
    assert docs["--refit"]["ope"]["new"]["estimators"]["dr"] == docs["--no-refit"]["ope"]["new"]["estimators"]["dr"]


def test_learning_again_keeps_the_learned_probes_features_with_their_options(traffic: Path, tmp_path: Path) -> None:
    """A second `triage learn` on an applied version trains on the features of the probe it replaces,
    options included (the first round's `text:aux=false` came back as `text`, aux regressors on)."""
    from triage.probes.card import read_card

    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger)
    probes = []
    for rnd in (1, 2):
        res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--out",
                                  str(tmp_path / f"round{rnd}"), "--folds", "3", "--bootstrap", "50", "--json",
                                  "--apply"])
        assert res.exit_code == 0, res.output
        probes.append(read_card(json.loads(res.stdout.strip().splitlines()[-1])["probe"])[0])
    first, second = ([(f.name, f.params) for f in card.features] for card in probes)
    assert first == [("text", {**first[0][1], "aux": False})], first
    assert second == first


def test_a_learned_probe_scores_as_a_replay_router(traffic: Path, tmp_path: Path) -> None:
    """`probe:path=DIR` (what the learning-loop bench scores each round with): the saved probe's own
    calibrated P(success) per candidate, not refitted, swept like `probe-text` by the evaluator."""
    import numpy as np

    from triage.eval.evaluation import evaluate
    from triage.eval.routers import make_router
    from triage.probes.runtime import load_probe
    from triage.replay import ReplayData, read_replay

    policy = write(tmp_path / "p.yaml", policy_doc())
    simulate(traffic, policy, f"sqlite:///{tmp_path / 'l.sqlite'}")
    res = runner.invoke(app, ["learn", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite'}", "--policy", str(policy),
                              "--out", str(tmp_path / "out"), "--folds", "3", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    probe_dir = tmp_path / "out" / "probe"
    data = ReplayData.from_records(read_replay(traffic), name="gsm8k", candidates=[LARGE, SMALL])
    router = make_router(f"probe:path={probe_dir}")
    rows = np.arange(data.n)
    router.fit(data, rows[:120])
    expected, _ = load_probe(probe_dir).predict_arrays(data.texts[120:])
    labels = load_probe(probe_dir).labels
    want = np.asarray(expected)[:, [labels.index(LARGE), labels.index(SMALL)]]
    assert np.allclose(router.predict_success(data, rows[120:]), want, atol=1e-5)
    # scores=head: the head's P(success) before the probe's calibration (probe-text's footing)
    by_head = make_router(f"probe:path={probe_dir},scores=head")
    by_head.fit(data, rows[:120])
    raw, _ = load_probe(probe_dir).head_proba(by_head.X_[rows[120:]])
    raw = np.asarray(raw)[:, [labels.index(LARGE), labels.index(SMALL)]]
    assert np.allclose(by_head.predict_success(data, rows[120:]), raw, atol=1e-5)
    assert not np.allclose(raw, want, atol=1e-3)  # the calibration moved them: two different scores
    with pytest.raises(ValueError, match="scores must be calibrated or head"):
        make_router(f"probe:path={probe_dir},scores=raw")
    sweep = router.sweep(data, rows[120:])
    assert (sweep.choices[0] == data.candidates.index(SMALL)).all()
    assert (sweep.choices[-1] == data.candidates.index(LARGE)).all()
    result = evaluate(data, [f"probe:path={probe_dir}"], folds=3, n_boot=0)
    assert result.routers[f"probe:path={probe_dir}"].metrics["apgr"] is not None
    other = ReplayData.from_records(read_replay(traffic), name="gsm8k", candidates=[SMALL])
    with pytest.raises(ValueError, match="no success label"):
        make_router(f"probe:path={probe_dir}").fit(_renamed(other, "nobody"), rows[:10])


def _renamed(data, name: str):  # noqa: ANN001, ANN202 - a one-candidate copy under another name
    from dataclasses import replace

    return replace(data, candidates=[name])


def test_apply_replaces_atomically_and_keeps_the_old_version(traffic: Path, tmp_path: Path) -> None:
    from triage.policies.loader import load_policy

    policy = write(tmp_path / "p.yaml", policy_doc())
    before = policy.read_bytes()
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger)
    res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--folds", "3",
                              "--bootstrap", "50", "--apply"])
    assert res.exit_code == 0, res.output
    assert "replaced atomically" in res.stdout
    kept = tmp_path / "p.v1.yaml"
    assert kept.read_bytes() == before
    assert load_policy(policy).version == "2"
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed over the policy
    # a second apply keeps v2 beside v1
    simulate(traffic, policy, ledger, "--seed", "1", "--n", "120")
    res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--folds", "3",
                              "--bootstrap", "50", "--apply", "--objective", "tier-shares", "--tier-shares", "0.5,0.3,0.2"])
    assert res.exit_code == 0, res.output
    assert load_policy(policy).version == "3" and load_policy(tmp_path / "p.v2.yaml").version == "2"
    assert kept.read_bytes() == before


def test_learn_refuses_a_ledger_without_prompts(traffic: Path, tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", policy_doc(store_prompts=False))  # the simulator obeys it, as a router does
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger, "--n", "40")
    line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy)]))
    assert "no prompt text" in line and "store_prompts" in line


def test_learn_refuses_missing_support(traffic: Path, tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", policy_doc(epsilon=None))  # no exploration: one strategy per tier
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger, "--n", "60")
    line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy)]))
    assert "too few logged outcomes" in line or "no support" in line


def test_learn_refuses_a_degenerate_calibration(traffic: Path, tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger)
    # 99% of GPT-4's accuracy: only routing (almost) everything to GPT-4 reaches it
    line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--folds", "3",
                                               "--target-accuracy", "1.2"]))
    assert line.startswith("error: target unreachable") or "degenerate calibration" in line
    assert not (tmp_path / "p.v1.yaml").exists()


def test_learn_weighting_is_the_callers_choice_and_a_bad_one_is_refused(traffic: Path, tmp_path: Path) -> None:
    """`--weighting ips|none` fits every label that way (no choice to record); anything else is refused
    in one line before the ledger is exported."""
    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger)
    line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy),
                                               "--weighting", "uniform"]))
    assert line == "error: --weighting must be one of auto, ips, none, got 'uniform'"
    assert not (tmp_path / "p.learn").exists()
    for weighting in ("none", "ips"):
        res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--out", str(tmp_path / weighting),
                                  "--folds", "3", "--bootstrap", "50", "--weighting", weighting, "--json"])
        assert res.exit_code == 0, res.output
        training = json.loads(res.stdout.strip().splitlines()[-1])["training"]
        assert {v["chosen"] for v in training["weighting"].values()} == {weighting}, training["weighting"]
        assert all(list(v["ips_weighted_log_loss"]) == [weighting] for v in training["weighting"].values())
        assert "weighting_selection" not in training


def test_learn_c_auto_chooses_the_regularisation_and_a_bad_c_is_refused(traffic: Path, tmp_path: Path) -> None:
    from triage.probes.card import read_card

    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    simulate(traffic, policy, ledger)
    for bad in ("0", "-1", "inf", "lots"):
        line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--C", bad]))
        assert line == f"error: --C must be a positive number or auto, got {bad!r}"
    res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--out", str(tmp_path / "o"),
                              "--folds", "3", "--bootstrap", "50", "--C", "auto", "--json"])
    assert res.exit_code == 0, res.output
    card, _ = read_card(json.loads(res.stdout.strip().splitlines()[-1])["probe"])
    selection = card.head.selection  # the inner search's candidates and its choice, on the logged rows
    assert card.head.kind == "logreg" and selection is not None and len(selection["candidates"]) >= 5
    assert card.head.params["C"] in [c["params"]["C"] for c in selection["candidates"]]


def test_learn_refuses_an_empty_ledger_and_a_missing_one(tmp_path: Path) -> None:
    from triage.router.ledger import open_ledger

    policy = write(tmp_path / "p.yaml", policy_doc())
    line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", str(tmp_path / "none.sqlite"), "--policy", str(policy)]))
    assert "no ledger" in line
    open_ledger(str(tmp_path / "empty.sqlite")).close()
    line = one_line_exit_2(runner.invoke(app, ["learn", "--ledger", str(tmp_path / "empty.sqlite"), "--policy", str(policy)]))
    assert "no record with an outcome" in line


WALKTHROUGH_POLICY = {
    "name": "walkthrough", "version": 1, "probe": "default",
    "strategies": {
        # one model at two budgets: each strategy needs its own probe label (replay_candidate), else
        # the probe learns one label for both and its tiers cannot separate them
        "terse": {"model": "local/smollm2-135m", "temperature": 0.0, "max_tokens": 12, "replay_candidate": "terse"},
        "standard": {"model": "local/smollm2-135m", "temperature": 0.0, "max_tokens": 24,
                     "replay_candidate": "standard"},
    },
    "tiers": {"easy": "terse", "normal": "standard", "hard": "standard"},
    "rule": {"type": "thresholds", "thresholds": {"normal": 0.5, "hard": 0.5}},
    "exploration": {"type": "epsilon", "epsilon": 0.5},
    "ledger": {"store_prompts": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("store", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.minutes)])
def test_readme_learning_loop_walkthrough(traffic: Path, tmp_path: Path, store: str, request,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """README "Learning from your own traffic": SDK with a ledger -> feedback -> `triage learn --apply
    --reload-url` -> the running sidecar, and the same SDK router reloaded, route with the new probe.
    Real local model (SmolLM2), real SQLite and PostgreSQL, the real `triage serve` on loopback; the
    feedback is 1.0 when the answer fit its strategy's budget (not cut), a stand-in for a user's."""
    import httpx

    from triage import Router
    from triage.replay import read_replay
    from tests.support.sidecar import CLIENT_KEY, SidecarProcess, key_table, sha

    policy = write(tmp_path / "policy.yaml", WALKTHROUGH_POLICY)
    ledger = str(tmp_path / "ledger.sqlite") if store == "sqlite" else request.getfixturevalue("postgres_url")
    # word problems (long answers: cut at either budget) and one-word questions (short answers)
    short = [f"Answer with one word: what colour is {x}?" for x in
             ("grass", "snow", "the sky", "coal", "blood", "a banana", "an orange", "milk", "ink", "sand")]
    questions = [q for pair in zip(short * 4, [r.prompt_text() for r in read_replay(traffic)[:40]]) for q in pair]
    with Router.from_file(policy, ledger=ledger) as router:
        for i, q in enumerate(questions):
            # Fixed request ids: they seed the policy's exploration, so the logged traffic (and
            # whether tier-share calibration on it is degenerate) is the same on every run. With
            # random ids, 1 fresh-clone run in 3 drew traffic on which the saturated probe's tier
            # shares missed by > 0.1 and `learn` refused (rightly); the prefix "walkthrough-" does
            # too, so this prefix was picked as a fixed seed is - the refusal has its own test.
            resp = router.completion(messages=[{"role": "user", "content": q}], request_id=f"wt-{i}")
            info = resp._hidden_params["triage"]
            router.feedback(info["request_id"], 0.0 if info["truncated"] else 1.0)
        old_version = router.route([{"role": "user", "content": questions[0]}]).probe_version
        # the sidecar serves the same policy file (its own ledger); only an admin key may reload it
        admin_key = "sk-triage-admin-SECRET-walkthrough"
        (tmp_path / "side").mkdir()
        side = SidecarProcess(tmp_path / "side", [policy],
                              extra={"api_keys": key_table() + [{"id": "ops", "sha256": sha(admin_key), "admin": True}]})

        def sidecar_decision() -> dict:
            r = httpx.post(f"{side.url}/v1/route", headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=60,
                           json={"model": "triage/walkthrough", "messages": [{"role": "user", "content": questions[0]}]})
            assert r.status_code == 200, r.text
            return r.json()["decision"]

        try:
            before = sidecar_decision()
            assert (before["policy_version"], before["probe_version"]) == ("1", old_version)
            monkeypatch.setenv("WALKTHROUGH_ADMIN_KEY", admin_key)
            res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--apply", "--folds", "3",
                                      "--min-rows", "10", "--bootstrap", "50",
                                      "--objective", "tier-shares", "--tier-shares", "0.5,0.3,0.2",
                                      "--reload-url", side.url, "--admin-key-env", "WALKTHROUGH_ADMIN_KEY"])
            assert res.exit_code == 0, res.output
            assert f"sidecar reloaded ({side.url}/v1/admin/reload)" in res.output, res.output
            served = sidecar_decision()
        finally:
            side.stop()
        assert admin_key not in side.log.read_text(errors="replace")  # the key is never logged
        # it says which fit each label of the new probe got (the card's record of the choice)
        logged = json.loads((tmp_path / "policy.learn" / "v2" / "probe" / "card.json").read_text())["training_data"]["logged"]
        chosen = ", ".join(f"{label} {v['chosen']}" for label, v in logged["weighting"].items())
        assert f"weighting per label: {chosen}" in res.output, res.output
        # and the thresholds it wrote, as people read them
        written = yaml.safe_load((tmp_path / "policy.yaml").read_text())["rule"]["thresholds"]
        assert f"-> thresholds normal={written['normal']:g}, hard={written['hard']:g}\n" in res.output, res.output
        assert (tmp_path / "policy.v1.yaml").is_file()
        reloaded = router.reload()
        assert reloaded.changed
        decision = router.route([{"role": "user", "content": questions[0]}])
    new_probe = json.loads((tmp_path / "policy.learn" / "v2" / "probe" / "card.json").read_text())["probe_version"]
    assert decision.policy_version == "2" and served["policy_version"] == "2"
    assert decision.probe_version != old_version
    assert decision.probe_version == new_probe == served["probe_version"]


def test_the_new_policy_file_never_names_the_ledger_password() -> None:
    from triage.eval.learn_write import policy_header

    line = policy_header("loop", "2", 168, 240, "postgresql://triage:s3cret-pw@db.internal:5432/ledger")
    assert "s3cret-pw" not in line
    assert line == ("# loop v2: written by `triage learn` from 168 of the 240 logged queries of "
                    "postgresql://triage:***@db.internal:5432/ledger\n")


def test_the_verdict_names_what_a_claim_of_better_rests_on() -> None:
    """A claim on cost alone says so: cheaper at an accuracy whose intervals overlap is not "better" on
    accuracy; a claim on both metrics needs no qualifier, and disagreeing claims make none.
    Hand-written DR reports stand in for real OPE runs: compare() only reads their intervals, and a
    real run cannot be steered into each of the four cases (the walkthrough test covers a real one)."""
    from triage.eval.learn import compare

    def report(acc: tuple[float, float, float], cost: tuple[float, float, float]) -> dict:
        est = lambda v: {"value": v[0], "ci": [v[1], v[2]]}  # noqa: E731
        return {"estimators": {"dr": {"accuracy": est(acc), "cost": est(cost)}}}

    old = report((0.76, 0.66, 0.82), (0.0096, 0.0083, 0.0115))
    text, improved = compare(old, report((0.69, 0.50, 0.85), (0.0061, 0.0051, 0.0069)))
    assert improved is True and text.endswith("the new version is better in cost, no claim on accuracy"), text
    text, improved = compare(old, report((0.90, 0.85, 0.95), (0.0061, 0.0051, 0.0069)))
    assert improved is True and text.endswith("the new version is better"), text
    text, improved = compare(old, report((0.90, 0.85, 0.95), (0.02, 0.018, 0.025)))
    assert improved is None and "no improvement claimed" in text, text
    text, improved = compare(old, report((0.50, 0.40, 0.60), (0.0096, 0.0083, 0.0115)))
    assert improved is False and text.endswith("the new version is worse in accuracy, no claim on cost"), text
