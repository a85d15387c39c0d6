"""R2R router labels at small scale, from GSM8K train prompts.

For each prompt (Fu et al., "R2R", section 3, simplified):

1. the large model answers greedily (the reference path, ``max_new_tokens`` at most);
2. the small model reads the reference path in one teacher-forced forward: at every position we
   keep its router features (:mod:`triage.token_router.features`) and its greedy next token;
3. where the small model's token differs from the large model's, we continue from it: reference
   prefix + the small model's token, then the large model greedily (``cont_tokens`` at most).
   * the continuation re-joins the reference path (its last ``merge_window`` tokens occur in the
     reference after the position): **neutral** - the difference was phrasing;
   * it ends (end of turn) with the same final answer as the reference: **neutral**;
   * it ends with a different final answer: **divergent**;
   * it neither re-joins nor ends within ``cont_tokens``: **unresolved** (kept, not trained on).
   Positions where both models agree are **identical**.

Per prompt a ``prompts/<index>.npz`` (features, categories) and ``prompts/<index>.json`` (texts,
per-position tokens) land in ``<cache_dir>/token_router/labels/``, so an interrupted run resumes;
``manifest.json`` records the prompts, settings, model hashes, counts and the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from triage.token_router.decode import ModelStream, prompt_ids
from triage.token_router.engine import teacher_forced, token_embeddings
from triage.token_router.features import DEFAULT_TOP_K, FEATURE_VERSION, router_features
from triage.token_router.gsm8k import Problem, extract_answer, messages_for, same_answer

IDENTICAL, NEUTRAL, DIVERGENT, UNRESOLVED = 0, 1, 2, -1
CATEGORY_NAMES = {IDENTICAL: "identical", NEUTRAL: "neutral", DIVERGENT: "divergent", UNRESOLVED: "unresolved"}


def labels_dir() -> Path:
    from triage.settings import get_settings

    return Path(get_settings().cache_dir) / "token_router" / "labels"


@dataclass(frozen=True)
class LabelSettings:
    max_new_tokens: int = 160
    cont_tokens: int = 96
    merge_window: int = 4
    max_continuations: int = 10  # per prompt, spread evenly over the differing positions; the rest stay unresolved
    top_k: int = DEFAULT_TOP_K


def _rejoins(cont: Sequence[int], ref_after: Sequence[int], window: int) -> bool:
    if len(cont) < window:
        return False
    tail = list(cont[-window:])
    return any(list(ref_after[i:i + window]) == tail for i in range(len(ref_after) - window + 1))


def _continue(large: ModelStream, prefix: list[int], first: int, ref: list[int], ref_after: list[int],
              eos: frozenset[int], s: LabelSettings, decode_text: Callable[[list[int]], str],
              ref_answer: float | None) -> tuple[int, int]:
    """Category of one differing position, and the large-model tokens it cost. ``prefix``: prompt +
    reference tokens before the position; the large model's stream is branched there."""
    branch = large.branch(len(prefix))
    cont = [first]
    steps = 0
    while len(cont) <= s.cont_tokens:
        if cont[-1] in eos:
            answer = extract_answer(decode_text(ref + cont))
            return (NEUTRAL if same_answer(answer, ref_answer) else DIVERGENT), steps
        if _rejoins(cont, ref_after, s.merge_window):
            return NEUTRAL, steps
        branch.advance(prefix + cont)
        cont.append(branch.greedy())
        steps += 1
    return UNRESOLVED, steps


