"""Reading and writing replay JSON Lines with errors that name file, line and field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from triage.replay.schema import ReplayRecord


class ReplayFormatError(ValueError):
    """A replay line that is not valid JSON or does not match the schema."""

    def __init__(self, path: str | Path, line: int, field_path: str, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field_path = field_path
        self.message = message
        where = f"{self.path}:{line}"
        what = f"field '{field_path}': {message}" if field_path else message
        super().__init__(f"{where}: {what}")


@dataclass
class SkippedLines:
    """Lines dropped by ``skip_invalid``; kept so the caller can report them."""

    errors: list[ReplayFormatError] = field(default_factory=list)


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def parse_line(text: str, path: str | Path, line_no: int) -> ReplayRecord:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayFormatError(path, line_no, "", f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ReplayFormatError(path, line_no, "", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return ReplayRecord.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ReplayFormatError(path, line_no, _field_path(first["loc"]), first["msg"]) from None


def iter_replay(
    path: str | Path, *, skip_invalid: bool = False, skipped: SkippedLines | None = None
) -> Iterator[ReplayRecord]:
    """Yield records of a replay file. Blank lines are ignored.

    With ``skip_invalid`` a bad line is recorded in ``skipped`` (when given) and passed over;
    otherwise the first bad line raises :class:`ReplayFormatError`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"replay file not found: {p}")
    seen: set[str] = set()
    with p.open("r", encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = parse_line(text, p, line_no)
                if record.id in seen:
                    raise ReplayFormatError(p, line_no, "id", f"duplicate id {record.id!r}")
                seen.add(record.id)
            except ReplayFormatError as err:
                if not skip_invalid:
                    raise
                if skipped is not None:
                    skipped.errors.append(err)
                continue
            yield record


def read_replay(
    path: str | Path, *, skip_invalid: bool = False, skipped: SkippedLines | None = None
) -> list[ReplayRecord]:
    return list(iter_replay(path, skip_invalid=skip_invalid, skipped=skipped))


def write_replay(records: Iterable[ReplayRecord], path: str | Path) -> int:
    """Write records as JSON Lines; returns the count. Unknown fields are written back."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = p.with_suffix(p.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json(exclude_none=False))
            fh.write("\n")
            n += 1
    tmp.replace(p)
    return n
