"""Router labels at scale from teacher-forced passes over reference solutions (no generation).

Generation is what makes R2R labels expensive on a CPU (:mod:`triage.token_router.labels` decodes
the large model's answer and continues from every differing token). Prefill is cheap and batched,
so here both models read ``prompt + solution`` in one forward each, where the solution is the
GSM8K train reference with its calculator annotations (``<<48/2=24>>``) removed and its
``#### N`` line written as ``The answer is N.`` (the style the prompt asks for). At solution
position ``j`` (the state before solution token ``j``), with ``s``/``l`` the small/large model's
greedy token and ``t`` the solution's token:

* ``s == l``: **identical** (nothing to route);
* ``s != l`` and ``l == t``: **divergent** (the cheap positive: the large model knows the
  solution's next token and the small one does not);
* ``s != l`` and ``s == t``: **neutral** (the small model follows the solution; the large
  model's token is another wording);
* ``s != l`` and neither is ``t``: **unresolved** (kept, not trained on).

The cheap label is checked against the R2R rule on a sample (:func:`verify_sample`): continue the
large model greedily from ``prefix + s`` and from ``prefix + l`` and compare final answers.

Per prompt ``prompts/<index>.npz`` (features as float16, categories) and ``prompts/<index>.json``
land in ``<cache_dir>/token_router/forced_labels/`` (an interrupted run resumes); the stacked
arrays and ``manifest.json`` are written by :func:`triage.token_router.labels.collect`, so
``triage token-router train --labels`` reads them like the generated label set.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from triage.token_router.decode import ModelStream, prompt_ids
from triage.token_router.engine import teacher_forced, token_embeddings
from triage.token_router.features import DEFAULT_TOP_K, FEATURE_VERSION, router_features
from triage.token_router.gsm8k import extract_answer, messages_for, read_rows, same_answer
from triage.token_router.labels import (
    CATEGORY_NAMES,
    DIVERGENT,
    IDENTICAL,
    NEUTRAL,
    UNRESOLVED,
    collect,
)

LABEL_RULE_VERSION = 2  # 2: the solution ends with the chat template's end-of-turn token
LABEL_RULE = ("teacher-forced on the GSM8K reference solution: identical if small==large greedy; divergent if "
              "small!=large and large==solution token; neutral if small!=large and small==solution token; "
              "unresolved otherwise")
_CALC = re.compile(r"<<[^<>]{0,200}>>")  # bounded: GSM8K annotations are short; nothing nests


def forced_labels_dir() -> Path:
    from triage.settings import get_settings

    return Path(get_settings().cache_dir) / "token_router" / "forced_labels"


@dataclass(frozen=True)
class ForcedSettings:
    top_k: int = DEFAULT_TOP_K
    max_solution_tokens: int = 256  # longer references are cut (the decode benchmark caps answers at 256)


@dataclass(frozen=True)
class Reference:
    index: int
    question: str
    solution: str
    answer: float | None


def reference_solution(answer_field: str) -> tuple[str, float | None]:
    """GSM8K's ``answer`` field as a plain solution in the prompt's style, and its final number."""
    body, _, final = answer_field.rpartition("####")
    if not _:
        body, final = answer_field, ""
    body = _CALC.sub("", body).strip()
    number = extract_answer("#### " + final.strip()) if final.strip() else None
    final_text = final.strip()
    text = f"{body}\nThe answer is {final_text}." if final_text else body
    return text, number


def load_references(path: Path | str, start: int = 0, count: int | None = None) -> list[Reference]:
    out = []
    for i, row in read_rows(path, start, count):
        text, number = reference_solution(row["answer"])
        out.append(Reference(index=i, question=row["question"], solution=text, answer=number))
    return out


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn in the chat template (what greedy decoding stops on)."""
    from triage.lm.base import END_OF_TURN_TOKENS

    vocab = tokenizer.get_vocab()
    for t in END_OF_TURN_TOKENS:
        if t in vocab:
            return int(vocab[t])
    raise ValueError("the tokenizer has no end-of-turn token")


def solution_ids(pair: Any, ref: Reference, s: ForcedSettings) -> list[int]:
    sol = [int(t) for t in pair.tokenizer(ref.solution, add_special_tokens=False)["input_ids"]]
    return sol[: s.max_solution_tokens - 1] + [end_of_turn_id(pair.tokenizer)]


def categorise(small: Sequence[int], large: Sequence[int], target: Sequence[int]) -> np.ndarray:
    s, lg, t = (np.asarray(x, dtype=np.int64) for x in (small, large, target))
    cats = np.full(len(t), UNRESOLVED, dtype=np.int8)
    cats[s == lg] = IDENTICAL
    diff = s != lg
    cats[diff & (lg == t)] = DIVERGENT
    cats[diff & (s == t) & (lg != t)] = NEUTRAL
    return cats


