"""Probe test fixtures: a 200-query slice of RouteLLM GSM8K and a probe trained and exported on it.

The encoder export and the feature cache live in the real ``get_settings().cache_dir`` (exported
once, reused by every run); each test that corrupts a probe works on its own copy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from triage.settings import get_settings

SLICE = 200
TEXT_FEATURES = ["text:aux=false"]


@dataclass
class TrainedSlice:
    data_file: Path
    data: object  # ReplayData
    trained: object  # probes.training.TrainedProbe
    folder: Path


@pytest.fixture(scope="session")
def probe_slice_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from triage.eval.importers import import_source
    from triage.replay import write_replay

    records = import_source("routellm", get_settings().data_dir / "routellm", dataset="gsm8k")[:SLICE]
    path = tmp_path_factory.mktemp("probe-data") / "gsm8k-200.jsonl"
    write_replay(records, path)
    return path


@pytest.fixture(scope="session")
def trained_text_probe(probe_slice_file: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedSlice:
    from triage.replay import ReplayData, read_replay
    from triage.probes.export import export_probe
    from triage.probes.training import TrainConfig, file_fingerprint, train_probe

    data = ReplayData.from_records(read_replay(probe_slice_file), name="gsm8k-200")
    trained = train_probe(data, TrainConfig(features=TEXT_FEATURES, folds=3, n_boot=50))
    trained.data_fingerprint = file_fingerprint(probe_slice_file)
    folder = tmp_path_factory.mktemp("probe") / "text-probe"
    export_probe(trained, folder, command="pytest tests/test_probe_runtime.py")
    return TrainedSlice(probe_slice_file, data, trained, folder)


@pytest.fixture()
def probe_copy(trained_text_probe: TrainedSlice, tmp_path: Path) -> Path:
    """A private copy of the exported probe that a test may corrupt."""
    dst = tmp_path / "probe"
    shutil.copytree(trained_text_probe.folder, dst)
    return dst
