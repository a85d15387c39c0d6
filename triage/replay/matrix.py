"""Replay records as dense arrays: the shape every metric and router works on.

Rows are queries, columns are candidates. A missing outcome is NaN (scores, costs, tokens)
so vectorised metrics can tell "not run" from "scored 0".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from triage.replay.schema import ReplayRecord


@dataclass
class ReplayData:
    """Dense per-query x per-candidate outcome arrays plus the query metadata routers need."""

    ids: list[str]
    candidates: list[str]
    score: np.ndarray  # (n, m) float, NaN = candidate not run on that query
    cost: np.ndarray  # (n, m) float USD, NaN = unknown
    prompt_tokens: np.ndarray  # (n, m) float, NaN = unknown
    completion_tokens: np.ndarray  # (n, m)
    reasoning_tokens: np.ndarray  # (n, m)
    latency_s: np.ndarray  # (n, m)
    truncated: np.ndarray  # (n, m) bool
    splits: list[str | None] = field(default_factory=list)
    tasks: list[str | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    records: list[ReplayRecord] | None = None
    name: str = "replay"

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def m(self) -> int:
        return len(self.candidates)

    def candidate_index(self, name: str) -> int:
        try:
            return self.candidates.index(name)
        except ValueError:
            raise KeyError(f"unknown candidate {name!r}; known: {', '.join(self.candidates)}") from None

    @property
    def total_tokens(self) -> np.ndarray:
        """Prompt + completion tokens per cell (completion already includes reasoning)."""
        return np.nan_to_num(self.prompt_tokens) + np.nan_to_num(self.completion_tokens)

    def complete(self) -> "ReplayData":
        """Keep only queries on which every candidate was run (routers need a full row)."""
        keep = ~np.isnan(self.score).any(axis=1)
        return self.subset(np.flatnonzero(keep))

    def subset(self, idx: np.ndarray | Sequence[int]) -> "ReplayData":
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in idx] if xs else xs  # noqa: E731
        return replace(
            self,
            ids=pick(self.ids),
            score=self.score[idx],
            cost=self.cost[idx],
            prompt_tokens=self.prompt_tokens[idx],
            completion_tokens=self.completion_tokens[idx],
            reasoning_tokens=self.reasoning_tokens[idx],
            latency_s=self.latency_s[idx],
            truncated=self.truncated[idx],
            splits=pick(self.splits),
            tasks=pick(self.tasks),
            texts=pick(self.texts),
            records=pick(self.records) if self.records else self.records,
        )

    def select_candidates(self, names: Sequence[str]) -> "ReplayData":
        cols = [self.candidate_index(c) for c in names]
        return replace(
            self,
            candidates=list(names),
            score=self.score[:, cols],
            cost=self.cost[:, cols],
            prompt_tokens=self.prompt_tokens[:, cols],
            completion_tokens=self.completion_tokens[:, cols],
            reasoning_tokens=self.reasoning_tokens[:, cols],
            latency_s=self.latency_s[:, cols],
            truncated=self.truncated[:, cols],
        )

    def apply_budget(self, candidate: str, max_completion_tokens: int, *,
                     output_input_price_ratio: float = 3.0) -> "ReplayData":
        """Replay a completion-token cap on one candidate (truncation as a length penalty).

        A response longer than the cap counts as truncated, scores 0 and is billed for the
        capped tokens only: its cost is scaled by the share of completion tokens kept.
        """
        j = self.candidate_index(candidate)
        out = replace(
            self,
            score=self.score.copy(),
            cost=self.cost.copy(),
            completion_tokens=self.completion_tokens.copy(),
            reasoning_tokens=self.reasoning_tokens.copy(),
            truncated=self.truncated.copy(),
        )
        ct = out.completion_tokens[:, j]
        over = np.nan_to_num(ct, nan=0.0) > max_completion_tokens
        if not over.any():
            return out
        pt = np.nan_to_num(out.prompt_tokens[:, j])
        # Split cost into prompt and completion shares by a per-row price ratio when we can't
        # see prices: assume the billed completion part scales linearly with tokens kept.
        kept = np.where(over, max_completion_tokens / np.where(ct > 0, ct, 1.0), 1.0)
        share = _completion_cost_share(pt, ct, output_input_price_ratio)
        out.cost[:, j] = np.where(over, out.cost[:, j] * (share * kept + (1 - share)), out.cost[:, j])
        out.score[:, j] = np.where(over, 0.0, out.score[:, j])
        out.completion_tokens[:, j] = np.where(over, float(max_completion_tokens), ct)
        rt = out.reasoning_tokens[:, j]
        out.reasoning_tokens[:, j] = np.where(over & ~np.isnan(rt), np.minimum(rt, max_completion_tokens), rt)
        out.truncated[:, j] = out.truncated[:, j] | over
        return out

    @classmethod
    def from_records(cls, records: Sequence[ReplayRecord], *, name: str = "replay",
                     candidates: Sequence[str] | None = None, keep_records: bool = True) -> "ReplayData":
        if candidates is None:
            seen: dict[str, None] = {}
            for r in records:
                for c in r.outcomes:
                    seen.setdefault(c, None)
            candidates = list(seen)
        col = {c: j for j, c in enumerate(candidates)}
        n, m = len(records), len(candidates)
        arrays = {k: np.full((n, m), np.nan) for k in
                  ("score", "cost", "prompt_tokens", "completion_tokens", "reasoning_tokens", "latency_s")}
        truncated = np.zeros((n, m), dtype=bool)
        for i, r in enumerate(records):
            for c, o in r.outcomes.items():
                j = col.get(c)
                if j is None:
                    continue
                arrays["score"][i, j] = o.score
                if o.cost_usd is not None:
                    arrays["cost"][i, j] = o.cost_usd
                if o.prompt_tokens is not None:
                    arrays["prompt_tokens"][i, j] = o.prompt_tokens
                if o.completion_tokens is not None:
                    arrays["completion_tokens"][i, j] = o.completion_tokens
                if o.reasoning_tokens is not None:
                    arrays["reasoning_tokens"][i, j] = o.reasoning_tokens
                if o.latency_s is not None:
                    arrays["latency_s"][i, j] = o.latency_s
                truncated[i, j] = bool(o.truncated)
        return cls(
            ids=[r.id for r in records],
            candidates=list(candidates),
            truncated=truncated,
            splits=[r.split for r in records],
            tasks=[r.task for r in records],
            texts=[r.prompt_text() for r in records],
            records=list(records) if keep_records else None,
            name=name,
            **arrays,
        )


def _completion_cost_share(prompt_tokens: np.ndarray, completion_tokens: np.ndarray,
                           output_input_price_ratio: float) -> np.ndarray:
    """Share of a call's cost due to completion tokens, given output/input price per token.

    Used only when a budget truncates a logged response and the per-token prices are unknown;
    The default ratio 3 is the median output/input price ratio of the shipped price table
    (eval/prices/default_prices.yaml); pass the candidate's real ratio when it is known.
    """
    ct = np.nan_to_num(completion_tokens)
    weighted = output_input_price_ratio * ct
    total = np.nan_to_num(prompt_tokens) + weighted
    return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), 1.0)
