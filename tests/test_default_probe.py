"""The real default probe: ``triage probe build-default`` end to end (minutes: it exports the encoder,
trains the aux regressors and computes the text feature for ~15k queries on a fresh test cache).

Every other test loads the small session probe (tests/support/probes.py); this one proves the
command users run builds the real one, into a folder of its own so the session probe is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sidecar import REPO

pytestmark = pytest.mark.minutes


def test_build_default_writes_the_real_default_probe_that_serving_loads(tmp_path: Path) -> None:
    from triage.probes.runtime import default_probe_path, load_probe

    from tests.support.probes import SESSION_PROBE_COMMAND

    out = tmp_path / "default"
    proc = subprocess.run(
        [sys.executable, "-m", "triage.router.cli.main", "probe", "build-default", "--out", str(out)],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    assert f"probe build-default --out {out}" in card["command"]
    assert [(f["name"], f["params"]["aux"]) for f in card["features"]] == [("text", True)]
    assert card["training_data"]["rows_used"] > 15_000  # GSM8K + MMLU, not a slice
    assert card["labels"] == ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    # logistic regression (fixed C: see DEFAULT_HEAD) and the decision latency measured at export
    assert card["head"]["kind"] == "logreg" and card["head"]["selection"] is None
    assert 0 < card["latency"]["p50_ms"] and card["latency"]["includes"] == ["head", "text"]
    # better than chance on cross-fitted predictions for both models
    for label, m in card["metrics"]["calibrated"]["success"].items():
        assert m["auroc"]["value"] > 0.65, label
    probe = load_probe(out)
    hard_query = ("Prove that every planar graph is 4-colourable, citing the discharging argument and the "
                  "reducible configurations.")
    easy, hard = probe.predict(["What is 2 + 2?", hard_query])
    assert abs(sum(easy.tier_probs.values()) - 1.0) < 1e-5
    assert hard.tier_probs["hard"] > easy.tier_probs["hard"]
    # the session's small probe is untouched
    session = json.loads((default_probe_path() / "card.json").read_text())
    assert session["command"] == SESSION_PROBE_COMMAND


def test_build_default_with_the_fast_probe_features(tmp_path: Path) -> None:
    """`--features text:variant=l0` (the fast probe of the README) builds a probe that reads the
    encoder's embedding layer only, and serving loads it like the default one."""
    from triage.probes.runtime import load_probe

    out = tmp_path / "fast"
    proc = subprocess.run(
        [sys.executable, "-m", "triage.router.cli.main", "probe", "build-default", "--features", "text:variant=l0",
         "--out", str(out)],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    assert [(f["name"], f["params"]["variant"], f["params"]["aux"]) for f in card["features"]] == [("text", "l0", True)]
    assert set(card["files"]) >= {"features/text/model.l0.onnx", "features/text/tokenizer.json"}
    assert "features/text/model.l2.int8.onnx" not in card["files"]
    for label, m in card["metrics"]["calibrated"]["success"].items():
        assert m["auroc"]["value"] > 0.65, label
    # It predicts every label and a tier distribution. Its tiers are not checked against the default
    # probe's easy/hard pair: on a query as short as "What is 2 + 2?" it says P(hard) 0.17 against
    # 0.06 for a long proof (the README says so); the cross-fitted AUROCs above are its quality bar.
    (out_1,) = load_probe(out).predict(["Prove that every planar graph is 4-colourable."])
    assert set(out_1.success) == set(card["labels"]) and abs(sum(out_1.tier_probs.values()) - 1.0) < 1e-5
