"""CLI start-up stays light: `triage --help` (and the sub-commands' help) import none of the heavy
packages, and `triage route` loads only what the probe needs (no litellm, torch or scikit-learn).

Each command runs in a fresh interpreter through a -c wrapper that prints, after the CLI has
finished, which of the watched modules ended up in sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.sidecar import LOCAL_POLICY, REPO

HEAVY = ("litellm", "onnxruntime", "onnxruntime_genai", "torch", "sklearn", "transformers", "numpy",
         "fastapi", "uvicorn", "pyarrow", "psycopg", "matplotlib", "tokenizers")
WRAPPER = """
import atexit, json, sys
atexit.register(lambda: print("MODULES=" + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules))))
sys.argv = ["triage", *{args!r}]
from triage.router.cli.main import app
app()
"""


def _imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY, args=list(args))], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=None)
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES=")]
    return proc, set(json.loads(line.removeprefix("MODULES=")))


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["ledger", "report", "--help"],
                                  ["policy", "init", "--help"], ["replay", "--help"]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    proc, heavy = _imported(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    assert heavy == set(), f"`triage {' '.join(args)}` imported {sorted(heavy)}"


def test_route_imports_only_what_the_probe_needs() -> None:
    proc, heavy = _imported("route", "what is 2+2", "--policy", str(LOCAL_POLICY), "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"tier"' in proc.stdout
    assert {"litellm", "torch", "sklearn", "transformers", "fastapi", "pyarrow", "matplotlib"}.isdisjoint(heavy), heavy
    assert "onnxruntime" in heavy  # the probe runs on it: the wrapper does see what was loaded
