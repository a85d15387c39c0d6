"""``judge``: an LLM (any litellm model, or ``local/<name>``) says whether the answer is correct.

* The prompt is versioned: ``prompt_version`` (``judge-`` + 12 hex of the SHA-256 of the system
  prompt and the template) goes with every outcome, so scores from different prompts never mix
  unnoticed. A custom ``prompt`` (with ``{question}``, ``{answer}`` and ``{reference}``) gets its
  own version the same way.
* The judge's own call is recorded with the outcome (``detail``): model, prompt and completion
  tokens, cost in USD (the ``price`` given, the kind's rule - 0 for local models - or litellm's
  cost map, as for strategies) and latency.
* The reply is parsed strictly: ``VERDICT: CORRECT``/``INCORRECT`` (also yes/no, pass/fail, 1/0, or
  ``SCORE: x`` in 0..1), the last one found. Anything else gives no outcome (``unparseable``): a
  guess would be a label nobody gave. The call's cost is then still in the verdict's ``detail``.
* The gold answer is shown as a reference when the request had one; without one the judge grades
  from the question alone (``needs_gold`` is False). Question and answer are cut to
  :data:`MAX_TEXT_CHARS` each (head and tail) to bound the judge's prompt.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from triage.router.ledger.graders.base import GRADERS, GradeInput, Grader, Verdict

MAX_TEXT_CHARS = 8_000
SYSTEM_PROMPT = ("You are a strict grader. Decide whether the answer to grade correctly answers the "
                 "question. Reply with exactly one line: VERDICT: CORRECT or VERDICT: INCORRECT.")
TEMPLATE = ("Question:\n{question}\n\n{reference}Answer to grade:\n{answer}\n\n"
            "Is the answer to grade correct? Reply with exactly one line: VERDICT: CORRECT or VERDICT: INCORRECT.")
REFERENCE = "Reference answer:\n{gold}\n\n"

_WORDS = {"correct": 1.0, "incorrect": 0.0, "yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0,
          "pass": 1.0, "fail": 0.0, "right": 1.0, "wrong": 0.0, "1": 1.0, "0": 0.0}
_VERDICT = re.compile(r"\bverdict\b\W{0,8}(incorrect|correct|yes|no|true|false|pass|fail|right|wrong|1|0)\b",
                      re.IGNORECASE)
_SCORE = re.compile(r"\bscore\b\W{0,8}(1(?:\.0+)?|0(?:\.\d+)?)(?![\d.])", re.IGNORECASE)


def prompt_version(system: str, template: str) -> str:
    return "judge-" + hashlib.sha256(f"{system}\x00{template}".encode()).hexdigest()[:12]


def parse_verdict(reply: str) -> float | None:
    """The score a judge's reply states, or None when it states none clearly."""
    text = reply[-4000:]
    found = [(m.start(), _WORDS[m.group(1).lower()]) for m in _VERDICT.finditer(text)]
    found += [(m.start(), float(m.group(1))) for m in _SCORE.finditer(text)]
    if found:
        return max(found)[1]
    bare = text.strip().strip(" .!*`'\"").lower()
    return _WORDS.get(bare)


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    half = MAX_TEXT_CHARS // 2
    return text[:half] + "\n[...]\n" + text[-half:]


def _question_text(question: str | list[dict[str, Any]] | None) -> str:
    if question is None:
        return "(not recorded)"
    if isinstance(question, str):
        return question
    parts = []
    for m in question:
        content = m.get("content")
        if isinstance(content, list):  # content parts: their text
            content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if content:
            parts.append(f"{m.get('role', 'user')}: {content}")
    return "\n".join(parts)


@GRADERS.register
class JudgeGrader(Grader):
    name = "judge"
    version = "1"
    needs_gold = False
    needs_question = True

    class Options(BaseModel):
        """The judge's model and how to call it: the fields of a policy strategy that apply."""

        model_config = ConfigDict(extra="forbid")

        model: str = Field(min_length=1, description="litellm model string or local/<name>.")
        api_base: str | None = None
        api_key_env: str | None = None
        price: dict[str, float] | None = Field(default=None, description="{input_per_mtok, output_per_mtok}")
        max_tokens: int = Field(default=32, ge=1, le=4096)
        temperature: float = Field(default=0.0, ge=0.0, le=2.0)
        timeout_s: float = Field(default=60.0, gt=0.0)
        extra: dict[str, Any] = Field(default_factory=dict)
        prompt: str | None = Field(default=None, description="User-message template; default TEMPLATE.")
        system_prompt: str = SYSTEM_PROMPT

    def __init__(self, options: BaseModel) -> None:
        super().__init__(options)
        from triage.policies.strategy import Strategy

        o = self.options
        self.template = o.prompt or TEMPLATE
        self.prompt_version = prompt_version(o.system_prompt, self.template)
        # A strategy, so the judge is called, priced and credentialed exactly as routed calls are.
        self.strategy = Strategy(name="judge", model=o.model, api_base=o.api_base, api_key_env=o.api_key_env,
                                 price=o.price, max_tokens=o.max_tokens, temperature=o.temperature,
                                 timeout_s=o.timeout_s, extra=dict(o.extra))
        self._ready = False

    def messages(self, item: GradeInput) -> list[dict[str, str]]:
        reference = REFERENCE.format(gold=_clip(item.gold)) if item.gold else ""
        try:
            user = self.template.format(question=_clip(_question_text(item.question)),
                                        answer=_clip(item.answer), reference=reference)
        except (KeyError, IndexError, ValueError) as exc:
            from triage.errors import ConfigError

            raise ConfigError(f"grader 'judge': prompt template: {exc}") from None
        return [{"role": "system", "content": self.options.system_prompt}, {"role": "user", "content": user}]

    def _call(self, messages: list[dict[str, str]]) -> Any:
        from triage.policies.pricing import import_litellm
        from triage.router.core.calls import Step, build_kwargs

        litellm = import_litellm()
        if not self._ready:
            self.strategy.kind.register()  # e.g. the local provider for local/<name>
            self._ready = True
        kwargs = build_kwargs(self.strategy, Step("judge", "primary", self.options.max_tokens), messages, {})
        return litellm.completion(**kwargs)

    def grade(self, item: GradeInput) -> Verdict:
        from triage.router.core.calls import cost_of, usage_of

        t0 = time.perf_counter()
        response = self._call(self.messages(item))
        pt, ct, _ = usage_of(getattr(response, "usage", None))
        cost = cost_of(self.strategy, pt, ct, getattr(response, "_hidden_params", None))
        choices = getattr(response, "choices", None) or []
        reply = str(getattr(getattr(choices[0], "message", None), "content", None) or "") if choices else ""
        detail = {"judge_model": self.options.model, "prompt_version": self.prompt_version,
                  "judge_prompt_tokens": pt, "judge_completion_tokens": ct, "judge_cost_usd": cost,
                  "judge_latency_s": round(time.perf_counter() - t0, 4), "judge_reply": reply[:200]}
        score = parse_verdict(reply)
        if score is None:
            return Verdict(None, "unparseable", detail=detail)
        return Verdict(score, detail=detail)
