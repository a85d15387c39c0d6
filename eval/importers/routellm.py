"""routellm: RouteLLM's released eval data, gpt-4-1106-preview (strong) vs Mixtral-8x7B-Instruct (weak).

Three datasets; PATH is the ``routellm`` folder (all three, or ``--dataset``) or one of its sub-folders.
The files carry correctness but no tokens or costs: tokens are counted here with tiktoken
``cl100k_base`` (gpt-4-1106-preview's own tokenizer; a stand-in for Mixtral's, which is not on disk)
and costs are ``tokens x --prices``. Each record says which counter was used (``token_counter``) and
what its prompt-token count covers (``prompt_tokens_basis``). Chat-template overhead (a few tokens per
message) is not counted.

* ``gsm8k`` (1,319): the prompt RouteLLM sent is 8 solved examples (the first 8 lines of GSM8K
  ``train.jsonl``) + ``"Question: <q>\\nAnswer:"``; when ``../gsm8k/train.jsonl`` is found the prefix is
  counted, otherwise only the question line. Completion tokens are counted from each model's response.
  ``gold`` is the final answer from ``../gsm8k/test.jsonl`` (same order) when present.
* ``mmlu`` (57 subjects, 14,042): RouteLLM asked for one token (``max_new_tokens=1``), so completion
  tokens are 1. Its 5-shot prefix (MMLU dev set, up to 1,536 tokens) is not in the data: prompt tokens
  cover the question only, so costs are a lower bound.
* ``mt_bench`` (80): one record per question, as RouteLLM routes on the first turn and averages both
  turns' judge scores: ``score = mean(turn 1, turn 2 judge score) / 10``. The answers are recovered
  from the judge prompts; completion tokens = both answers, prompt tokens = both calls' inputs
  (turn 1 question; then turn 1 question + answer + turn 2 question).

Prompts RouteLLM excludes for overlapping its router training data get ``contaminated: true``; they
are kept.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from triage.eval.importers.base import Importer, register_importer, require_path
from triage.eval.importers.tokens import TokenCounter, get_counter
from triage.eval.prices import PriceTable
from triage.replay.schema import Outcome, ReplayRecord
from triage.settings import get_settings

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
MODELS = (WEAK, STRONG)
GSM8K_SHOTS = 8


@register_importer
class RouteLLMImporter(Importer):
    source = "routellm"
    datasets = ("gsm8k", "mmlu", "mt_bench")

    def load(self, path: Path, *, prices: PriceTable) -> Iterator[ReplayRecord]:
        parts = _locate(require_path(path))
        if not parts:
            raise FileNotFoundError(f"no RouteLLM eval data (gsm8k/, mmlu/, mt_bench/) at {path}")
        counter = get_counter("cl100k_base")
        loaders: dict[str, Callable[[Path, PriceTable, TokenCounter], Iterator[ReplayRecord]]] = {
            "gsm8k": _gsm8k,
            "mmlu": _mmlu,
            "mt_bench": _mt_bench,
        }
        for name in self.selected(tuple(d for d in self.datasets if d in parts)):
            yield from loaders[name](parts[name], prices, counter)


def _locate(p: Path) -> dict[str, Path]:
    """Map dataset name -> file or folder for what ``p`` holds."""
    if p.is_file():
        if p.name == "gsm8k_responses.csv":
            return {"gsm8k": p}
        if p.name.startswith("mmlu_") and p.suffix == ".csv":
            return {"mmlu": p}
        if p.name in ("judgements.jsonl", "question.jsonl"):
            return {"mt_bench": p.parent}
        return {}
    found: dict[str, Path] = {}
    if (p / "gsm8k_responses.csv").is_file():
        found["gsm8k"] = p / "gsm8k_responses.csv"
    if (p / "responses").is_dir() or any(p.glob("mmlu_*.csv")):
        found["mmlu"] = p
    if (p / "judgements.jsonl").is_file():
        found["mt_bench"] = p
    for sub in ("gsm8k", "mmlu", "mt_bench"):
        if (p / sub).is_dir():
            found.update({k: v for k, v in _locate(p / sub).items() if k not in found})
    return found


def _read_csv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"prompt", *MODELS} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
        return list(reader)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
    return out


def _contaminated(*candidates: Path) -> set[str]:
    for c in candidates:
        if c.is_file():
            return {str(r["eval_prompt"]) for r in _read_jsonl(c)}
    return set()


def _correct(value: str, where: str) -> float:
    v = value.strip().lower()
    if v in ("true", "1", "1.0"):
        return 1.0
    if v in ("false", "0", "0.0"):
        return 0.0
    raise ValueError(f"{where}: expected True/False, got {value!r}")


def _outcome(
    model: str, score: float, prompt_tokens: int, completion_tokens: int, prices: PriceTable, **extra: Any
) -> Outcome:
    return Outcome(
        score=score,
        cost_usd=prices.cost(model, prompt_tokens, completion_tokens),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        **extra,
    )


def _gsm8k_dir(near: Path) -> Path | None:
    """GSM8K's own folder (test.jsonl, train.jsonl): a sibling of ``routellm/`` or under the data dir."""
    for d in (near.parent.parent.parent / "gsm8k", near.parent.parent / "gsm8k", get_settings().data_dir / "gsm8k"):
        if (d / "train.jsonl").is_file() and (d / "test.jsonl").is_file():
            return d
    return None


