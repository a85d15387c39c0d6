"""``numeric``: the answer's final number equals the gold's within a tolerance.

The answer's number is the one after its last ``####`` (GSM8K-trained models end that way), else
its last number; the gold's is the last number of its final answer (``#### 42`` -> 42). Commas,
``$`` and a trailing ``%`` are ignored. An answer without a number scores 0; a gold without one
gives no outcome (``gold_not_numeric``).
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field

from triage.router.ledger.graders.base import GRADERS, GradeInput, Grader, Verdict, answer_tail, final_gold

# Linear: a number starts only where no digit, dot or comma precedes it, and its runs are possessive.
_NUMBER = re.compile(r"(?<![\d.,])-?\$?\d[\d,]*+(?:\.\d++)?")


def last_number(text: str) -> float | None:
    """The last number in ``text`` (``1,234.5`` -> 1234.5), or None."""
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - only the last match counts
        pass
    if last is None:
        return None
    try:
        value = float(last.group(0).replace(",", "").replace("$", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@GRADERS.register
class NumericGrader(Grader):
    name = "numeric"
    version = "1"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        tolerance: float = Field(default=1e-6, ge=0.0, description="Absolute tolerance.")
        relative: float = Field(default=0.0, ge=0.0, description="Relative tolerance (of the gold).")

    def grade(self, item: GradeInput) -> Verdict:
        gold = last_number(final_gold(item.gold or ""))
        if gold is None:
            return Verdict(None, "gold_not_numeric")
        text = answer_tail(item.answer)
        if "####" in text:
            text = text.rsplit("####", 1)[1]
        got = last_number(text)
        if got is None:
            return Verdict(0.0, detail={"answer_number": None})
        allowed = max(self.options.tolerance, self.options.relative * abs(gold))
        return Verdict(1.0 if abs(got - gold) <= allowed else 0.0, detail={"answer_number": got})
