"""``exact``: the answer equals the gold answer after normalisation (case, spacing, edge punctuation)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from triage.router.ledger.graders.base import GRADERS, GradeInput, Grader, Verdict, final_gold, normalise


@GRADERS.register
class ExactGrader(Grader):
    name = "exact"
    version = "1"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        case_sensitive: bool = False

    def grade(self, item: GradeInput) -> Verdict:
        gold = final_gold(item.gold or "")
        # A much longer answer cannot normalise to the gold (normalising only strips and collapses),
        # so a hostile multi-megabyte answer is judged without being read.
        if len(item.answer) > 4 * len(gold) + 1024:
            return Verdict(0.0)
        same = normalise(item.answer, case_sensitive=self.options.case_sensitive) == \
            normalise(gold, case_sensitive=self.options.case_sensitive)
        return Verdict(1.0 if same else 0.0)
