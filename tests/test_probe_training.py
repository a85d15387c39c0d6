"""Labels, heads (sklearn / torch -> ONNX), calibration and probe metrics."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from triage.replay import Outcome, ReplayData, ReplayRecord
from triage.probes import calibration as cal
from triage.probes.evaluation import auroc, ece, probe_metrics, reliability_plot
from triage.probes.heads import make_head
from triage.probes.labels import LabelRule, make_labels


def _data(rows):
    records = [
        ReplayRecord(id=str(i), prompt=f"q{i}", outcomes={
            name: Outcome(score=s, cost_usd=c, completion_tokens=t) for name, (s, c, t) in outs.items()})
        for i, outs in enumerate(rows)
    ]
    return ReplayData.from_records(records)


def test_labels_follow_the_documented_rule():
    # columns deliberately not in cost order: "big" is listed first
    data = _data([
        {"big": (1, 1.0, 10), "small": (1, 0.1, 10)},  # small right -> easy
        {"big": (1, 1.0, 10), "small": (0, 0.1, 10)},  # only big -> normal
        {"big": (0, 1.0, 10), "small": (0, 0.1, 10)},  # none -> hard
        {"big": (0, 1.0, 10), "small": (0.6, 0.1, 10)},  # small scores above 0.5 -> easy
    ])
    lab = make_labels(data)
    assert lab.candidates == ["small", "big"]
    assert lab.success.tolist() == [[1, 1], [0, 1], [0, 0], [1, 0]]
    assert lab.tier.tolist() == [0, 1, 2, 0]
    strict = make_labels(data, LabelRule(threshold=0.7))
    assert strict.tier.tolist() == [0, 1, 2, 2]
    both_cheap = make_labels(data, LabelRule(easy_candidates=2))
    assert both_cheap.tier.tolist() == [0, 0, 2, 0]
    with pytest.raises(ValueError, match="easy_candidates"):
        make_labels(data, LabelRule(easy_candidates=3))


def test_budget_turns_long_answers_into_failures():
    data = _data([{"big": (1, 1.0, 500), "small": (1, 0.1, 50)}, {"big": (1, 1.0, 50), "small": (1, 0.1, 900)}])
    lab = make_labels(data, LabelRule(budgets={"small": 100}))
    assert lab.success.tolist() == [[1, 1], [0, 1]]
    assert lab.tier.tolist() == [0, 1]


def _toy(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    logit = X[:, 0] - 0.5 * X[:, 1]
    s = np.column_stack([(rng.random(n) < 1 / (1 + np.exp(-logit))), (rng.random(n) < 0.8)]).astype(np.int8)
    tier = np.where(s[:, 0] == 1, 0, np.where(s[:, 1] == 1, 1, 2))
    return X, s, tier


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_head_onnx_equals_training_library(kind):
    X, s, tier = _toy()
    head = make_head(kind).fit(X, s, tier)
    ps, pt = head.predict_proba(X)
    sess = ort.InferenceSession(head.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    os_, ot = sess.run(["success", "tier"], {"features": X})
    np.testing.assert_allclose(os_, ps, atol=1e-5)
    np.testing.assert_allclose(ot, pt, atol=1e-5)
    np.testing.assert_allclose(ot.sum(axis=1), 1.0, atol=1e-5)
    assert auroc(s[:, 0], ps[:, 0]) > 0.7  # it learned the planted signal


def test_logreg_head_handles_constant_labels_and_missing_tiers():
    X, s, _ = _toy()
    s[:, 1] = 1
    tier = np.where(s[:, 0] == 1, 0, 1)  # no "hard" row
    head = make_head("logreg").fit(X, s, tier)
    sess = ort.InferenceSession(head.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    os_, ot = sess.run(["success", "tier"], {"features": X[:5]})
    np.testing.assert_allclose(os_[:, 1], 1.0)
    np.testing.assert_allclose(ot[:, 2], 0.0)
    np.testing.assert_allclose(ot, head.predict_proba(X[:5])[1], atol=1e-5)


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_calibration_is_numbers_and_improves_miscalibrated_scores(method):
    import json

    rng = np.random.default_rng(1)
    true_p = rng.random(4000)
    y = (rng.random(4000) < true_p).astype(int)
    true_p = np.clip(true_p, 1e-3, 1 - 1e-3)
    skewed = 1 / (1 + np.exp(-3 * np.log(true_p / (1 - true_p))))  # over-confident: logits x3
    params = cal.fit_binary(method, skewed, y)
    json.dumps(params)  # plain numbers only
    fixed = cal.apply_binary(params, skewed)
    assert ece(y, fixed) < ece(y, skewed) / 2
    if method != "isotonic":  # strictly monotone: the ranking is kept
        assert auroc(y, fixed) == pytest.approx(auroc(y, skewed), abs=1e-4)  # float32 output: rare ties


def test_isotonic_interp_equals_sklearn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(2)
    p, y = rng.random(500), rng.integers(0, 2, 500)
    params = cal.fit_binary("isotonic", p, y)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y).predict(p)
    np.testing.assert_allclose(cal.apply_binary(params, p), ref, atol=1e-6)


def test_tier_temperature_sums_to_one():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1, 1, 1], size=200)
    tier = rng.integers(0, 3, 200)
    params = cal.fit_tier_temperature(probs, tier)
    out = cal.apply_tier(params, probs)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert params["temperature"] > 1.0  # random labels: flatten


def test_metrics_and_reliability_plot(tmp_path):
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))
    X, s, tier = _toy()
    ps, pt = make_head("logreg").fit(X, s, tier).predict_proba(X)
    m = probe_metrics(["a", "b"], s, ps, tier, pt, n_boot=50)
    lo, hi = m["success"]["a"]["auroc"]["ci95"]
    assert lo <= m["success"]["a"]["auroc"]["value"] <= hi
    png = reliability_plot(["a", "b"], s, ps, tmp_path / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_probe_cross_fits(trained_text_probe):
    trained = trained_text_probe.trained
    n = len(trained.labels.rows)
    assert trained.oof_success.shape == (n, 2) and trained.X.shape == (n, 406)
    assert trained.calibration["method"] == "platt" and len(trained.calibration["success"]) == 2
    assert "cross-fitted" in trained.metrics["kind"]
