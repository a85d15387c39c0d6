"""Serving loads artifacts; it never trains or exports them. A sidecar or SDK router whose policy
names a probe that is not built stops with one line naming the command that builds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from triage.errors import ConfigError
from tests.support.cache import TEST_CACHE_DIR
from tests.support.sidecar import LOCAL_POLICY, REPO


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SIDECAR_")}
    env.update({"TRIAGE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"})
    return env


def test_sidecar_with_an_unbuilt_probe_exits_2_naming_the_build_command(tmp_path: Path) -> None:
    empty_cache = tmp_path / "empty-cache"
    # The local model's int4 build is there (it is checked first: tests/test_lm_onnx.py covers its
    # refusal); only the probe is missing.
    (empty_cache / "models").mkdir(parents=True)
    (empty_cache / "models" / "onnx").symlink_to(TEST_CACHE_DIR / "models" / "onnx", target_is_directory=True)
    proc = subprocess.run(
        [sys.executable, "-m", "triage.router.cli.main", "serve", "--policy", str(LOCAL_POLICY), "--port", "0",
         "--ledger", str(tmp_path / "l.sqlite")],
        cwd=REPO, env=_env(empty_cache), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "triage probe build-default" in proc.stderr
    # nothing was trained or exported into the cache while trying
    assert not (empty_cache / "probes").exists() and not (empty_cache / "encoders").exists()


def test_sdk_router_with_an_unbuilt_probe_raises_without_training(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from triage.router.core import Router
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_CACHE_DIR", str(tmp_path / "empty-cache"))
    get_settings.cache_clear()
    try:
        router = Router.from_file(LOCAL_POLICY)
        with pytest.raises(ConfigError, match="triage probe build-default"):
            router.route([{"role": "user", "content": "What is 2 + 2?"}])
        assert not (tmp_path / "empty-cache" / "probes").exists()
    finally:
        monkeypatch.delenv("TRIAGE_CACHE_DIR")
        get_settings.cache_clear()


def test_the_text_feature_does_not_export_the_encoder_on_first_use(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from triage.probes.encoder.runtime import EncoderError
    from triage.probes.features.text_encoder import MiniLMFeature
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_CACHE_DIR", str(tmp_path / "empty-cache"))
    get_settings.cache_clear()
    try:
        with pytest.raises(EncoderError, match="triage probe export"):
            MiniLMFeature().transform(["What is 2 + 2?"])
        assert not (tmp_path / "empty-cache" / "encoders").exists()
    finally:
        monkeypatch.delenv("TRIAGE_CACHE_DIR")
        get_settings.cache_clear()