def label_problem(pair: Any, problem: Problem, s: LabelSettings) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features (n, d), categories (n,) and a JSON record for one prompt."""
    t0 = time.perf_counter()
    tok = pair.tokenizer
    eos = pair.eos_ids
    decode_text = lambda ids: tok.decode([t for t in ids if t not in eos], skip_special_tokens=True)  # noqa: E731
    ids = prompt_ids(pair, messages_for(problem.question))
    n_prompt = len(ids)
    large = ModelStream(pair.large)
    ref: list[int] = []
    while len(ref) < s.max_new_tokens:
        large.advance(ids)
        t = large.greedy()
        ids.append(t)
        ref.append(t)
        if t in eos:
            break
    ref_text = decode_text(ref)
    ref_answer = extract_answer(ref_text)
    # Teacher forcing: one forward of the small model over prompt + reference path (torch tensors on
    # transformers, numpy arrays on ONNX); row j is the state before the reference's token j.
    hidden, logits = teacher_forced(pair.small, ids[:-1], n_prompt - 1)
    s_tok_list = [int(x) for x in logits.argmax(-1)]
    feats = router_features(hidden, logits, token_embeddings(pair.small, s_tok_list), s.top_k)
    cats = np.zeros(len(ref), dtype=np.int8)
    differing = [j for j, (st, lt) in enumerate(zip(s_tok_list, ref, strict=True)) if st != lt]
    cats[differing] = UNRESOLVED
    if len(differing) > s.max_continuations:
        picks = np.linspace(0, len(differing) - 1, s.max_continuations).round().astype(int)
        differing = [differing[i] for i in sorted(set(picks.tolist()))]
    cont_cost = 0
    for j in differing:
        cats[j], cost = _continue(large, ids[:n_prompt + j], s_tok_list[j], ref[:j], ref[j + 1:], eos, s,
                                  decode_text, ref_answer)
        cont_cost += cost
    record = {
        "index": problem.index,
        "question": problem.question,
        "gold_answer": problem.answer,
        "large_text": ref_text,
        "large_answer": ref_answer,
        "large_correct": same_answer(ref_answer, problem.answer),
        "tokens": len(ref),
        "large_tokens": ref,
        "small_tokens": s_tok_list,
        "categories": [int(c) for c in cats],
        "continuation_tokens": cont_cost,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return feats, cats, record


def _same_features(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    keys = ("feature_version", "top_k", "max_new_tokens", "engine")
    return a is not None and all(a.get(k) == b.get(k) for k in keys)


def _sha256(path: Path) -> str:
    from triage.probes.encoder.runtime import file_sha256

    return file_sha256(path)


def run_labels(pair: Any, problems: Sequence[Problem], s: LabelSettings, *, out_dir: Path | None = None,
               command: str = "", source: str = "", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Label ``problems`` (resuming: prompts already in ``out_dir/prompts`` are kept). Returns the manifest."""
    out = Path(out_dir or labels_dir())
    (out / "prompts").mkdir(parents=True, exist_ok=True)
    # The engine is part of the features: int4 ONNX and fp32 hidden states differ, so rows of one never
    # resume or train a head for the other.
    settings_json = {**s.__dict__, "feature_version": FEATURE_VERSION, "engine": pair.engine}
    for p in problems:
        npz, js = out / "prompts" / f"{p.index}.npz", out / "prompts" / f"{p.index}.json"
        if npz.is_file() and js.is_file() and _same_features(json.loads(js.read_text()).get("settings"), settings_json):
            continue  # already labelled (continuation settings may differ: they are recorded per prompt)
        feats, cats, record = label_problem(pair, p, s)
        record["settings"] = settings_json
        np.savez(npz, features=feats, categories=cats)
        js.write_text(json.dumps(record))
        if progress:
            counts = {CATEGORY_NAMES[c]: int((cats == c).sum()) for c in CATEGORY_NAMES}
            progress(f"prompt {p.index}: {record['tokens']} tokens, {counts}, {record['seconds']} s")
    manifest = collect(out, [p.index for p in problems], command=command, source=source, pair=pair, settings=settings_json)
    return manifest


def collect(out: Path, indices: Sequence[int], *, command: str, source: str, pair: Any,
            settings: dict[str, Any], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stack per-prompt files into ``features.npy``/``categories.npy``/``groups.npy`` + ``manifest.json``.

    ``run``: this labelling run's record, appended to the ``runs`` of the manifest it replaces - a
    label set grows over resumed runs, and the manifest keeps every one, not only the last command.
    """
    feats, cats, groups, prompts = [], [], [], []
    for i in indices:
        data = np.load(out / "prompts" / f"{i}.npz")
        rec = json.loads((out / "prompts" / f"{i}.json").read_text())
        feats.append(data["features"])
        cats.append(data["categories"])
        groups.append(np.full(len(data["categories"]), i, dtype=np.int32))
        prompts.append({k: rec.get(k) for k in ("index", "tokens", "large_answer", "gold_answer", "large_correct",
                                                "continuation_tokens", "seconds", "settings")})
    X, y, g = np.concatenate(feats), np.concatenate(cats), np.concatenate(groups)
    np.save(out / "features.npy", X)
    np.save(out / "categories.npy", y)
    np.save(out / "groups.npy", g)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "source": source,
        "prompt_indices": list(indices),
        "small_model": {"name": pair.small.name, "sha256": pair.small.sha256},
        "large_model": {"name": pair.large.name, "sha256": pair.large.sha256},
        "settings": settings,
        "engine": settings.get("engine"),
        "positions": int(len(y)),
        "feature_dim": int(X.shape[1]),
        "counts": {CATEGORY_NAMES[c]: int((y == c).sum()) for c in CATEGORY_NAMES},
        "prompts": prompts,
        "files": {n: _sha256(out / n) for n in ("features.npy", "categories.npy", "groups.npy")},
    }
    if run is not None:
        manifest["runs"] = [*_previous_runs(out / "manifest.json"), {**run, "finished_at": manifest["created_at"]}]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _previous_runs(path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(path.read_text()).get("runs", []))
    except (OSError, ValueError):
        return []


def load_labels(folder: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """features, categories, groups (prompt index per row), manifest."""
    out = Path(folder or labels_dir())
    mpath = out / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"no label set at {out}; run `triage token-router label` first")
    manifest = json.loads(mpath.read_text())
    for name, sha in manifest["files"].items():
        if _sha256(out / name) != sha:
            raise ValueError(f"{out / name}: sha256 differs from manifest.json; re-run `triage token-router label`")
    return np.load(out / "features.npy"), np.load(out / "categories.npy"), np.load(out / "groups.npy"), manifest