def _gsm8k(path: Path, prices: PriceTable, counter: TokenCounter) -> Iterator[ReplayRecord]:
    rows = _read_csv(path)
    contaminated = _contaminated(path.parent / "contaminated_prompts.jsonl")
    gsm = _gsm8k_dir(path)
    prefix_tokens, basis, golds = 0, "question line only (GSM8K train.jsonl not found)", None
    if gsm is not None:
        train = _read_jsonl(gsm / "train.jsonl")[:GSM8K_SHOTS]
        prefix = "".join(f"Question: {t['question']}\nAnswer: {t['answer']}\n\n" for t in train)
        # The prefix ends in "\n\n", a pre-tokenisation boundary, so counts add up exactly.
        prefix_tokens, basis = counter.count(prefix), f"{GSM8K_SHOTS}-shot prefix + question line"
        test = _read_jsonl(gsm / "test.jsonl")
        if len(test) == len(rows) and all(t["question"] == r["prompt"] for t, r in zip(test, rows)):
            golds = [t["answer"].rsplit("####", 1)[-1].strip() for t in test]
    for i, row in enumerate(rows):
        question = row["prompt"]
        prompt_tokens = prefix_tokens + counter.count(f"Question: {question}\nAnswer:")
        outcomes = {
            m: _outcome(
                m,
                _correct(row[m], f"{path.name} row {i + 1} {m}"),
                prompt_tokens,
                counter.count(row.get(f"{m}_response") or ""),
                prices,
            )
            for m in MODELS
        }
        yield ReplayRecord(
            id=f"gsm8k/{i}",
            prompt=question,
            task="gsm8k",
            gold=golds[i] if golds else None,
            outcomes=outcomes,
            contaminated=question in contaminated,
            token_counter=counter.name,
            prompt_tokens_basis=basis,
        )


def _mmlu(path: Path, prices: PriceTable, counter: TokenCounter) -> Iterator[ReplayRecord]:
    if path.is_file():
        files, root = [path], path.parent.parent
    else:
        folder = path / "responses" if (path / "responses").is_dir() else path
        files, root = sorted(folder.glob("mmlu_*.csv")), folder.parent if folder.name == "responses" else folder
    contaminated = _contaminated(root / "contaminated_prompts.jsonl", path.parent / "contaminated_prompts.jsonl")
    for f in files:
        subject = f.stem[len("mmlu_") :]
        for i, row in enumerate(_read_csv(f)):
            prompt = row["prompt"]
            prompt_tokens = counter.count(prompt)
            outcomes = {
                m: _outcome(m, _correct(row[m], f"{f.name} row {i + 1} {m}"), prompt_tokens, 1, prices)
                for m in MODELS
            }
            yield ReplayRecord(
                id=f"mmlu/{subject}/{i}",
                prompt=prompt,
                task="mmlu",
                outcomes=outcomes,
                subject=subject,
                contaminated=prompt in contaminated,
                token_counter=counter.name,
                prompt_tokens_basis="question only (RouteLLM's 5-shot prefix is not in the data)",
            )


