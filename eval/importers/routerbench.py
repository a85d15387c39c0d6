"""routerbench: RouterBench 0-shot rows (ARC-Challenge, MBPP, Winogrande; 11 models), RouterDC's splits.

One CSV per ``{task}_{train|test}.csv``; the split comes from the file name. Per model there is a
correctness column (0/1), ``<model>|model_response`` and ``<model>|total_cost`` (USD, used as given).

Token counts: RouterBench priced every call as ``tokens(prompt) x input price + tokens(response) x output
price`` with tiktoken's ``cl100k_base`` for all models (via ``tokencost``). Counting the stringified
prompt and response lists here with the same encoding reproduces its ``total_cost`` to float precision
with the shipped price table, so the counts are the ones the costs were billed on
(``token_counter: tiktoken/cl100k_base``). For non-OpenAI models they are cl100k counts, not the model's
own tokenizer's.

The stringified prompt is parsed with ``ast.literal_eval``: a list of message strings, all sent as one
user turn. ``sample_id`` is not unique: 14 ARC queries sit in two rows each, a RouterBench pivot
artifact. In every such pair the scored models are complementary (10 in one row, the eleventh in the
other, whose prompt is logged as the same text twice and billed twice: ``prompt_parts: 2``), and 6
pairs straddle RouterDC's train/test files. Both rows are kept as they are, each with the outcomes it
has, and both ids get the original pandas row index appended (``<sample_id>@<row>``); merge on the
``sample_id`` field if you need one record per query. A model with no correctness value in a row
gets no outcome there.
"""

from __future__ import annotations

import ast
import csv
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from triage.eval.importers.base import Importer, register_importer, require_path
from triage.eval.importers.tokens import TokenCounter, get_counter
from triage.eval.prices import PriceTable
from triage.replay.schema import Outcome, ReplayRecord

_SPLITS = ("train", "test")
_ROW_INDEX = ("", "Unnamed: 0")


@register_importer
class RouterBenchImporter(Importer):
    source = "routerbench"
    datasets = ("arc_challenge", "mbpp", "winograde")
    uses_prices = False  # RouterBench logs USD per call

    def load(self, path: Path, *, prices: PriceTable) -> Iterator[ReplayRecord]:
        p = require_path(path)
        files = [p] if p.is_file() else sorted(p.glob("*.csv"))
        files = [f for f in files if _split_of(f) is not None]
        if not files:
            raise FileNotFoundError(f"no RouterBench CSV (<task>_train.csv / <task>_test.csv) at {p}")
        present = sorted({_task_of(f) for f in files})
        if self.dataset is not None:
            if self.dataset not in present:
                raise ValueError(
                    f"unknown dataset {self.dataset!r} for source 'routerbench' at {p}; choose from: {', '.join(present)}"
                )
            files = [f for f in files if _task_of(f) == self.dataset]
        rows = [(f, row) for f in files for row in _read_rows(f)]
        dup = Counter(r["sample_id"] for _, r in rows)
        counter = get_counter("cl100k_base")
        for f, row in rows:
            yield _record(f, row, dup, counter)


def _split_of(f: Path) -> str | None:
    stem = f.stem
    for s in _SPLITS:
        if stem.endswith("_" + s):
            return s
    return None


def _task_of(f: Path) -> str:
    return f.stem.rsplit("_", 1)[0]


def _read_rows(f: Path) -> list[dict[str, str]]:
    # Responses run to tens of kB per cell; the csv module's default 128 kB field limit is too small
    # for a few of them.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with f.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"sample_id", "prompt", "eval_name"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{f}: not a RouterBench CSV (missing columns: {', '.join(sorted(missing))})")
        return list(reader)


def _models(row: dict[str, str]) -> list[str]:
    return [k[: -len("|total_cost")] for k in row if k.endswith("|total_cost")]


def _as_list(text: str, where: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [text]  # a bare string, not a stringified list
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a stringified list of strings, got {type(value).__name__}")
    return [str(v) for v in value]


def _record(f: Path, row: dict[str, str], dup: Counter[str], counter: TokenCounter) -> ReplayRecord:
    source_row = next((row[k] for k in _ROW_INDEX if k in row and row[k] != ""), None)
    sample_id = row["sample_id"]
    where = f"{f.name} sample {sample_id}"
    rid = f"{sample_id}@{source_row}" if dup[sample_id] > 1 else sample_id
    messages = _as_list(row["prompt"], where)
    prompt_tokens = sum(counter.count(m) for m in messages)
    unique_messages = list(dict.fromkeys(messages))
    outcomes: dict[str, Outcome] = {}
    for model in _models(row):
        score_text = row.get(model, "")
        if score_text == "":
            continue  # model not run on this row
        response = _as_list(row.get(f"{model}|model_response", "[]"), f"{where} {model}|model_response")
        outcomes[model] = Outcome(
            score=float(score_text),
            cost_usd=float(row[f"{model}|total_cost"]),
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(counter.count(r) for r in response),
        )
    if not outcomes:
        raise ValueError(f"{where}: no model has a correctness value")
    extra: dict[str, Any] = {"sample_id": sample_id, "token_counter": counter.name}
    if source_row is not None:
        extra["source_row"] = int(source_row)
    if len(messages) > 1:
        extra["prompt_parts"] = len(messages)
    if row.get("oracle_model_to_route_to"):
        extra["oracle_model_to_route_to"] = row["oracle_model_to_route_to"]
    return ReplayRecord(
        id=rid,
        prompt="\n\n".join(unique_messages),
        task=row["eval_name"],
        split=_split_of(f),  # type: ignore[arg-type]
        gold=None,
        outcomes=outcomes,
        **extra,
    )
