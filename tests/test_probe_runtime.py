"""Acceptance: an exported probe reloads in a fresh process with onnxruntime only, gives the
training library's probabilities, and a corrupted or mismatched artifact is refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triage.probes import calibration as cal
from triage.probes.card import CARD_FILE
from triage.probes.runtime import ProbeArtifactError, ProbeInputError, load_probe

ROOT = Path(__file__).resolve().parents[1]

FRESH_PROCESS = r"""
import json, pickle, sys
def _no_pickle(*a, **k):
    raise AssertionError("pickle used on the request path")
pickle.load = pickle.loads = _no_pickle
from triage.probes.runtime import load_probe
probe = load_probe(sys.argv[1])
texts = json.load(open(sys.argv[2]))
success, tier = probe.predict_arrays(texts)
one = probe.predict_one(texts[0])
heavy = sorted(m for m in ("torch", "sklearn", "transformers", "scipy", "skl2onnx", "onnx") if m in sys.modules)
print(json.dumps({"success": success.tolist(), "tier": tier.tolist(), "heavy": heavy,
                  "one": one.success, "one_tiers": one.tier_probs, "version": probe.version}))
"""


def _training_library_probs(slice_) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What sklearn (the training library) + the stored calibration say for the first 40 queries."""
    trained = slice_.trained
    X = trained.X[:40]
    raw_s, raw_t = trained.head.predict_proba(X)
    s, t = cal.apply_all(trained.calibration, raw_s, raw_t)
    texts = [slice_.data.texts[i] for i in trained.labels.rows[:40]]
    return s, t, texts


