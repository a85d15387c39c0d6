"""Training a probe from logged bandit data (one outcome per query, with its propensity) - issue #15.

The logged data is simulated from full-information replay data (RouteLLM GSM8K + a third of MMLU,
Mixtral-8x7B vs GPT-4, the session probe's rows, whose text features the test cache already holds):
a logging policy with known propensities picks one candidate per train-split query and only that
outcome is kept, in the ledger-export format of the #15 contract (a ``logged`` block per record).
Bandit and full-information probes are trained on the same train split and scored on the same
held-out test split against every candidate's true outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from triage.probes import calibration as cal
from triage.probes.bandit import make_logged_labels
from triage.probes.bandit_training import train_logged_probe
from triage.probes.evaluation import auroc, brier
from triage.probes.training import (
    TrainConfig,
    feature_matrix,
    parse_features,
    train_probe,
)
from triage.router.cli.main import app
from typer.testing import CliRunner

from tests.support.probes import MMLU_STRIDE, TEXT_FEATURES
from triage.replay import ReplayData, write_replay
from triage.settings import get_settings

runner = CliRunner()
CONFIG = TrainConfig(features=TEXT_FEATURES, folds=3, n_boot=0, head_params={"C": 0.02})


class World:
    """Train/test split, the full-information probe and the test split's features and true labels."""

    def __init__(self) -> None:
        from triage.eval.importers import import_source

        folder = get_settings().data_dir / "routellm"
        records = import_source("routellm", folder, dataset="gsm8k")
        records += import_source("routellm", folder, dataset="mmlu")[::MMLU_STRIDE]
        test = np.random.default_rng(0).random(len(records)) < 0.3
        self.train = [r for r, t in zip(records, test, strict=True) if not t]
        self.test = ReplayData.from_records([r for r, t in zip(records, test, strict=True) if t])
        self.feats = parse_features(TEXT_FEATURES)
        self.full = train_probe(ReplayData.from_records(self.train), CONFIG, features=self.feats)
        self.cands = self.full.labels.candidates  # cheapest first: Mixtral, GPT-4
        self.X = feature_matrix(self.feats, self.test.texts)

    def scores(self, trained) -> dict[str, dict[str, float]]:
        """Per label on the test split: AUROC, Brier and calibration-in-the-large (mean p - rate)."""
        s, _ = trained.head.predict_proba(self.X)
        s = np.column_stack([cal.apply_binary(c, s[:, j]) for j, c in enumerate(trained.calibration["success"])])
        out = {}
        for j, c in enumerate(trained.labels.candidates):
            y = self.test.score[:, self.test.candidates.index(c)] >= 0.5
            out[c] = {"auroc": auroc(y, s[:, j]), "brier": brier(y, s[:, j]), "bias": float(s[:, j].mean() - y.mean())}
        return out

    def logged(self, policy, *, seed: int = 1, propensity: bool = True) -> list:
        """Ledger-export records: one candidate per query drawn from ``policy(record)``, its outcome only."""
        rng = np.random.default_rng(seed)
        out = []
        for r in self.train:
            p = policy(r)
            k = int(rng.choice(len(self.cands), p=p))
            c = self.cands[k]
            out.append(r.model_copy(update={"outcomes": {c: r.outcomes[c]}, "logged": {
                "strategy": c, "candidate": c, "propensity": float(p[k]) if propensity else None,
                "candidates": list(self.cands), "explored": bool(p[k] < 0.5), "greedy_strategy": None,
                "policy": "sim", "policy_version": "1", "probe_version": "none", "tier_probs": {}, "success": {},
                "features": None}}))
        return out


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def uniform(r) -> np.ndarray:
    return np.array([0.5, 0.5])


