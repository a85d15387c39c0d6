"""Gold answers from callers and grading at request time (the policy's ``grader:`` block).

**Gold.** A caller passes the reference answer in OpenAI's ``metadata`` field:
``metadata={"gold": "42"}`` (SDK keyword, or the sidecar's JSON body). ``metadata`` is never
forwarded upstream (:mod:`triage.router.core.fields`); of it, only ``gold`` is kept, in the ledger
record's ``metadata.gold``. A gold that is not a string or number, or longer than
:data:`GOLD_MAX_CHARS`, is refused (the sidecar's 400 ``unsupported_field``, param
``metadata.gold``) before anything is called.

**Grading.** With a ``grader:`` block in the policy, the router grades each answer right after its
record is committed and attaches the outcome (source ``grader:<type>``, the verdict's detail with
it) before the answer is returned. Rule graders need a gold and skip requests without one; a
``judge`` grades every answer (one more model call per request: its latency is the caller's, so
prefer ``triage ledger grade --grader judge`` offline). Failed requests, answers cut off by a
client that went away and unparseable verdicts get no outcome; grading never fails a request (a
grader error is logged and counted in :attr:`RequestGrading.counts`).

**Answers.** With ``store_prompts`` on, the record also keeps the answer text
(``metadata.answer``, dropped with the prompt by a writer that does not store prompts), so
``triage ledger grade`` can grade it later.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from triage.logging import get_logger
from triage.router.core.fields import UnsupportedFieldError

log = get_logger("triage.grading")

GOLD_MAX_CHARS = 4_096


def gold_of(metadata: Any) -> str | None:
    """The gold answer of a caller's ``metadata`` (None without one); raises
    :class:`UnsupportedFieldError` for one that is not a short string or number."""
    if not isinstance(metadata, dict) or metadata.get("gold") is None:
        return None
    gold = metadata["gold"]
    if isinstance(gold, bool) or not isinstance(gold, str | int | float):
        raise UnsupportedFieldError("metadata.gold", "the gold answer must be a string or a number")
    text = str(gold)
    if len(text) > GOLD_MAX_CHARS:
        raise UnsupportedFieldError("metadata.gold", f"the gold answer is longer than {GOLD_MAX_CHARS} characters")
    return text


def with_gold(ledger_fields: dict[str, Any] | None, caller: dict[str, Any]) -> dict[str, Any] | None:
    """``ledger_fields`` with the caller's gold in ``metadata.gold`` (unchanged without one).

    Set in place: the sidecar keeps a reference to its ``ledger_fields`` and marks a client that
    went away in them after the request started, so they must stay the same dicts."""
    gold = gold_of(caller.get("metadata"))
    if gold is None:
        return ledger_fields
    fields = ledger_fields if ledger_fields is not None else {}
    meta = fields.get("metadata")
    if not isinstance(meta, dict):
        meta = fields["metadata"] = {}
    meta["gold"] = gold
    return fields


def answer_text(ex: Any) -> str | None:
    """The text of the answer an execution returned (a final response's message, or what a
    stream delivered); None for a request that failed or has no text (a tool call)."""
    if ex.error is not None:
        return None
    response = ex.final_response
    if response is not None:
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None)
        return content if isinstance(content, str) and content else None
    text = ex.text
    return text or None


class RequestGrading:
    """The policy's grader applied to each answered request (see the module docstring)."""

    def __init__(self, spec: Any) -> None:
        from triage.router.ledger.graders import build_grader

        self.grader = build_grader(spec)
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_policy(cls, policy: Any) -> "RequestGrading | None":
        spec = getattr(policy, "grader", None)
        return None if spec is None else cls(spec)

    def _grade(self, ex: Any, record: Any, ledger: Any) -> None:
        from triage.router.ledger.graders import GradeInput

        answer = answer_text(ex)
        if answer is None or record.error is not None or record.metadata.get("client_disconnected"):
            self.counts["no_answer"] += 1
            return
        gold = record.metadata.get("gold")
        try:
            verdict = self.grader(GradeInput(answer=answer, gold=gold, question=ex.routed.messages))
        except Exception as exc:  # noqa: BLE001 - a grader (or its judge) failing never fails the request
            self.counts["error"] += 1
            log.warning("grader_failed", request_id=record.request_id, grader=self.grader.name,
                        error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        if verdict.score is None:
            self.counts[verdict.reason or "ungraded"] += 1
            log.info("not_graded", request_id=record.request_id, grader=self.grader.name, reason=verdict.reason,
                     **{k: v for k, v in verdict.detail.items() if k.startswith("judge_") and k != "judge_reply"})
            return
        attach_outcome(ledger, record.request_id, verdict.score, self.grader.source, verdict.detail)
        self.counts["graded"] += 1

    def wrap(self, ex: Any, write: Callable[[Any], Any], ledger: Any) -> Callable[[Any], Any]:
        """``write`` followed by grading ``ex``'s answer (for the sync drivers)."""
        def write_then_grade(record: Any) -> Any:
            out = write(record)
            if ledger is not None:
                self._grade(ex, record, ledger)
            return out

        return write_then_grade

    def awrap(self, ex: Any, awrite: Callable[[Any], Awaitable[Any]], ledger: Any) -> Callable[[Any], Awaitable[Any]]:
        """Async :meth:`wrap`: the grader runs in a worker thread (a judge makes a blocking call)."""
        async def write_then_grade(record: Any) -> Any:
            out = await awrite(record)
            if ledger is not None:
                await asyncio.to_thread(self._grade, ex, record, ledger)
            return out

        return write_then_grade


def attach_outcome(ledger: Any, request_id: str, score: float, source: str, detail: dict[str, Any]) -> Any:
    """Attach an outcome through a writer (``feedback``) or a store (``add_outcome``)."""
    if hasattr(ledger, "feedback"):
        return ledger.feedback(request_id, score, source=source, detail=detail)
    from triage.router.ledger.records import OutcomeRecord

    return ledger.add_outcome(OutcomeRecord(request_id=request_id, score=score, source=source, detail=detail))
