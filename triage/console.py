"""Rich output shared by the demo and the CLI: the width tables are printed at, columns that only
``--wide`` shows, and progress bars for long steps.

Width: ``COLUMNS`` when set (``COLUMNS=100 make demo``), else the terminal's, else 120 when piped
(rich's own piped default, 80, squeezes the frontier tables; wider lines than 120 read badly in CI
logs and terminals alike). Tables never exceed it: rich wraps cells, and the low-value columns are
dropped unless ``--wide``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

PIPED_WIDTH = 120
WIDE_WIDTH = 200  # --wide: every column at (nearly) its natural width, whatever the terminal


def output_width(console: Console | None = None) -> int:
    """``COLUMNS`` if set, else the terminal's width, else :data:`PIPED_WIDTH`."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if console is not None and console.is_terminal:
        return console.width
    return PIPED_WIDTH


def fitted(console: Console) -> Console:
    """``console``, or a console on the same file at :func:`output_width` when piped or narrowed.
    A recording console (tests, exports) is sized by its owner and returned as is."""
    width = output_width(console)
    if width == console.width or console.record:
        return console
    return Console(file=console.file, width=width, no_color=console.no_color, soft_wrap=console.soft_wrap,
                   force_terminal=console.is_terminal)


def print_table(console: Console, table: Table, *, wide: bool = False) -> None:
    """Print ``table`` to fit the output width, or, with ``wide``, up to :data:`WIDE_WIDTH` columns
    (a recording console keeps its own width)."""
    if wide and not console.record and console.width < WIDE_WIDTH:
        console = Console(file=console.file, width=WIDE_WIDTH, no_color=console.no_color,
                          force_terminal=console.is_terminal)
    else:
        console = fitted(console)
    console.print(table, soft_wrap=False)  # the CLI's console soft-wraps; a caption must not overflow


@dataclass(frozen=True)
class Col:
    """One table column; ``wide_only`` columns are printed with ``--wide`` only."""

    name: str
    justify: str = "left"
    wide_only: bool = False
    overflow: str = "fold"
    no_wrap: bool = False


def make_table(columns: Sequence[Col], rows: Iterable[Sequence[Any]], *, wide: bool = False,
               **table_kwargs: Any) -> Table:
    """A table with ``columns`` (``wide_only`` ones dropped unless ``wide``); each row gives one
    value per column of ``columns``, dropped ones included. ``end_section`` rows: pass a dict
    ``{"cells": [...], "end_section": True}``."""
    keep = [i for i, c in enumerate(columns) if wide or not c.wide_only]
    table = Table(**table_kwargs)
    for i in keep:
        c = columns[i]
        table.add_column(c.name, justify=c.justify, overflow=c.overflow, no_wrap=c.no_wrap)  # type: ignore[arg-type]
    for row in rows:
        cells, extra = (row["cells"], {k: v for k, v in row.items() if k != "cells"}) if isinstance(row, dict) \
            else (row, {})
        table.add_row(*[str(cells[i]) for i in keep], **extra)
    return table


def progress_bar(console: Console, *, transient: bool = True) -> Progress:
    """A progress bar for a long step; draws only on a terminal (nothing is written when piped)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=transient,
                    disable=not console.is_terminal)


class StepProgress:
    """:class:`triage.probes.training.Progress` (``start``/``advance``) on a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: Any = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)
