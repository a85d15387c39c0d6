"""The ``auto`` head: regularisation and head kind chosen by inner cross-validation on the fitting rows
only, recorded in the probe card (#14 item 3)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from triage.probes.heads import make_head
from triage.probes.heads.select import DEFAULT_C_GRID
from triage.router.cli.main import app

runner = CliRunner()


def _data(n: int, d: int, signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    logit = signal * X[:, 0]
    s = np.column_stack([rng.random(n) < 1 / (1 + np.exp(-logit)), rng.random(n) < 0.7]).astype(np.int8)
    tier = np.where(s[:, 0] == 1, 0, np.where(s[:, 1] == 1, 1, 2))
    return X, s, tier


def test_noise_features_get_the_strongest_regularisation():
    X, s, tier = _data(300, 200, signal=0.0)
    head = make_head("auto").fit(X, s, tier)
    # the grid's smallest C wins, so the search goes two steps past that edge (and picks the last)
    cs = [c["params"]["C"] for c in head.selection_["candidates"]]
    assert len(cs) == len(DEFAULT_C_GRID) + 2 and cs == sorted(cs)
    assert head.describe()[1]["C"] == min(cs) < min(DEFAULT_C_GRID)


def test_the_tier_model_chooses_its_own_regularisation():
    """Success labels that carry little signal choose a tiny C; tiers that a feature predicts well
    must not inherit it (a flat tier model routes every query alike)."""
    rng = np.random.default_rng(1)
    n, d = 600, 40
    X = rng.normal(size=(n, d)).astype(np.float32)
    s = np.column_stack([rng.random(n) < 0.5, rng.random(n) < 0.5]).astype(np.int8)  # noise
    tier = np.digitize(X[:, 1] + 0.3 * rng.normal(size=n), [-0.5, 0.5])  # strong: feature 1
    test = np.arange(n) >= 450
    head = make_head("auto").fit(X[~test], s[~test], tier[~test])
    params = head.describe()[1]
    assert params["tier_C"] > params["C"], params
    assert head.selection_["tier"]["chosen"]["tier_C"] == params["tier_C"]
    shared = make_head("logreg", C=params["C"]).fit(X[~test], s[~test], tier[~test])

    def held_out_loss(h) -> float:
        _, probs = h.predict_proba(X[test])
        return float(-np.log(np.clip(probs[np.arange(int(test.sum())), tier[test]], 1e-4, 1)).mean())

    assert held_out_loss(head) < held_out_loss(shared) - 0.1
    _, probs = head.predict_proba(X[test])
    assert probs[:, 2].std() > 0.2  # P(hard) moves with the query


def test_the_search_can_be_held_to_the_grid():
    X, s, tier = _data(300, 200, signal=0.0)
    head = make_head("auto", extend=0).fit(X, s, tier)
    assert head.describe()[1]["C"] == min(DEFAULT_C_GRID)
    assert len(head.selection_["candidates"]) == len(DEFAULT_C_GRID)


def test_a_strong_signal_gets_weaker_regularisation():
    X, s, tier = _data(3000, 3, signal=6.0)
    head = make_head("auto").fit(X, s, tier)
    kind, params, selection = head.describe()
    assert kind == "logreg" and params["C"] > min(DEFAULT_C_GRID)
    scores = {c["params"]["C"]: c["log_loss"] for c in selection["candidates"]}
    assert scores[params["C"]] < scores[min(DEFAULT_C_GRID)]


def test_selection_sees_only_the_rows_it_is_fitted_on():
    # Rows 0..199 carry no signal, rows 200.. a strong one: fitted on the first block only, the
    # choice must be the noise answer and count 200 rows, whatever the rest says.
    Xn, sn, tn = _data(200, 50, signal=0.0, seed=1)
    Xs, ss, ts = _data(2000, 50, signal=8.0, seed=2)
    X, s, tier = np.vstack([Xn, Xs]), np.vstack([sn, ss]), np.concatenate([tn, ts])
    rows = np.arange(200)
    head = make_head("auto").fit(X[rows], s[rows], tier[rows])
    assert head.selection_["rows"] == 200
    assert head.describe()[1]["C"] < min(DEFAULT_C_GRID)
    assert make_head("auto").fit(X[200:], s[200:], tier[200:]).describe()[1]["C"] > min(DEFAULT_C_GRID)


def test_auto_head_exports_the_chosen_head():
    X, s, tier = _data(400, 8, signal=3.0)
    head = make_head("auto").fit(X, s, tier)
    ps, pt = head.predict_proba(X)
    sess = ort.InferenceSession(head.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    os_, ot = sess.run(["success", "tier"], {"features": X})
    np.testing.assert_allclose(os_, ps, atol=1e-5)
    np.testing.assert_allclose(ot, pt, atol=1e-5)


def test_auto_head_can_choose_the_mlp():
    X, s, tier = _data(120, 4, signal=2.0)
    head = make_head("auto", heads="logreg,mlp", inner_folds=2, C_grid=(0.01, 0.1), extend=0,
                     mlp_params={"epochs": 20}).fit(X, s, tier)
    kinds = [c["head"] for c in head.selection_["candidates"]]
    assert kinds.count("mlp") == 1 and kinds.count("logreg") == 2
    assert head.describe()[0] == head.selection_["chosen"]["head"]


@pytest.mark.parametrize("params, message", [
    ({"heads": "forest"}, "heads must be"),
    ({"C_grid": (0.0, 1.0)}, "positive"),
    ({"inner_folds": 1}, "inner_folds"),
])
def test_bad_auto_params_raise(params, message):
    X, s, tier = _data(60, 3, signal=1.0)
    with pytest.raises(ValueError, match=message):
        make_head("auto", **params).fit(X, s, tier)


def test_probe_train_records_the_selection_in_the_card(probe_slice_file, tmp_path):
    out = tmp_path / "probe"
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--features", "lexical",
                              "--out", str(out), "--folds", "3"])  # --C auto is the default
    assert res.exit_code == 0, res.output
    head = json.loads((out / "card.json").read_text())["head"]
    tried = [c["params"]["C"] for c in head["selection"]["candidates"]]
    assert head["kind"] == "logreg" and head["params"]["C"] in tried and set(DEFAULT_C_GRID) <= set(tried)
    assert head["selection"]["chosen"] == {"head": "logreg", "params": {"C": head["params"]["C"],
                                                                        "tier_C": head["params"]["tier_C"]}}
    tier_tried = [c["C"] for c in head["selection"]["tier"]["candidates"]]
    assert head["params"]["tier_C"] in tier_tried and set(DEFAULT_C_GRID) <= set(tier_tried)
    assert head["selection"]["rows"] == 200

    fixed = tmp_path / "fixed"
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--features", "lexical",
                              "--out", str(fixed), "--folds", "3", "--C", "0.3"])
    assert res.exit_code == 0, res.output
    head = json.loads((fixed / "card.json").read_text())["head"]
    assert head["params"]["C"] == 0.3 and head["selection"] is None


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan"])
def test_bad_C_exits_2_with_one_line(probe_slice_file, tmp_path, value):
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--out", str(tmp_path / "p"),
                              "--C", value])
    assert res.exit_code == 2
    assert "--C must be a positive number or auto" in res.output and len(res.output.strip().splitlines()) == 1


def test_probe_train_records_its_decision_latency(probe_slice_file, tmp_path):
    out = tmp_path / "probe"
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--features", "text:aux=false",
                              "--out", str(out), "--folds", "2", "--C", "0.02"])
    assert res.exit_code == 0, res.output
    latency = json.loads((out / "card.json").read_text())["latency"]
    assert latency["queries"] == 50 and 0 < latency["p50_ms"] <= latency["p95_ms"]
    assert latency["includes"] == ["head", "text"] and "decision p50" in res.output
    res = runner.invoke(app, ["probe", "verify", str(out)])  # the card rewritten after the hashes still verifies
    assert res.exit_code == 0, res.output