# Markers of the MT-Bench single-answer judge prompts (FastChat llm_judge templates).
_T1_START, _T1_END = "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]"
_CONV_START = "<|The Start of Assistant A's Conversation with User|>"
_CONV_END = "\n\n<|The End of Assistant A's Conversation with User|>"
_ASSISTANT = "\n\n### Assistant A:\n"
_USER = "\n\n### User:\n"


def _answers(judgement: dict[str, Any], turns: list[str]) -> list[str]:
    """The model's answer(s) quoted in a judge prompt: [turn 1] or [turn 1, turn 2]."""
    text = str(judgement["user_prompt"])
    where = f"judgement for question {judgement['question_id']} ({judgement['model']}, turn {judgement['turn']})"
    if int(judgement["turn"]) == 1:
        a, b = text.find(_T1_START), text.rfind(_T1_END)
        if a < 0 or b < a:
            raise ValueError(f"{where}: answer markers not found")
        return [text[a + len(_T1_START) : b]]
    conv = text[text.find(_CONV_START) + len(_CONV_START) : text.rfind(_CONV_END)]
    second_user = f"{_USER}{turns[1]}{_ASSISTANT}"
    head, sep, answer2 = conv.partition(second_user)
    a1 = head.find(_ASSISTANT)
    if text.find(_CONV_START) < 0 or not sep or a1 < 0:
        raise ValueError(f"{where}: conversation markers not found")
    return [head[a1 + len(_ASSISTANT) :], answer2]


def _mt_bench(path: Path, prices: PriceTable, counter: TokenCounter) -> Iterator[ReplayRecord]:
    questions = _read_jsonl(path / "question.jsonl")
    judgements = _read_jsonl(path / "judgements.jsonl")
    contaminated = _contaminated(path / "contaminated_prompts.jsonl")
    by_key = {(int(j["question_id"]), str(j["model"]), int(j["turn"])): j for j in judgements}
    for q in questions:
        qid, turns = int(q["question_id"]), [str(t) for t in q["turns"]]
        outcomes: dict[str, Outcome] = {}
        for m in MODELS:
            j1, j2 = by_key.get((qid, m, 1)), by_key.get((qid, m, 2))
            if j1 is None or j2 is None:
                continue  # not judged on both turns: leave the model out for this question
            a1, a2 = _answers(j1, turns)[0], _answers(j2, turns)[1]
            q1, q2 = counter.count(turns[0]), counter.count(turns[1])
            c1, c2 = counter.count(a1), counter.count(a2)
            s1, s2 = float(j1["score"]) / 10.0, float(j2["score"]) / 10.0
            outcomes[m] = _outcome(m, (s1 + s2) / 2.0, q1 + (q1 + c1 + q2), c1 + c2, prices, turn_scores=[s1, s2])
        if not outcomes:
            continue
        extra: dict[str, Any] = {"category": q.get("category"), "turns": turns}
        if q.get("reference"):
            extra["reference"] = q["reference"]
        yield ReplayRecord(
            id=f"mt_bench/{qid}",
            prompt=turns[0],
            task="mt_bench",
            outcomes=outcomes,
            contaminated=any(t in contaminated for t in turns),
            token_counter=counter.name,
            prompt_tokens_basis="turn 1 question + (turn 1 question, answer, turn 2 question)",
            **extra,
        )
