"""Graders: outcomes without a person (exact match, regex, numeric, an LLM judge).

One module per grader, registered in :data:`~triage.router.ledger.graders.base.GRADERS`;
:func:`~triage.router.ledger.graders.base.build_grader` makes one from its config.
"""

from triage.router.ledger.graders.base import (
    GRADERS,
    GradeInput,
    Grader,
    Verdict,
    build_grader,
    final_gold,
    normalise,
)

__all__ = ["GRADERS", "GradeInput", "Grader", "Verdict", "build_grader", "final_gold", "normalise"]
