"""The learned probe routers through the replay evaluator (cross-fitted) on a 200-query slice."""

from __future__ import annotations

import numpy as np

from triage.eval.evaluation import evaluate
from triage.replay import ReplayData, read_replay
from triage.eval.routers import available_routers, make_router


def test_probe_routers_are_registered():
    names = set(available_routers())
    assert {"probe-text", "probe-lm", "probe-text+lm"} <= names
    assert make_router("probe-lm").features == "lm"
    assert make_router("probe-text+lm").features == "text,lm"


def test_probe_text_router_is_cross_fitted_and_sweeps(probe_slice_file):
    data = ReplayData.from_records(read_replay(probe_slice_file), name="slice")
    router = make_router("probe-text:features=text:aux=false")
    train, test = np.arange(0, 150), np.arange(150, 200)
    router.fit(data, train)
    p = router.predict_success(data, test)
    assert p.shape == (50, 2) and ((p >= 0) & (p <= 1)).all()
    sweep = router.sweep(data, test)
    # share 0 -> everything to the cheaper model, share 1 -> everything to the dearer one
    assert (sweep.choices[0] == router.weak_).all() and (sweep.choices[-1] == router.strong_).all()
    # the gain ranking sends the query with the largest P(strong) - P(weak) first
    first = int(np.argmax(p[:, router.strong_] - p[:, router.weak_]))
    k = int(np.argmax((sweep.choices == router.strong_).sum(axis=1) >= 1))
    assert sweep.choices[k, first] == router.strong_


def test_probe_text_router_in_evaluate(probe_slice_file):
    data = ReplayData.from_records(read_replay(probe_slice_file), name="slice")
    result = evaluate(data, ["probe-text:features=text:aux=false", "probe-text:features=lexical,head=mlp"],
                      folds=3, n_boot=0)
    payload = result.to_json()
    text = str(payload)
    assert "probe-text:features=text:aux=false" in text and "apgr" in text.lower()