def test_uniform_logging_tracks_the_full_information_probe(world):
    """Uniform logging: each label is seen on about half the train queries (ESS = rows, no clipping).
    Bound: halving the rows of a linear text probe costs a few AUROC points (measured 0.004 / 0.036 on
    this split; the test split's 95% bootstrap half-width is ~0.025), so |dAUROC| <= 0.06 and the
    Brier score within 0.01 of the full-information probe's."""
    labels = make_logged_labels(world.logged(uniform))
    bandit = train_logged_probe(labels, CONFIG, features=world.feats)
    full, got = world.scores(world.full), world.scores(bandit)
    for c in world.cands:
        assert abs(got[c]["auroc"] - full[c]["auroc"]) <= 0.06, (c, got[c], full[c])
        assert got[c]["brier"] <= full[c]["brier"] + 0.01, (c, got[c], full[c])
        assert got[c]["auroc"] > 0.62  # it did learn something per label
    info = bandit.logged["labels"]
    assert sum(v["rows"] for v in info.values()) == len(world.train)
    assert all(v["clipped_rows"] == 0 and v["ess"] == pytest.approx(v["rows"]) for v in info.values())


def test_inverse_propensity_weighting_fixes_skewed_logging(world):
    """A logging router that knew more than the probe's features (here: sends GPT-4 the queries
    Mixtral fails, with 10% exploration) shows each label a biased sample. Unweighted, Mixtral's model
    learns its success rate on the queries it got (mostly ones it solves): over-confident by > 0.1 and
    a clearly worse Brier score. IPS-weighted, both labels stay close to the full-information probe.
    (When the logging depends only on the probe's own features, weighting changes little - measured,
    not asserted: the per-label models then see an unbiased sample given x.)"""
    weak = world.cands[0]

    def informed(r) -> np.ndarray:
        return np.array([0.9, 0.1]) if r.outcomes[weak].score >= 0.5 else np.array([0.1, 0.9])

    labels = make_logged_labels(world.logged(informed))
    ips = world.scores(train_logged_probe(labels, CONFIG, features=world.feats))
    naive = world.scores(train_logged_probe(labels, CONFIG, features=world.feats, weighting="none"))
    full = world.scores(world.full)
    for c in world.cands:
        assert ips[c]["brier"] <= full[c]["brier"] + 0.015, (c, ips[c], full[c])
        assert abs(ips[c]["bias"]) < 0.04, (c, ips[c])
    assert naive[weak]["bias"] > 0.1 and naive[weak]["brier"] >= ips[weak]["brier"] + 0.02, (naive, ips)
    assert naive[world.cands[1]]["bias"] < -0.05  # and GPT-4 looks worse than it is


def test_auto_weighting_keeps_ips_where_it_removes_bias_and_drops_it_where_it_only_adds_variance(world):
    """``weighting="auto"`` (the default) picks, for a pair of labels, the per-label fits whose gain
    ranks the logged queries best by doubly-robust value. (a) The informed logger of the test above:
    the unweighted Mixtral model is biased, so auto keeps IPS and matches the IPS probe. (b) A logger
    that chose by the query's features only (the full-information probe's own cross-fitted
    P(Mixtral succeeds), greedy with 10% exploration, as a probe-driven policy logs): the unweighted
    per-label models are unbiased given x, while weights of 9 vs 1.1 halve the effective sample size;
    auto then drops the weights for at least one label and ranks at least as well as the IPS fit (test
    AUROC, summed over the labels)."""
    weak = world.cands[0]

    def informed(r) -> np.ndarray:
        return np.array([0.9, 0.1]) if r.outcomes[weak].score >= 0.5 else np.array([0.1, 0.9])

    labels = make_logged_labels(world.logged(informed))
    auto = train_logged_probe(labels, CONFIG, features=world.feats)
    assert auto.logged["weighting"][weak]["chosen"] == "ips", auto.logged["weighting"]
    assert abs(world.scores(auto)[weak]["bias"]) < 0.04

    p_weak = dict(zip(world.full.labels.rows.tolist(), world.full.oof_success[:, 0].tolist(), strict=True))
    row_of = {r.id: k for k, r in enumerate(world.train)}  # ReplayData.from_records keeps the order
    cut = float(np.median(world.full.oof_success[:, 0]))

    def by_features(r) -> np.ndarray:
        easy = p_weak.get(row_of[r.id], cut) >= cut
        return np.array([0.9, 0.1]) if easy else np.array([0.1, 0.9])

    labels = make_logged_labels(world.logged(by_features))
    auto = train_logged_probe(labels, CONFIG, features=world.feats)
    ips = train_logged_probe(labels, CONFIG, features=world.feats, weighting="ips")
    chosen = {c: v["chosen"] for c, v in auto.logged["weighting"].items()}
    assert "none" in chosen.values(), auto.logged["weighting"]
    got, base = world.scores(auto), world.scores(ips)
    assert sum(got[c]["auroc"] for c in world.cands) >= sum(base[c]["auroc"] for c in world.cands) - 1e-9, (got, base)
    selection = auto.logged["weighting_selection"]  # the choice is the highest of the recorded values
    assert selection["chosen"] == "/".join(chosen[c] for c in world.cands)
    assert selection["values"][selection["chosen"]] == max(selection["values"].values()), selection
    assert len(selection["values"]) == 4 and selection["queries"] == labels.n


