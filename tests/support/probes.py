"""Probe test fixtures: a 200-query slice of RouteLLM GSM8K and a probe trained and exported on it.

The encoder export and the feature cache live in ``get_settings().cache_dir`` - the test cache
(tests/support/cache.py), exported once and reused by every run; each test that corrupts a probe
works on its own copy. :func:`ensure_session_default_probe` puts a small probe (same features, more
rows) at ``<test cache>/probes/default`` for everything that needs "some" default probe.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from triage.settings import get_settings

SLICE = 200
TEXT_FEATURES = ["text:aux=false"]
# The card's `command` of the session probe; change it to make every test cache rebuild the probe.
SESSION_PROBE_COMMAND = "pytest session probe v2 (tests/support/probes.py: text:aux=false, GSM8K + MMLU[::3])"
#: Every MMLU query but one in MMLU_STRIDE goes unused: ~6k rows in all (GSM8K alone, or 2k rows,
#: judged "What is 2 + 2?" normal and the policy tests' easy/hard pair the wrong way round).
MMLU_STRIDE = 3


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
    from triage.probes.export import export_probe
    from triage.probes.training import TrainConfig, file_fingerprint, train_probe

    from triage.replay import ReplayData, read_replay

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


def ensure_session_default_probe() -> Path:
    """``<cache_dir>/probes/default`` holding the small session probe: built when missing, stale (another
    recipe, or the real default probe) or unloadable; otherwise a load check (about half a second).

    The default probe's data (RouteLLM GSM8K + a third of MMLU) with ``text:aux=false`` and 3 folds:
    ~20 s on a fresh clone (the MiniLM export, features for ~6k queries), where the real build takes
    minutes (the aux regressors alone ~45 s, features for 15k queries). Same labels as the default
    probe, so the example policies load against it, and the same easy/hard judgement of the queries
    the policy tests send. A file lock lets concurrent sessions share it.
    """
    import fcntl
    import json
    import tempfile

    from triage.eval.importers import import_source
    from triage.probes.export import export_probe
    from triage.probes.runtime import default_probe_path, load_probe
    from triage.probes.training import TrainConfig, file_fingerprint, train_probe

    from triage.replay import ReplayData, write_replay

    path = default_probe_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".default.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        card = path / "card.json"
        if card.is_file() and json.loads(card.read_text()).get("command") == SESSION_PROBE_COMMAND:
            try:
                load_probe(path)
            except Exception:  # noqa: BLE001 - any unloadable leftover is rebuilt below
                card.unlink()
            else:
                return path
        folder = get_settings().data_dir / "routellm"
        records = import_source("routellm", folder, dataset="gsm8k")
        records += import_source("routellm", folder, dataset="mmlu")[::MMLU_STRIDE]
        with tempfile.TemporaryDirectory() as tmp:
            data_file = Path(tmp) / "session-probe.jsonl"
            write_replay(records, data_file)
            data = ReplayData.from_records(records, name=f"routellm gsm8k + mmlu[::{MMLU_STRIDE}]")
            trained = train_probe(data, TrainConfig(features=TEXT_FEATURES, folds=3, n_boot=50))
            trained.data_fingerprint = file_fingerprint(data_file)
        export_probe(trained, path, command=SESSION_PROBE_COMMAND, plot=False)
    return path
