"""pricing-reversal: 8 reasoning models on AIME, GPQA, LiveMathBench and SimpleQA (lchen001/pricing-reversal).

Each ``consolidated/{dataset}-{model}.json`` holds one model's run over one dataset. Models are joined
per dataset on the question text (``origin_query``, unique within a dataset). ``index`` alone is not a
safe key: the two partial runs (gpt-5.2-high on LiveMathBench, 120 of 121 rows; claude-opus on
SimpleQA, 4,310 of 4,326) are numbered from 0 where every other file numbers from 1. A query's id uses
the index most models give it (``aime-hybrid/17``); an outcome whose file numbered it differently keeps
that number as ``source_index``. Queries only some models ran keep outcomes for those models only.

Costs and tokens are the logged ones: ``cost`` (USD), ``prompt_tokens``, ``completion_tokens`` (hidden
thinking included) and ``thinking_tokens`` (→ ``reasoning_tokens``). ``truncated`` is set only where the
data shows an output cap: MiniMax-M2.5 stops at 2,048 completion tokens and kimi-k2.5 at 32,768 (rows
at the cap mostly have an empty answer). For the other models it is left unknown (null).

The benchmark's own split ("test", "hybrid") is not a router train/test split, so ``split`` is null
and the benchmark split is kept as ``benchmark_split``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from triage.eval.importers.base import Importer, register_importer, require_path
from triage.eval.prices import PriceTable
from triage.replay.schema import Outcome, ReplayRecord

# Completion-token caps visible in the data: every row at the cap ends without a usable answer.
OUTPUT_CAPS: dict[str, int] = {"MiniMax-M2.5": 2048, "kimi-k2.5": 32768}


@register_importer
class PricingReversalImporter(Importer):
    source = "pricing-reversal"
    datasets = ("aime-hybrid", "gpqa-test", "livemathbench-test", "simpleqa-test")
    uses_prices = False  # every row carries its billed USD cost

    def load(self, path: Path, *, prices: PriceTable) -> Iterator[ReplayRecord]:
        p = require_path(path)
        if p.is_file():
            run = _read_run(p)
            dataset = f"{run['dataset_name']}-{run['split']}" if run.get("split") else str(run["dataset_name"])
            if self.dataset is not None and self.dataset != dataset:
                raise ValueError(f"{p} holds dataset {dataset!r}, not {self.dataset!r}")
            yield from _join(dataset, [run])
            return
        folder = p / "consolidated" if (p / "consolidated").is_dir() else p
        files = sorted(folder.glob("*.json"))
        present = tuple(d for d in self.datasets if any(f.name.startswith(d + "-") for f in files))
        if not present:
            raise FileNotFoundError(f"no pricing-reversal files ({', '.join(self.datasets)}-<model>.json) in {folder}")
        for dataset in self.selected(present):
            runs = [_read_run(f) for f in files if f.name.startswith(dataset + "-")]
            yield from _join(dataset, runs)


def _read_run(path: Path) -> dict[str, Any]:
    try:
        run = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(run, dict) or not isinstance(run.get("records"), list) or "model_name" not in run:
        raise ValueError(f"{path}: not a pricing-reversal run file (needs 'model_name' and 'records')")
    run["_path"] = str(path)
    return run


def _join(dataset: str, runs: list[dict[str, Any]]) -> Iterator[ReplayRecord]:
    by_query: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        model = str(run["model_name"])
        for row in run["records"]:
            by_query.setdefault(str(row["origin_query"]), {})[model] = row
    # The id of a query: the index most models gave it (ties: the smallest).
    canonical: dict[str, int] = {}
    for query, rows in by_query.items():
        counts = Counter(int(r["index"]) for r in rows.values())
        canonical[query] = min(counts, key=lambda i: (-counts[i], i))
    owners: dict[int, str] = {}
    for query, idx in canonical.items():
        if idx in owners:
            raise ValueError(f"{dataset}: two different questions share index {idx}; cannot join the runs")
        owners[idx] = query
    for idx in sorted(owners):
        query = owners[idx]
        rows = by_query[query]
        first = next(iter(rows.values()))
        outcomes = {model: _outcome(model, row, idx) for model, row in rows.items()}
        yield ReplayRecord(
            id=f"{dataset}/{idx}",
            prompt=str(first.get("prompt") or query),
            task=dataset,
            split=None,
            gold=None if first.get("ground_truth") is None else str(first["ground_truth"]),
            outcomes=outcomes,
            query=query,
            benchmark_split=dataset.rsplit("-", 1)[-1],
        )


def _outcome(model: str, row: dict[str, Any], idx: int) -> Outcome:
    completion = int(row["completion_tokens"])
    cap = OUTPUT_CAPS.get(model)
    extra: dict[str, Any] = {}
    if int(row["index"]) != idx:
        extra["source_index"] = int(row["index"])
    return Outcome(
        score=float(row["score"]),
        cost_usd=float(row["cost"]),
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=completion,
        reasoning_tokens=None if row.get("thinking_tokens") is None else int(row["thinking_tokens"]),
        truncated=None if cap is None else completion >= cap,
        **extra,
    )