def label_reference(pair: Any, ref: Reference, s: ForcedSettings) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features (n, d) float16, categories (n,) and a JSON record for one prompt + reference solution."""
    t0 = time.perf_counter()
    prompt = prompt_ids(pair, messages_for(ref.question))
    sol = solution_ids(pair, ref, s)
    ids = prompt + sol
    # Row j of either pass is the state before solution token j.
    hidden, logits = teacher_forced(pair.small, ids[:-1], len(prompt) - 1)
    small_tok = np.asarray(logits.argmax(-1)).astype(np.int64).reshape(-1)
    feats = router_features(hidden, logits, token_embeddings(pair.small, small_tok.tolist()), s.top_k)
    del hidden, logits
    t1 = time.perf_counter()
    _, large_logits = teacher_forced(pair.large, ids[:-1], len(prompt) - 1)
    large_tok = np.asarray(large_logits.argmax(-1)).astype(np.int64).reshape(-1)
    del large_logits
    cats = categorise(small_tok, large_tok, sol)
    record = {
        "index": ref.index,
        "question": ref.question,
        "gold_answer": ref.answer,
        "prompt_tokens": len(prompt),
        "tokens": len(sol),
        "solution_tokens": sol,
        "small_tokens": small_tok.tolist(),
        "large_tokens": large_tok.tolist(),
        "categories": cats.tolist(),
        "small_seconds": round(t1 - t0, 3),
        "large_seconds": round(time.perf_counter() - t1, 3),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return feats.astype(np.float16), cats, record


def settings_record(pair: Any, s: ForcedSettings) -> dict[str, Any]:
    return {**s.__dict__, "feature_version": FEATURE_VERSION, "engine": pair.engine, "label_rule": LABEL_RULE,
            "label_rule_version": LABEL_RULE_VERSION, "max_new_tokens": None}


_FEATURE_KEYS = ("top_k", "max_solution_tokens", "feature_version", "engine")


def _relabel(pair: Any, ref: Reference, s: ForcedSettings, record: dict[str, Any], npz: Path) -> dict[str, Any] | None:
    """A record whose features are still valid but whose label rule is older: recompute its
    categories from the greedy tokens it recorded (no model pass). None when it cannot be reused."""
    sol = solution_ids(pair, ref, s)
    if len(sol) != len(record.get("small_tokens", [])) or sol[:-1] != record["solution_tokens"][:-1]:
        return None
    cats = categorise(record["small_tokens"], record["large_tokens"], sol)
    with np.load(npz) as data:
        feats = data["features"]
    np.savez(npz, features=feats, categories=cats)
    return {**record, "solution_tokens": sol, "categories": cats.tolist(), "relabelled": True}


def run_forced_labels(pair: Any, refs: Sequence[Reference], s: ForcedSettings, *, out_dir: Path | None = None,
                      command: str = "", source: str = "", progress: Callable[[str], None] | None = None,
                      deadline: float | None = None) -> dict[str, Any]:
    """Label ``refs`` (resuming). ``deadline`` (time.time()): stop starting new prompts after it and
    write the manifest over those done. Returns the manifest."""
    out = Path(out_dir or forced_labels_dir())
    (out / "prompts").mkdir(parents=True, exist_ok=True)
    settings = settings_record(pair, s)
    done: list[int] = []
    labelled = relabelled = 0
    t_start = time.perf_counter()
    for n, ref in enumerate(refs):
        npz, js = out / "prompts" / f"{ref.index}.npz", out / "prompts" / f"{ref.index}.json"
        if npz.is_file() and js.is_file():
            old = json.loads(js.read_text())
            have = old.get("settings") or {}
            if have == settings:
                done.append(ref.index)
                continue
            if all(have.get(k) == settings[k] for k in _FEATURE_KEYS):
                fixed = _relabel(pair, ref, s, old, npz)
                if fixed is not None:
                    fixed["settings"] = settings
                    js.write_text(json.dumps(fixed))
                    done.append(ref.index)
                    relabelled += 1
                    continue
        if deadline is not None and time.time() > deadline:
            break
        feats, cats, record = label_reference(pair, ref, s)
        record["settings"] = settings
        np.savez(npz, features=feats, categories=cats)
        js.write_text(json.dumps(record))
        done.append(ref.index)
        labelled += 1
        if progress and (n % 25 == 0 or n == len(refs) - 1):
            counts = {CATEGORY_NAMES[c]: int((cats == c).sum()) for c in CATEGORY_NAMES}
            progress(f"[{n + 1}/{len(refs)}] prompt {ref.index}: {record['tokens']} tokens {counts} "
                     f"small {record['small_seconds']} s large {record['large_seconds']} s "
                     f"(elapsed {time.perf_counter() - t_start:.0f} s)")
    if not done:
        raise ValueError("no prompt was labelled (the deadline passed before the first one)")
    return collect(out, done, command=command, source=source, pair=pair, settings=settings,
                   run={"command": command, "prompts_labelled": labelled, "prompts_relabelled": relabelled,
                        "seconds": round(time.perf_counter() - t_start, 1)})


# -- verification against the R2R rule -------------------------------------------------------------


def _continue_answer(large: Any, prefix: list[int], eos: frozenset[int], cap: int,
                     decode_text: Callable[[list[int]], str], solution_prefix: list[int]) -> float | None | str:
    """Greedy large-model continuation of ``prefix``; its final answer, or ``"unfinished"``."""
    stream = ModelStream(large)
    ids = list(prefix)
    new: list[int] = []
    while len(new) < cap:
        stream.advance(ids)
        t = stream.greedy()
        ids.append(t)
        new.append(t)
        if t in eos:
            return extract_answer(decode_text(solution_prefix + new))
    return "unfinished"


def verify_sample(pair: Any, folder: Path | None = None, *, per_category: int = 30, cap: int = 128, seed: int = 0,
                  categories: Sequence[int] = (DIVERGENT, NEUTRAL), progress: Callable[[str], None] | None = None,
                  deadline: float | None = None) -> dict[str, Any]:
    """R2R check of cheap labels: for sampled positions of each cheap category, continue the large
    model from ``prefix + small token`` and from ``prefix + large token``; different final answers
    mean the position is truly divergent. Returns per-category counts and agreement rates."""
    out = Path(folder or forced_labels_dir())
    eos = pair.eos_ids
    tok = pair.tokenizer
    decode_text = lambda ids: tok.decode([t for t in ids if t not in eos], skip_special_tokens=True)
    rng = random.Random(seed)
    pool: dict[int, list[tuple[int, int]]] = {c: [] for c in categories}
    records = {}
    for js in sorted((out / "prompts").glob("*.json")):
        rec = json.loads(js.read_text())
        records[rec["index"]] = rec
        for j, c in enumerate(rec["categories"]):
            if c in pool:
                pool[c].append((rec["index"], j))
    results: dict[str, Any] = {"cap_tokens": cap, "seed": seed, "per_category": per_category, "by_category": {}}
    rows = []
    for c in categories:
        picks = rng.sample(pool[c], min(per_category, len(pool[c])))
        counts = {"divergent": 0, "neutral": 0, "unfinished": 0}
        for idx, j in picks:
            if deadline is not None and time.time() > deadline:
                break
            rec = records[idx]
            prompt = prompt_ids(pair, messages_for(rec["question"]))
            sol = rec["solution_tokens"]
            prefix = prompt + sol[:j]
            a_small = _continue_answer(pair.large, prefix + [rec["small_tokens"][j]], eos, cap, decode_text,
                                       sol[:j] + [rec["small_tokens"][j]])
            a_large = _continue_answer(pair.large, prefix + [rec["large_tokens"][j]], eos, cap, decode_text,
                                       sol[:j] + [rec["large_tokens"][j]])
            if "unfinished" in (a_small, a_large):
                verdict = "unfinished"
            else:
                verdict = "neutral" if same_answer(a_small, a_large) or (a_small is None and a_large is None) \
                    else "divergent"
            counts[verdict] += 1
            rows.append({"index": idx, "position": j, "cheap": CATEGORY_NAMES[c], "verified": verdict,
                         "answer_small_branch": a_small, "answer_large_branch": a_large})
            if progress:
                progress(f"{CATEGORY_NAMES[c]} {idx}:{j} -> {verdict} ({a_small} vs {a_large})")
        finished = counts["divergent"] + counts["neutral"]
        agree = counts["divergent"] if c == DIVERGENT else counts["neutral"]
        results["by_category"][CATEGORY_NAMES[c]] = {
            "sampled": sum(counts.values()), "verified": counts,
            "agreement": round(agree / finished, 4) if finished else None,
        }
    results["rows"] = rows
    return results


__all__ = [
    "LABEL_RULE",
    "ForcedSettings",
    "Reference",
    "categorise",
    "end_of_turn_id",
    "forced_labels_dir",
    "label_reference",
    "load_references",
    "reference_solution",
    "run_forced_labels",
    "solution_ids",
    "verify_sample",
]
