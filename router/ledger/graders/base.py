"""The grader contract, its registry and the gold-answer rules shared by every grader.

A grader turns (question, answer, gold) into a :class:`Verdict`: a score in 0..1, or no score with
the reason (no gold, nothing to grade, an unparseable judge reply, a regex over its time budget).
A request without a verdict gets no outcome; callers count the reasons. Adding a grader is one
module of this package with a :class:`Grader` subclass decorated with ``@GRADERS.register`` (the
plug-in discovery rule of :mod:`triage.registry`; no list to edit).

Gold answers come from the request's metadata (``metadata: {"gold": "..."}``, see
:mod:`triage.router.core.grading`). A GSM8K-style gold (a worked solution whose last line is
``#### 42``) counts as its final answer ``42`` for every grader.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from triage.errors import ConfigError
from triage.registry import Registry

#: What a rule grader reads of an answer: its last characters (final answers sit at the end; the
#: cap keeps a hostile multi-megabyte answer from costing more than a few milliseconds).
ANSWER_TAIL_CHARS = 65_536
_GSM8K_FINAL = "####"
_SPACE = re.compile(r"\s++")
# Punctuation and markup around a final answer that does not change it ("**42**.", "'Paris'").
_EDGE = " \t\r\n.,;:!?\"'`*_()[]{}<>"


@dataclass(frozen=True)
class GradeInput:
    """What a grader may read: the question (chat messages or text; None when not stored), the
    answer text and the gold answer (None when the request had none)."""

    answer: str
    gold: str | None = None
    question: str | list[dict[str, Any]] | None = None


@dataclass
class Verdict:
    """A score in 0..1, or ``score=None`` with ``reason`` (no outcome is attached).

    ``detail`` goes with the outcome into the ledger (grader version, a judge's tokens and cost).
    """

    score: float | None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def graded(self) -> bool:
        return self.score is not None


class Grader:
    """Base class. Subclasses set ``name``/``version``, an ``Options`` model and :meth:`grade`."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    #: Whether the grader can say anything without a gold answer (a judge can; rule graders cannot).
    needs_gold: ClassVar[bool] = True
    #: Whether it needs the question text (a judge does: offline it needs stored prompts).
    needs_question: ClassVar[bool] = False

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    @property
    def source(self) -> str:
        """The outcome's ``source``: ``grader:<name>``."""
        return f"grader:{self.name}"

    def grade(self, item: GradeInput) -> Verdict:
        raise NotImplementedError

    def __call__(self, item: GradeInput) -> Verdict:
        if self.needs_gold and not (item.gold or "").strip():
            return Verdict(None, "no_gold")
        verdict = self.grade(item)
        verdict.detail = {"grader": self.name, "grader_version": self.version, **verdict.detail}
        return verdict


GRADERS: Registry[type[Grader]] = Registry("grader", package="triage.router.ledger.graders", error=ConfigError)


def build_grader(spec: dict[str, Any] | Any) -> Grader:
    """A grader from its config: ``{"type": "numeric", "tolerance": 0.01}`` (a dict or a model
    with ``type`` and extra fields). Raises :class:`ConfigError` naming a bad type or option."""
    raw = spec.model_dump(exclude_none=True) if isinstance(spec, BaseModel) else dict(spec or {})
    kind = raw.pop("type", None)
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"grader: 'type' is required (one of: {', '.join(GRADERS.names())})")
    cls = GRADERS.get(kind)
    try:
        options = cls.Options.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise ConfigError(f"grader {kind!r}: {where}: {err['msg']}") from None
    return cls(options)


def final_gold(gold: str) -> str:
    """The final answer of a gold text: what follows the last ``####`` (GSM8K), else the text."""
    if _GSM8K_FINAL in gold:
        return gold.rsplit(_GSM8K_FINAL, 1)[1].strip()
    return gold.strip()


def normalise(text: str, *, case_sensitive: bool = False) -> str:
    """Compatibility-normalised (NFKC), whitespace collapsed, edge punctuation/markup stripped and,
    unless ``case_sensitive``, case-folded: "  **Paris**." == "paris"."""
    out = unicodedata.normalize("NFKC", text)
    out = _SPACE.sub(" ", out).strip(_EDGE)
    return out if case_sensitive else out.casefold()


def answer_tail(answer: str, limit: int = ANSWER_TAIL_CHARS) -> str:
    """The last ``limit`` characters of an answer (all of a short one)."""
    return answer if len(answer) <= limit else answer[-limit:]
