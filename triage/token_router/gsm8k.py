"""GSM8K prompt and answer extraction shared by the label pipeline and the benchmark."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Brief on purpose: generations are capped at 256 tokens and everything runs on a 2-core CPU.
SYSTEM_PROMPT = (
    "Solve the math problem. Be brief: write only the key calculations, one short line each, "
    "then finish with 'The answer is N.'"
)

_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?"
_ANSWER_PATTERNS = (
    re.compile(r"answer is[:\s]*\**\s*(" + _NUM + ")", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*(" + _NUM + r")\s*\}"),
    re.compile(r"####\s*(" + _NUM + ")"),
)


@dataclass(frozen=True)
class Problem:
    index: int  # line number (0-based) in the jsonl file
    question: str
    answer: float


def messages_for(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def _to_number(text: str) -> float | None:
    cleaned = text.replace(",", "").replace("$", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def extract_answer(text: str) -> float | None:
    """The final numeric answer: 'answer is N', \\boxed{N} or '#### N', else the last number."""
    for pattern in _ANSWER_PATTERNS:
        found = pattern.findall(text)
        if found:
            return _to_number(found[-1])
    numbers = re.findall(_NUM, text)
    return _to_number(numbers[-1]) if numbers else None


def same_answer(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-6


def read_rows(path: Path | str, start: int = 0, count: int | None = None) -> Iterator[tuple[int, dict]]:
    """(line index, row) for lines ``start .. start+count-1`` of a GSM8K jsonl file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GSM8K file not found: {p}")
    n = 0
    with p.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if count is not None and n >= count:
                break
            n += 1
            yield i, json.loads(line)


def load_problems(path: Path | str, start: int = 0, count: int | None = None) -> list[Problem]:
    """Problems ``start .. start+count-1`` of a GSM8K jsonl file (reference answer after '####')."""
    out: list[Problem] = []
    for i, row in read_rows(path, start, count):
        ref = _to_number(row["answer"].split("####")[-1].strip())
        if ref is None:
            raise ValueError(f"{path}:{i + 1}: no numeric answer after '####'")
        out.append(Problem(index=i, question=row["question"], answer=ref))
    return out
