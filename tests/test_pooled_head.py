"""The pooled logistic head (``pooled-logreg``): one multi-task fit over the labels (issue #15).

Synthetic logged data with the shape that motivates it: two strategies whose success both fall with
the same difficulty direction, a policy that sends the cheap one only easy queries (plus 10%
exploration). The cheap label's own model sees almost no hard query; the pooled fit learns the shared
difficulty slope from every row.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from triage.probes.heads import available_heads, make_head


def _world(seed: int, n: int = 400, d: int = 20):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    difficulty = 1.5 * X[:, 0] + 0.5 * X[:, 1]
    truth = np.column_stack([1 / (1 + np.exp(difficulty + 0.5)), 1 / (1 + np.exp(difficulty - 2.0))])  # cheap, strong
    success = (rng.random((n, 2)) < truth).astype(int)
    greedy = (difficulty > -0.5).astype(int)  # cheap only for the easiest ~35%
    arm = np.where(rng.random(n) < 0.1, rng.integers(0, 2, n), greedy)
    rows = [(np.flatnonzero(arm == j), success[arm == j, j], np.ones(int((arm == j).sum()))) for j in range(2)]
    return X, truth, success, rows


def test_pooled_head_is_discovered_and_exports_the_same_numbers_to_onnx():
    assert "pooled-logreg" in available_heads()
    X, _, success, _ = _world(0)
    tier = np.where(success[:, 0] == 1, 0, np.where(success[:, 1] == 1, 1, 2))
    head = make_head("pooled-logreg", C=0.1).fit(X, success, tier)
    p, t = head.predict_proba(X)
    sess = ort.InferenceSession(head.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    po, to = sess.run(["success", "tier"], {"features": X})
    np.testing.assert_allclose(po, p, atol=1e-5)
    np.testing.assert_allclose(to, t, atol=1e-5)
    assert head.get_params() == {"C": 0.1, "shared_scale": 3.0, "max_iter": 3000, "tier_C": None}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pooling_recovers_the_cheap_strategy_on_the_hard_queries_it_was_never_sent(seed):
    X, truth, _, rows = _world(seed)
    X_new, truth_new, _, _ = _world(seed + 100, n=4000)
    hard = (1.5 * X_new[:, 0] + 0.5 * X_new[:, 1]) > 0.5
    per_label = make_head("logreg", C=0.02).fit_logged(X, rows, None)
    pooled = make_head("pooled-logreg", C=0.02).fit_logged(X, rows, None)
    err = {}
    for name, head in (("per_label", per_label), ("pooled", pooled)):
        p, _ = head.predict_proba(X_new[hard])
        err[name] = float(np.mean((p[:, 0] - truth_new[hard, 0]) ** 2))
    assert err["pooled"] < 0.7 * err["per_label"], err


def test_all_outcomes_equal_gives_constant_labels():
    X, _, _, rows = _world(4, n=60)
    rows = [(idx, np.ones_like(y), w) for idx, y, w in rows]
    head = make_head("pooled-logreg").fit_logged(X, rows, None)
    p, _ = head.predict_proba(X)
    assert np.allclose(p, 1.0)