def _write(records, path: Path) -> Path:
    write_replay(records, path)
    return path


def _one_line_exit_2(res, *words: str) -> None:
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    for w in words:
        assert w in res.output, res.output


def _train(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["probe", "train", "--data", str(data), "--out", str(out), "--features",
                               TEXT_FEATURES[0], "--folds", "3", *extra])


@pytest.fixture(scope="module")
def logged_probe(world, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("logged")
    data = _write(world.logged(uniform), folder / "ledger-export.jsonl")
    res = _train(data, folder / "probe")
    assert res.exit_code == 0, res.output
    assert "logged bandit data" in res.output and "ESS" in res.output and "rows" in res.output
    # and says which fit each label got, with the value that chose them (the card's record of it)
    selection = json.loads((folder / "probe" / "card.json").read_text())["training_data"]["logged"]["weighting_selection"]
    assert f"{selection['chosen']} {selection['values'][selection['chosen']]:.4f} (chosen)" in res.output, res.output
    assert res.output.count("(chosen)") == 1 and all(combo in res.output for combo in selection["values"]), res.output
    return data, folder / "probe"


def test_probe_train_reads_a_ledger_export(world, logged_probe):
    from triage.probes.runtime import load_probe

    _, folder = logged_probe
    card = json.loads((folder / "card.json").read_text())
    logged = card["training_data"]["logged"]
    assert logged["estimator"].startswith("per label an IPS-weighted or unweighted fit") and logged["max_weight"] == 20.0
    assert {v["chosen"] for v in logged["weighting"].values()} <= {"ips", "none"}  # `triage probe train` chose
    assert set(logged["labels"]) == set(world.cands) and all(v["ess"] > 1000 for v in logged["labels"].values())
    assert card["labels"] == world.cands
    probe = load_probe(folder)
    s, t = probe.predict_arrays(["What is 2 + 2?", world.test.texts[0]])
    assert s.shape == (2, 2) and np.allclose(t.sum(axis=1), 1.0, atol=1e-5)


def test_missing_propensity_is_refused_unless_assumed(world, tmp_path):
    data = _write(world.logged(uniform, propensity=False)[:600], tmp_path / "old-export.jsonl")
    _one_line_exit_2(_train(data, tmp_path / "p"), "no propensity", "--assume-propensity", "biased")
    assert not (tmp_path / "p").exists()
    res = _train(data, tmp_path / "p", "--assume-propensity", "1")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p" / "card.json").read_text())["training_data"]["logged"]["assumed_propensity"] == 1


def test_probe_train_weighting_can_be_fixed_and_is_checked(world, tmp_path):
    data = _write(world.logged(uniform)[:600], tmp_path / "export.jsonl")
    res = _train(data, tmp_path / "p", "--weighting", "none")
    assert res.exit_code == 0, res.output
    logged = json.loads((tmp_path / "p" / "card.json").read_text())["training_data"]["logged"]
    assert logged["estimator"] == "unweighted"
    _one_line_exit_2(_train(data, tmp_path / "q", "--weighting", "sometimes"), "--weighting must be auto, ips or none")
    assert not (tmp_path / "q").exists()


def test_too_few_rows_for_a_candidate_is_refused(world, tmp_path):
    rows = world.logged(lambda r: np.array([0.99, 0.01]), seed=3)[:1500]
    strong = world.cands[1]
    count = sum(1 for r in rows if strong in r.outcomes)
    assert 0 < count < 30
    data = _write(rows, tmp_path / "skewed.jsonl")
    _one_line_exit_2(_train(data, tmp_path / "p"), f"'{strong}' ({count} rows)", "at least 30")


def test_empty_prompts_are_refused(world, tmp_path):
    rows = [r.model_copy(update={"prompt": ""}) for r in world.logged(uniform)[:300]]
    _one_line_exit_2(_train(_write(rows, tmp_path / "no-prompts.jsonl"), tmp_path / "p"), "empty prompt")


def _policy(tmp_path: Path, example: str, probe: Path) -> Path:
    from triage.policies.loader import EXAMPLES_DIR

    raw = yaml.safe_load((EXAMPLES_DIR / example).read_text())
    raw["probe"] = str(probe)
    path = tmp_path / example
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_degenerate_tier_shares_are_refused(world, logged_probe, tmp_path):
    """The issue's case: a ledger export without prompts gives every query the same probe output, so
    tier-share thresholds put everything in one tier. Refused (exit 2, nothing written); the same
    calibration on the export with prompts goes through."""
    _, probe = logged_probe
    path = _policy(tmp_path, "local.yaml", probe)
    before = path.read_text()
    blank = [r.model_copy(update={"prompt": ""}) for r in world.logged(uniform)[:400]]
    res = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(_write(blank, tmp_path / "b.jsonl")),
                              "--tier-shares", "0.5,0.3,0.2"])
    _one_line_exit_2(res, "degenerate calibration", "100%", "1 distinct")
    assert path.read_text() == before
    subset = _write(world.logged(uniform)[:400], tmp_path / "s.jsonl")
    res = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(subset), "--tier-shares", "0.5,0.3,0.2"])
    assert res.exit_code == 0, res.output


