"""gsm8k-solutions: four GPT-3 configurations on the GSM8K test set (openai/grade-school-math).

``example_model_solutions.jsonl`` ("Training Verifiers to Solve Math Word Problems") gives, per test
question, the solution and correctness of ``6b_finetuning``, ``6b_verification``, ``175b_finetuning`` and
``175b_verification``. Neither tokens nor costs are logged, so:

* Tokens are counted with tiktoken ``r50k_base``, GPT-3's own tokenizer (``token_counter``).
* Prices: ``gpt-3-6b`` / ``gpt-3-175b`` in the price table, stand-ins for models that were never sold
  (fine-tuned Curie / Davinci usage rates of 2022; marked ``approximate``).
* A finetuning candidate is one call: prompt = the question, completion = the solution.
* A verification candidate samples ``VERIFICATION_SAMPLES`` = 100 solutions and keeps the one a
  verifier of the same size ranks highest (the paper's setting). Billed as one request with
  ``n=100`` (the prompt once, 100 completions) plus 100 verifier passes reading question + solution.
  Only the chosen solution is in the data, so the 99 others are assumed to be as long:
  ``prompt_tokens = q + 100 x (q + s)``, ``completion_tokens = 100 x s``; the outcome records
  ``samples: 100``. This makes verification ~100x dearer than finetuning at the same size.

``gold`` is the final answer (the ``A: <number>`` line of ``ground_truth``). These are GSM8K test
questions, not a router train/test split, so ``split`` is null.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from triage.eval.importers.base import Importer, register_importer, require_path
from triage.eval.importers.tokens import TokenCounter, get_counter
from triage.eval.prices import PriceTable
from triage.replay.schema import Outcome, ReplayRecord

FILE_NAME = "example_model_solutions.jsonl"
VERIFICATION_SAMPLES = 100
#: candidate -> (price-table model, samples drawn per question)
CANDIDATES: dict[str, tuple[str, int]] = {
    "6b_finetuning": ("gpt-3-6b", 1),
    "6b_verification": ("gpt-3-6b", VERIFICATION_SAMPLES),
    "175b_finetuning": ("gpt-3-175b", 1),
    "175b_verification": ("gpt-3-175b", VERIFICATION_SAMPLES),
}


@register_importer
class GSM8KSolutionsImporter(Importer):
    source = "gsm8k-solutions"

    def load(self, path: Path, *, prices: PriceTable) -> Iterator[ReplayRecord]:
        p = require_path(path)
        if self.dataset is not None:
            self.selected()  # this source has no sub-datasets: raises a clear error
        file = p / FILE_NAME if p.is_dir() else p
        if not file.is_file():
            raise FileNotFoundError(f"{FILE_NAME} not found in {p}")
        counter = get_counter("r50k_base")
        n = 0
        with file.open("r", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file}:{line_no}: invalid JSON ({exc.msg})") from None
                yield _record(row, n, line_no, file, counter, prices)
                n += 1


def _record(
    row: dict[str, Any], n: int, line_no: int, file: Path, counter: TokenCounter, prices: PriceTable
) -> ReplayRecord:
    question = str(row["question"])
    q = counter.count(question)
    outcomes: dict[str, Outcome] = {}
    for name, (model, samples) in CANDIDATES.items():
        entry = row.get(name)
        if entry is None:
            continue
        if not isinstance(entry, dict) or "is_correct" not in entry:
            raise ValueError(f"{file}:{line_no}: field '{name}': expected {{'is_correct', 'solution'}}")
        s = counter.count(str(entry.get("solution") or ""))
        if samples == 1:
            prompt_tokens, completion_tokens = q, s
        else:
            prompt_tokens, completion_tokens = q + samples * (q + s), samples * s
        outcomes[name] = Outcome(
            score=1.0 if entry["is_correct"] else 0.0,
            cost_usd=prices.cost(model, prompt_tokens, completion_tokens),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            samples=samples,
        )
    truth = str(row.get("ground_truth") or "")
    gold = truth.rsplit("A:", 1)[-1].strip() if "A:" in truth else None
    return ReplayRecord(
        id=f"gsm8k-test/{n}",
        prompt=question,
        task="gsm8k",
        gold=gold,
        outcomes=outcomes,
        token_counter=counter.name,
        benchmark_split="test",
    )
