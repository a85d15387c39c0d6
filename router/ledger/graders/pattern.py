"""``regex``: a pattern from the grader's config picks the final answer out of the answer text.

The last match's ``answer`` group (else group 1, else the whole match) is compared with the gold
answer, normalised as by ``exact``; no match scores 0. Example: ``pattern: 'answer is\\s*(\\S+)'``.

The answer is untrusted text and the pattern may backtrack, so matching is bounded three ways:
the pattern is at most :data:`MAX_PATTERN_CHARS`, only the answer's last
:data:`~triage.router.ledger.graders.base.ANSWER_TAIL_CHARS` characters are read, and all
matching of one answer shares a deadline (``timeout_s``, default 0.1 s) after which the answer
gets no outcome (``regex_timeout``). Matching runs in the ``regex`` engine with the GIL released,
so a slow pattern never stalls other requests.
"""

from __future__ import annotations

import time
from typing import Any

import regex
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from triage.router.ledger.graders.base import (
    GRADERS,
    GradeInput,
    Grader,
    Verdict,
    answer_tail,
    final_gold,
    normalise,
)

MAX_PATTERN_CHARS = 1_000


@GRADERS.register
class RegexGrader(Grader):
    name = "regex"
    version = "1"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        pattern: str = Field(min_length=1, max_length=MAX_PATTERN_CHARS)
        case_sensitive: bool = False
        timeout_s: float = Field(default=0.1, gt=0.0, le=5.0)
        _compiled: Any = PrivateAttr(default=None)

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, value: str) -> str:
            try:
                regex.compile(value)
            except regex.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
            return value

        def compiled(self) -> Any:
            if self._compiled is None:
                self._compiled = regex.compile(self.pattern)
            return self._compiled

    def grade(self, item: GradeInput) -> Verdict:
        pattern = self.options.compiled()
        text = answer_tail(item.answer)
        deadline = time.perf_counter() + self.options.timeout_s
        last = None
        pos = 0
        try:
            while pos <= len(text):
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError
                m = pattern.search(text, pos, timeout=left, concurrent=True)
                if m is None:
                    break
                last = m
                pos = m.end() if m.end() > m.start() else m.end() + 1
        except TimeoutError:
            return Verdict(None, "regex_timeout")
        if last is None:
            return Verdict(0.0, detail={"matched": None})
        if "answer" in pattern.groupindex:
            found = last.group("answer")
        elif pattern.groups:
            found = last.group(1)
        else:
            found = last.group(0)
        found = found or ""
        cs = self.options.case_sensitive
        same = normalise(found, case_sensitive=cs) == normalise(final_gold(item.gold or ""), case_sensitive=cs)
        return Verdict(1.0 if same else 0.0, detail={"matched": found[:200]})