def test_fresh_process_matches_training_library(trained_text_probe, tmp_path):
    s_ref, t_ref, texts = _training_library_probs(trained_text_probe)
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(texts))
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(trained_text_probe.folder), str(texts_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"request path imported {out['heavy']}"
    np.testing.assert_allclose(np.array(out["success"]), s_ref, atol=1e-4)
    np.testing.assert_allclose(np.array(out["tier"]), t_ref, atol=1e-4)
    labels = trained_text_probe.trained.labels.candidates
    assert list(out["one"]) == labels
    np.testing.assert_allclose([out["one"][c] for c in labels], s_ref[0], atol=1e-4)
    assert abs(sum(out["one_tiers"].values()) - 1.0) < 1e-5


def test_in_process_predict_shapes_and_card(trained_text_probe):
    probe = load_probe(trained_text_probe.folder / CARD_FILE)
    assert probe.feature_names == ["text"]
    assert probe.labels == trained_text_probe.trained.labels.candidates
    outs = probe.predict(["What is 2 + 2?", "A train leaves at 3pm going 60 mph. When does it arrive 150 miles away?"])
    assert len(outs) == 2 and all(o.probe_version == probe.version for o in outs)
    assert all(0.0 <= p <= 1.0 for o in outs for p in o.success.values())
    assert probe.predict([]) == []
    card = probe.card
    assert card.training_data["sha256"] and card.command.startswith("pytest")
    assert set(card.files) >= {"head.onnx", "features/text/model.l2.int8.onnx", "features/text/tokenizer.json"}
    m = card.metrics["calibrated"]["success"][probe.labels[0]]["auroc"]
    assert 0.0 <= m["value"] <= 1.0 and len(m["ci95"]) == 2


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_card(folder: Path, fn) -> None:
    card = json.loads((folder / CARD_FILE).read_text())
    fn(card)
    (folder / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize("victim", ["head.onnx", "features/text/model.l2.int8.onnx", "features/text/tokenizer.json"])
def test_flipped_byte_is_refused(probe_copy, victim):
    _flip_byte(probe_copy / victim)
    with pytest.raises(ProbeArtifactError, match=f"{victim}.*corrupted"):
        load_probe(probe_copy)


def test_wrong_hash_in_card_is_refused(probe_copy):
    _edit_card(probe_copy, lambda c: c["files"].update({"head.onnx": "0" * 64}))
    with pytest.raises(ProbeArtifactError, match="head.onnx"):
        load_probe(probe_copy)


def test_missing_file_is_refused(probe_copy):
    (probe_copy / "head.onnx").unlink()
    with pytest.raises(ProbeArtifactError, match="missing"):
        load_probe(probe_copy)


def test_mismatched_feature_dim_is_refused(probe_copy):
    def shrink(card):
        card["features"][0]["dim"] -= 1
        card["head"]["input_dim"] -= 1

    _edit_card(probe_copy, shrink)
    with pytest.raises(ProbeArtifactError, match="dim"):
        load_probe(probe_copy)


def test_mismatched_feature_version_is_refused(probe_copy):
    _edit_card(probe_copy, lambda c: c["features"][0].update({"version": "99"}))
    with pytest.raises(ProbeArtifactError, match="version 99"):
        load_probe(probe_copy)


def test_changed_feature_params_are_refused(probe_copy):
    _edit_card(probe_copy, lambda c: c["features"][0]["params"].update({"max_tokens": 64}))
    with pytest.raises(ProbeArtifactError, match="identity"):
        load_probe(probe_copy)


def test_unknown_feature_is_refused(probe_copy):
    _edit_card(probe_copy, lambda c: c["features"][0].update({"name": "no-such-feature"}))
    with pytest.raises(ProbeArtifactError, match="no-such-feature"):
        load_probe(probe_copy)


def test_label_count_mismatch_is_refused(probe_copy):
    def add_label(card):
        card["labels"].append("extra-model")
        card["calibration"]["success"].append({"method": "none"})

    _edit_card(probe_copy, add_label)
    with pytest.raises(ProbeArtifactError, match="success columns"):
        load_probe(probe_copy)


def test_file_outside_folder_is_refused(probe_copy):
    _edit_card(probe_copy, lambda c: c["files"].update({"../escape.txt": "0" * 64}))
    with pytest.raises(ProbeArtifactError, match="outside"):
        load_probe(probe_copy)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema_version": 1}'])
def test_broken_card_is_refused(probe_copy, content):
    (probe_copy / CARD_FILE).write_text(content)
    with pytest.raises(ProbeArtifactError):
        load_probe(probe_copy)


def test_no_card_is_refused(tmp_path):
    with pytest.raises(ProbeArtifactError, match="no probe card"):
        load_probe(tmp_path)


def test_precomputed_features_are_checked_and_used(trained_text_probe):
    probe = load_probe(trained_text_probe.folder)
    X = trained_text_probe.trained.X[:3]
    texts = ["ignored"] * 3
    s_pre, _ = probe.predict_arrays(texts, precomputed={"text": X})
    s_ref, _ = cal.apply_all(trained_text_probe.trained.calibration, *trained_text_probe.trained.head.predict_proba(X))
    np.testing.assert_allclose(s_pre, s_ref, atol=1e-5)
    with pytest.raises(ProbeInputError, match="shape"):
        probe.predict_arrays(texts, precomputed={"text": X[:, :10]})


def test_torch_feature_must_be_precomputed(tmp_path, trained_text_probe):
    """A probe on a requires_torch feature never computes it at run time: the caller passes it."""
    from triage.probes.export import export_probe
    from triage.probes.features.base import Feature, register_feature
    from triage.probes.training import TrainConfig, train_probe

    @register_feature
    class FakeLM(Feature):  # stands in for LM internals (no model needed for this check)
        name = "test-fake-lm"
        version = "1"
        requires_torch = True

        def __init__(self) -> None:
            pass

        @property
        def dim(self) -> int:
            return 2

        def transform(self, texts):
            return np.array([[len(t) / 100.0, t.count("?")] for t in texts], dtype=np.float32)

    data = trained_text_probe.data
    trained = train_probe(data, TrainConfig(features=["test-fake-lm"], folds=3, n_boot=0), cache_dir=tmp_path / "c")
    export_probe(trained, tmp_path / "p", plot=False)
    probe = load_probe(tmp_path / "p")
    assert probe.external_features == ["test-fake-lm"]
    with pytest.raises(ProbeInputError, match="precomputed"):
        probe.predict(["How many?"])
    out = probe.predict(["How many?"], precomputed={"test-fake-lm": FakeLM().transform(["How many?"])})
    assert set(out[0].success) == set(probe.labels)


def test_file_sha256_hashes_each_file_once_and_again_after_a_rewrite(tmp_path, monkeypatch):
    """A probe load opens several encoder sessions over the same files: each is hashed once per
    process (memoised by inode, size and mtime), and a file rewritten since is hashed afresh."""
    import hashlib
    import os

    from triage.probes.encoder import runtime as enc

    f = tmp_path / "weights.bin"
    f.write_bytes(b"a" * 4096)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(enc.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    first = enc.file_sha256(f)
    assert enc.file_sha256(f) == first == real(b"a" * 4096).hexdigest()
    assert len(calls) == 1
    f.write_bytes(b"b" * 4096)  # same size: the mtime (forced forward) tells it changed
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert enc.file_sha256(f) == real(b"b" * 4096).hexdigest()
    assert len(calls) == 2
