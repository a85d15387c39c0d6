"""`triage probe ...` end to end on a 200-query slice, and its one-line errors (exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from triage.router.cli.main import app

runner = CliRunner()


def test_train_eval_verify(probe_slice_file, tmp_path):
    out = tmp_path / "probe"
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--features", "text:aux=false",
                              "--out", str(out), "--folds", "3", "--head", "logreg"])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "card.json").read_text())
    assert card["training_data"]["sha256"] and card["training_data"]["rows_used"] == 200
    assert "probe train" in card["command"] and "--features" in card["command"]
    assert (out / "reliability.png").is_file() and "reliability.png" in card["files"]

    res = runner.invoke(app, ["probe", "eval", "--probe", str(out), "--data", str(probe_slice_file),
                              "--json", "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    auc = metrics["success"][card["labels"][0]]["auroc"]["value"]
    assert 0.5 < auc <= 1.0  # in-sample: the probe saw these queries

    res = runner.invoke(app, ["probe", "verify", str(out)])
    assert res.exit_code == 0 and "files verified" in res.output


def test_mlp_head_trains_and_exports(probe_slice_file, tmp_path):
    out = tmp_path / "mlp"
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--features", "lexical",
                              "--out", str(out), "--folds", "3", "--head", "mlp"])
    assert res.exit_code == 0, res.output
    from triage.probes.runtime import load_probe

    probe = load_probe(out)
    assert probe.card.head.kind == "mlp"
    s, t = probe.predict_arrays(["What is 7 * 8?"])
    assert s.shape == (1, 2) and np.isclose(t.sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--features", "nope"], "unknown feature 'nope'"),
    (["--head", "forest"], "--head must be one of"),
    (["--folds", "1"], "--folds must be at least 2"),
    (["--calibration", "magic"], "--calibration must be one of"),
])
def test_train_bad_options_exit_2(probe_slice_file, tmp_path, args, message):
    res = runner.invoke(app, ["probe", "train", "--data", str(probe_slice_file), "--out", str(tmp_path / "p"), *args])
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1


def test_missing_data_and_corrupt_probe_exit_2(probe_copy, tmp_path):
    res = runner.invoke(app, ["probe", "train", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "not found" in res.output
    head = probe_copy / "head.onnx"
    head.write_bytes(head.read_bytes()[:-10])
    res = runner.invoke(app, ["probe", "verify", str(probe_copy)])
    assert res.exit_code == 2 and "corrupted" in res.output
