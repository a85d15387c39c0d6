"""A mistyped --ledger path: commands that only read or annotate a ledger refuse it (exit 2, one
line) instead of creating an empty ledger and reporting no traffic; `migrate` still creates one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from triage.router.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("args", [
    ["ledger", "report"],
    ["ledger", "export", "-o", "out.jsonl"],
    ["ledger", "feedback", "req-1", "1"],
])
def test_read_commands_refuse_a_missing_sqlite_ledger(tmp_path: Path, args: list[str], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo-ledger.sqlite"
    result = runner.invoke(app, [*args, "--ledger", str(missing)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no ledger at" in lines[0] and "typo-ledger.sqlite" in lines[0], result.output
    assert not missing.exists()  # nothing was created


def test_migrate_creates_the_ledger_and_report_then_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    assert runner.invoke(app, ["ledger", "migrate", "--ledger", str(path)]).exit_code == 0
    assert path.is_file()
    result = runner.invoke(app, ["ledger", "report", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
