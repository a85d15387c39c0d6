"""Keep library noise out of the demo's tables: warnings, progress bars and log records of torch,
transformers, scikit-learn, onnx, ... go to a log file; Triage's own output stays where it was.

Why not the libraries' own switches: transformers' ``hf_logging.disable_progress_bar()`` does not
reach the GGUF de-quantization bar (``transformers.modeling_gguf_pytorch_utils`` calls
``tqdm.auto.tqdm`` directly), and ``TQDM_DISABLE`` is read once, when tqdm is imported. What every
one of them does is write to ``sys.stderr`` (tqdm resolves it when a bar is made, ``warnings`` when
one is shown) or to a logging handler bound to it; so, while inside :func:`library_noise_to`:

* ``sys.stderr`` is a switch that writes to the log (tqdm bars, the default ``showwarning``,
  handlers created inside); after the block it writes to the real stderr again, so a handler a
  library created inside keeps working;
* stream handlers already bound to the real stderr (transformers' own) are pointed at the switch;
* warnings raised from Triage's own modules are still shown on the real stderr;
* Triage's structlog logger is configured first, so it keeps the real stderr.

C-level writes to file descriptor 2 (onnxruntime's native log) are not redirected.
"""

from __future__ import annotations

import io
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

_TRIAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the folder the triage.* modules live in


class _Switch(io.TextIOBase):
    """A stderr stand-in: writes to ``target`` (the log while active, else the real stderr)."""

    def __init__(self, real: TextIO, target: TextIO) -> None:
        self.real = real
        self.target: TextIO = target

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", None) or "utf-8"

    def write(self, s: str) -> int:
        self.target.write(s)
        return len(s)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:  # tqdm and rich: no cursor tricks for a log
        return False

    def fileno(self) -> int:
        return self.real.fileno()


@dataclass
class NoiseLog:
    path: Path
    start: int  # the file's size when the block began

    def written(self) -> int:
        """Bytes of library output written during the block."""
        return max(0, self.path.stat().st_size - self.start) if self.path.exists() else 0


def _is_triage(filename: str) -> bool:
    resolved = str(Path(filename).resolve())
    return resolved.startswith(_TRIAGE_ROOT) and "site-packages" not in resolved[len(_TRIAGE_ROOT):]


@contextmanager
def library_noise_to(path: str | Path) -> Iterator[NoiseLog]:
    """Send library warnings, tqdm bars and library log records to ``path`` (appended) inside the block."""
    from triage.logging import get_logger

    get_logger()  # configure structlog now: it binds the stderr of this moment, the real one
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("a", encoding="utf-8", errors="replace", buffering=1)
    noise = NoiseLog(path, path.stat().st_size)
    real = sys.stderr
    switch = _Switch(real, log)
    rebound: list[logging.StreamHandler[Any]] = []
    loggers = [logging.getLogger(), *(v for v in logging.root.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and h.stream is real:
                h.setStream(switch)  # type: ignore[arg-type]
                rebound.append(h)
    shown = warnings.showwarning

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        if _is_triage(filename):
            shown(message, category, filename, lineno, real, line)
        else:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

    sys.stderr = switch  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = showwarning
            yield noise
    finally:
        sys.stderr = real
        switch.target = real
        for h in rebound:
            if h.stream is switch:
                h.setStream(real)
        log.close()
