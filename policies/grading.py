"""The policy's ``grader:`` block: grade each answer at request time (off by default).

Only its shape is checked here (the policies floor knows no graders): ``type`` names a grader of
:mod:`triage.router.ledger.graders` and the other keys are its options, validated when a
:class:`~triage.router.core.router.Router` is built (a bad one stops start-up with one line)::

    grader: {type: numeric, tolerance: 0.001}
    grader: {type: regex, pattern: 'answer is\\s*(\\S+)'}
    grader: {type: judge, model: local/smollm2-135m}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GraderSpec(BaseModel):
    """``type`` plus that grader's options (exact, regex, numeric, judge)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, description="exact, regex, numeric or judge.")