def test_calibrate_refuses_accuracy_objectives_on_logged_data(logged_probe, tmp_path):
    data, probe = logged_probe
    path = _policy(tmp_path, "two_model.yaml", probe)
    res = runner.invoke(app, ["policy", "calibrate", "-p", str(path), "-d", str(data), "--target-accuracy", "0.95"])
    _one_line_exit_2(res, "logged bandit data", "--tier-shares")


def test_unreachable_target_and_one_strategy_results_are_refused(world, tmp_path):
    """Full-information data: a target no setting meets, and a cost cap met only by sending every
    query to the cheap strategy, exit 2 instead of writing the closest point."""
    data = _write(world.train[:1200], tmp_path / "full.jsonl")
    outputs = tmp_path / "oof.jsonl"
    with outputs.open("w") as fh:
        for k, row in enumerate(world.full.labels.rows[:1200]):
            fh.write(json.dumps({"id": world.train[row].id,
                                 "tier_probs": dict(zip(("easy", "normal", "hard"), world.full.oof_tier[k].tolist())),
                                 "success": dict(zip(world.cands, world.full.oof_success[k].tolist()))}) + "\n")
    from triage.policies.loader import EXAMPLES_DIR

    path = tmp_path / "two_model.yaml"
    path.write_text((EXAMPLES_DIR / "two_model.yaml").read_text())
    before = path.read_text()
    base = ["policy", "calibrate", "-p", str(path), "-d", str(data), "--probe-outputs", str(outputs)]
    _one_line_exit_2(runner.invoke(app, [*base, "--target-accuracy", "1.5"]), "target unreachable")
    _one_line_exit_2(runner.invoke(app, [*base, "--max-cost-per-query", "0.0000001"]), "target unreachable")
    # A probe that says the same about every query (e.g. outputs of an export without prompts): every
    # setting sends all queries one way; the most accurate under a loose cap is "always large".
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"id": r.id, "tier_probs": {"easy": 0.2, "normal": 0.5, "hard": 0.3},
                                        "success": dict.fromkeys(world.cands, 0.5)}) + "\n"
                            for r in world.train[:1200]))
    base[-1] = str(flat)
    res = runner.invoke(app, [*base, "--max-cost-per-query", "1"])
    _one_line_exit_2(res, "degenerate calibration", "routes 100%", "'large'")
    assert path.read_text() == before
    ok = runner.invoke(app, [*base, "--max-cost-per-query", "1", "--allow-degenerate", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["routed_share"] == {"large": 1.0}
