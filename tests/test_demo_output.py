"""What `make demo` prints (#18): no library noise between its tables, tables that fit 100-120
columns (``--wide`` shows every column), and the token cap each call was actually sent.

The demo runs as `make demo` runs it (``python -m triage.eval.demo``, piped, ``COLUMNS`` set), one
step at a time (``--steps``): the real Router, the session's default probe, the real int4 SmolLM2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.cache import TEST_CACHE_DIR
from triage.settings import get_settings

NOISE = ("Warning", "it/s]", "s/it]", "de-quantizing GGUF tensors")


def _demo(out: Path, *args: str, columns: int = 120, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "TRIAGE_CACHE_DIR": str(cache or TEST_CACHE_DIR)}
    return subprocess.run([sys.executable, "-m", "triage.eval.demo", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def _assert_clean(proc: subprocess.CompletedProcess, width: int) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stream in (proc.stdout, proc.stderr):
        for noise in NOISE:
            assert noise not in stream, f"{noise!r} in the demo's output:\n{stream[-3000:]}"
        too_long = [line for line in stream.splitlines() if len(line) > width]
        assert not too_long, f"{len(too_long)} lines over {width} columns, e.g. {too_long[0]!r}"


@pytest.fixture(scope="module")
def route_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-route")
    return out, _demo(out, "--steps", "route")


def test_route_step_prints_clean_fitting_table_with_the_cap_sent(route_run):
    out, proc = route_run
    _assert_clean(proc, 120)
    rows = json.loads((out / "routing_demo.json").read_text())
    capped = [r for r in rows if r["budget"] > 48]
    assert capped, "the local policy has a strategy whose budget is over the demo's 48-token cap"
    for r in rows:
        # The cap the answering call was sent (from its attempt), not the strategy's budget.
        assert r["max_tokens_sent"] == min(48, r["budget"]) and r["completion_tokens"] <= r["max_tokens_sent"]
    for r in capped:
        assert r["cap"] == f"demo cap 48 < budget {r['budget']}"
    assert f"demo cap 48 < budget {capped[0]['budget']}" in proc.stdout
    assert "max tokens sent" in proc.stdout and "--wide adds model" in proc.stdout
    assert "local/smollm2-135m" not in proc.stdout  # the model column is --wide only
    assert (out / "library.log").is_file() and str(out / "library.log") in proc.stdout


def test_route_step_wide_shows_the_dropped_columns(tmp_path):
    proc = _demo(tmp_path, "--steps", "route", "--wide", columns=120)
    _assert_clean(proc, 200)  # --wide: every column at its natural width, up to 200 columns
    for col in ("model", "attempts", "decision", "question"):
        assert col in proc.stdout
    assert "local/smollm2-135m" in proc.stdout and "--wide adds" not in proc.stdout


def test_unknown_step_is_one_line_and_exit_2(tmp_path):
    proc = _demo(tmp_path, "--steps", "route,nope")
    assert proc.returncode == 2 and "unknown step(s) nope" in proc.stderr


def test_library_noise_goes_to_the_log_and_triage_output_stays(tmp_path):
    """Real library noise: a numpy warning, a tqdm bar as transformers' GGUF loader makes it
    (``tqdm.auto.tqdm``, untouched by hf_logging.disable_progress_bar()) and a transformers log
    record through its own stderr handler, created before the block."""
    log = tmp_path / "library.log"
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from tqdm.auto import tqdm
        from transformers.utils import logging as hf_logging
        from triage.eval.library_noise import library_noise_to

        hf_logging.disable_progress_bar()
        hf = hf_logging.get_logger("transformers.demo_test")
        with library_noise_to({str(log)!r}) as noise:
            np.mean(np.array([]))
            for _ in tqdm(range(40), desc="Converting and de-quantizing GGUF tensors...", mininterval=0):
                pass
            hf.warning("a transformers warning")
            print("triage table line")
        sys.stderr.write("after the block\\n")
        hf.warning("transformers after the block")
        print("written", noise.written() > 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["triage table line", "written True"]
    assert proc.stderr.splitlines() == ["after the block", "[transformers] transformers after the block"]
    text = log.read_text()
    for expected in ("RuntimeWarning", "Mean of empty slice", "de-quantizing GGUF tensors", "40/40",
                     "a transformers warning"):
        assert expected in text


def _replay_file(tmp_path: Path) -> Path:
    from triage.eval.importers import import_source
    from triage.replay import write_replay

    records = import_source("pricing-reversal", Path(get_settings().data_dir) / "pricing-reversal",
                            dataset="gpqa-test")
    write_replay(records, tmp_path / "gpqa.jsonl")
    return tmp_path / "gpqa.jsonl"


@pytest.mark.parametrize("columns", [100, 120])
def test_replay_evaluate_table_fits_and_wide_adds_columns(tmp_path, monkeypatch, columns):
    from triage.router.cli.main import app

    path = _replay_file(tmp_path)
    monkeypatch.setenv("COLUMNS", str(columns))
    args = ["replay", "evaluate", str(path), "--router", "threshold:score=prompt_chars", "--bootstrap", "20"]
    narrow = CliRunner().invoke(app, args)
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.output.splitlines()) <= columns
    header = next(line for line in narrow.output.splitlines() if "router" in line)
    assert "AIQ" not in header and "--wide adds tokens/query, AIQ" in narrow.output
    assert "gemini-3.1-pro-preview" in narrow.output and "accuracy" in narrow.output
    wide = CliRunner().invoke(app, [*args, "--wide"])
    assert wide.exit_code == 0, wide.output
    header = next(line for line in wide.output.splitlines() if "router" in line)
    assert "AIQ" in header and "tokens/query" in header and "--wide adds" not in wide.output


@pytest.mark.minutes
def test_fresh_model_build_keeps_the_gguf_bar_and_warnings_out(tmp_path):
    """A fresh models cache: the route step de-quantizes SmolLM2's GGUF file (transformers' tqdm
    bar) and runs the ONNX builder; all of it lands in OUT/library.log, none in the output."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for entry in TEST_CACHE_DIR.iterdir():  # the session probe and encoder; no models
        if entry.name != "models":
            (cache / entry.name).symlink_to(entry.resolve())
    out = tmp_path / "out"
    proc = _demo(out, "--steps", "route", cache=cache)
    _assert_clean(proc, 120)
    assert "de-quantizing the GGUF file once" in proc.stdout  # Triage's own lines stay
    assert "smollm2-135m: built in" in proc.stdout
    assert "Converting and de-quantizing GGUF tensors" in (out / "library.log").read_text()
    assert "library output: " in proc.stdout
