"""Which code a benchmark figure came from: results files keep their names across re-runs, so each
run records the commit (and whether the working tree had changes on top of it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


#: Edits that do not change what a benchmark computes: its own results files and prose.
NOT_CODE = (":(exclude)eval/bench/results", ":(exclude)*.md")


def code_version(root: Path = ROOT) -> str:
    """``<commit>`` or ``<commit>+changes`` (uncommitted edits to tracked files other than results
    files and Markdown: a bench run rewrites its results file, which must not mark the next run);
    ``unknown`` outside a git checkout or without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+changes" if changed else commit
