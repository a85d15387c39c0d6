"""A GSM8K replay set for LM cascades: the local pair's answers plus the small model's token logprobs.

    python -m triage.eval.cascade_data --questions 300 --out eval/data/gsm8k_local_pair.jsonl

For each of the first N GSM8K test questions both local models (int4 ONNX engine, greedy, the
``local_pair.yaml`` prompt, :data:`MAX_NEW_TOKENS`) answer once, and one replay record holds:

* both candidates' outcome: score (exact match on the final number, :mod:`triage.token_router.gsm8k`),
  prompt / completion tokens, wall time, truncation, the answer text and number, and a cost;
* for the small model, per generated token (end-of-turn excluded), rounded to 3 decimals:
  ``token_logprobs`` (log p of the chosen token), ``token_entropies`` (nats, exact) and
  ``token_top1_logprobs`` - what :mod:`triage.probes.features.output_uncertainty` reads
  (:func:`outcome_tokens`); plus two repeat-free consistency signals: ``answer_start`` (token
  index of the last "answer is" marker, null without one) and ``last_result_agrees`` (the stated
  answer equals the last ``= N`` result of the working).

Cost: local models have no price (``policies/pricing.py`` prices them at 0), so a notional one
proportional to parameter count is used (:func:`local_cost`): compute per token scales with the
parameters, and prompt tokens cost a quarter of generated ones (a batched prefill is cheaper per
token than decoding). Only cost *ratios* matter to the evaluation.

Resumable: records are appended as they are made and ids already in the file are skipped. The
manifest (prompt, token cap, engine, model sha256s, cost rule, elapsed seconds, commands) is the
sidecar ``<out>.json`` - a replay file holds records only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from triage.replay.schema import Outcome, ReplayRecord
from triage.token_router.gsm8k import (
    Problem,
    extract_answer,
    load_problems,
    same_answer,
)

log = structlog.get_logger(__name__)

SMALL = "qwen2.5-coder-0.5b"
LARGE = "qwen2.5-coder-1.5b"
MAX_NEW_TOKENS = 192
DEFAULT_OUT = Path("eval/data/gsm8k_local_pair.jsonl")
#: Published parameter counts (Qwen2.5 model cards: 0.49B and 1.54B; SmolLM2-135M for tests).
PARAMS_B = {"qwen2.5-coder-0.5b": 0.49, "qwen2.5-coder-1.5b": 1.54, "smollm2-135m": 0.135}
#: Notional USD per generated token per billion parameters; a prompt token costs a quarter.
USD_PER_OUTPUT_TOKEN_PER_B = 1e-7
PROMPT_TOKEN_WEIGHT = 0.25
TOKEN_FIELDS = ("token_logprobs", "token_entropies", "token_top1_logprobs")
_MARKER = re.compile(r"answer is", re.IGNORECASE)
_STATED = re.compile(r"answer is|\\boxed\{", re.IGNORECASE)
_RESULT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")


def local_cost(params_b: float, prompt_tokens: int, completion_tokens: int) -> float:
    """Notional USD of one call of a local model of ``params_b`` billion parameters (module docstring)."""
    per_out = USD_PER_OUTPUT_TOKEN_PER_B * params_b
    return per_out * (completion_tokens + PROMPT_TOKEN_WEIGHT * prompt_tokens)


def system_prompt() -> str:
    """The prompt of the local-pair policy (both strategies share it)."""
    from triage.policies.loader import EXAMPLES_DIR, load_policy

    return load_policy(EXAMPLES_DIR / "local_pair.yaml").strategies["small"].system_prompt or ""


def messages_for(prompt: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompt}, {"role": "user", "content": question}]


def answer_start(token_texts: Sequence[str]) -> int | None:
    """Index of the token where the last "answer is" marker starts (None without a marker)."""
    joined = "".join(token_texts)
    found = list(_MARKER.finditer(joined))
    if not found:
        return None
    at, offset = found[-1].start(), 0
    for i, piece in enumerate(token_texts):
        if offset + len(piece) > at:
            return i
        offset += len(piece)
    return None


def last_result_agrees(text: str, answer: float | None) -> bool | None:
    """Whether the stated answer ("answer is N" or ``\\boxed{N}``) is the last ``= N`` of the working
    before it (None without a stated answer or a result): a model whose last computation disagrees
    with its answer contradicts itself."""
    cuts = [m.start() for m in _STATED.finditer(text)]
    if answer is None or not cuts:
        return None  # no stated answer: the fallback "last number" would agree with itself
    results = _RESULT.findall(text[: cuts[-1]])
    if not results:
        return None
    value = extract_answer(results[-1])
    return same_answer(value, answer)


def _gold(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def build_outcome(params_b: float, result: Any, reference: float, *, with_tokens: bool) -> Outcome:
    """One candidate's outcome from a :class:`~triage.lm.types.GenerationResult`."""
    number = extract_answer(result.text)
    extra: dict[str, Any] = {"answer": number, "text": result.text}
    if with_tokens:
        toks = result.tokens
        extra["token_logprobs"] = [round(t.logprob, 3) for t in toks]
        extra["token_entropies"] = [round(t.entropy, 3) for t in toks]
        extra["token_top1_logprobs"] = [round(t.top1_logprob, 3) for t in toks]
        extra["answer_start"] = answer_start([t.token for t in toks])
        extra["last_result_agrees"] = last_result_agrees(result.text, number)
    return Outcome(
        score=1.0 if same_answer(number, reference) else 0.0,
        cost_usd=local_cost(params_b, result.prompt_tokens, result.completion_tokens),
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        latency_s=round(result.seconds, 3), truncated=result.truncated, **extra,
    )


def build_record(problem: Problem, small: tuple[str, Any], large: tuple[str, Any], *,
                 params_b: dict[str, float] | None = None) -> ReplayRecord:
    """The replay record of one question: ``small``/``large`` are (model name, generation result);
    ``params_b`` (default :data:`PARAMS_B`) prices them."""
    params = PARAMS_B if params_b is None else params_b
    return ReplayRecord(
        id=f"gsm8k-test/{problem.index}", prompt=problem.question, task="gsm8k", gold=_gold(problem.answer),
        outcomes={small[0]: build_outcome(params[small[0]], small[1], problem.answer, with_tokens=True),
                  large[0]: build_outcome(params[large[0]], large[1], problem.answer, with_tokens=False)},
        cascade_source=small[0],
    )


def outcome_tokens(outcome: Outcome) -> list[Any]:
    """The stored per-token arrays of an outcome as :class:`TokenUncertainty` (``ValueError``
    when the outcome has none or they disagree in length)."""
    from triage.probes.features.output_uncertainty import TokenUncertainty

    extra = outcome.model_extra or {}
    arrays = [extra.get(f) for f in TOKEN_FIELDS]
    if any(a is None for a in arrays):
        raise ValueError(f"outcome has no token arrays ({', '.join(TOKEN_FIELDS)})")
    if len({len(a) for a in arrays}) != 1:
        raise ValueError("token arrays of an outcome differ in length")
    return [TokenUncertainty(float(lp), float(e), math.exp(float(t1))) for lp, e, t1 in zip(*arrays, strict=True)]


# -- the run --------------------------------------------------------------------------------------

def _done_ids(out: Path) -> set[str]:
    """Ids already written; a torn last line (a run killed mid-write) is cut off first."""
    if not out.is_file():
        return set()
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    good: list[str] = []
    for line in lines:
        try:
            good.append(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("cascade_data.torn_line_dropped", line=len(good) + 1)
            out.write_text("".join(lines[: len(good)]), encoding="utf-8")
            break
    return set(good)


def _manifest(out: Path, models: dict[str, Any], prompt: str, max_new: int) -> dict[str, Any]:
    from triage.lm.models import engine_tag

    fixed = {
        "prompt": prompt, "max_new_tokens": max_new, "decoding": "greedy (temperature 0)",
        "engine": engine_tag("onnx"),
        "models": {name: {"sha256": lm.sha256, "build": lm.card.folder.name, "params_b": PARAMS_B[name]}
                   for name, lm in models.items()},
        "source": "GSM8K test (shared/data/gsm8k/test.jsonl), questions in file order",
        "cost_rule": (f"notional: {USD_PER_OUTPUT_TOKEN_PER_B} USD per generated token per 1B parameters, "
                      f"prompt tokens weighted {PROMPT_TOKEN_WEIGHT}"),
        "cascade_source": SMALL, "token_arrays": list(TOKEN_FIELDS),
    }
    path = out.with_suffix(".json")
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for key in ("prompt", "max_new_tokens", "engine", "models"):
        if key in old and old[key] != fixed[key]:
            raise SystemExit(f"{path}: {key} differs from this run's; write to another --out")
    return {**old, **fixed, "runs": old.get("runs", []), "elapsed_s": old.get("elapsed_s", 0.0)}


def _save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out.with_suffix(".json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def generate(out: Path, questions: int, *, start: int = 0, max_new: int = MAX_NEW_TOKENS,
             time_limit_s: float | None = None, command: str = "") -> dict[str, Any]:
    """Answer questions ``start .. start+questions-1`` with both models; append records to ``out``."""
    from triage.lm.models import get_local_lm
    from triage.settings import get_settings

    problems = load_problems(get_settings().data_dir / "gsm8k" / "test.jsonl", start, questions)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_ids(out)
    todo = [p for p in problems if f"gsm8k-test/{p.index}" not in done]
    prompt = system_prompt()
    models = {name: get_local_lm(name, engine="onnx") for name in (SMALL, LARGE)}
    manifest = _manifest(out, models, prompt, max_new)
    run = {"command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "written": 0,
           "seconds": 0.0, "threads": get_settings().lm_onnx_threads}
    manifest["runs"].append(run)
    t_start = time.perf_counter()
    with out.open("a", encoding="utf-8") as fh:
        for p in todo:
            if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
                log.info("cascade_data.time_limit", written=run["written"])
                break
            t0 = time.perf_counter()
            msgs = messages_for(prompt, p.question)
            results = {name: lm.generate(msgs, max_tokens=max_new, temperature=0.0) for name, lm in models.items()}
            record = build_record(p, (SMALL, results[SMALL]), (LARGE, results[LARGE]))
            fh.write(record.model_dump_json(exclude_none=False) + "\n")
            fh.flush()
            run["written"] += 1
            run["seconds"] = round(time.perf_counter() - t_start, 1)
            manifest["elapsed_s"] = round(manifest["elapsed_s"] + time.perf_counter() - t0, 1)
            manifest["questions"] = len(done) + run["written"]
            _save_manifest(out, manifest)
            log.info("cascade_data.question", index=p.index, seconds=round(time.perf_counter() - t0, 1),
                     **{name: o.score for name, o in record.outcomes.items()})
    _save_manifest(out, manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triage.eval.cascade_data", description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, required=True, help="GSM8K test questions start..start+N-1")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime-genai intra-op threads")
    ap.add_argument("--time-limit-s", type=float, default=None, help="stop starting questions after this")
    args = ap.parse_args(argv)
    if args.threads:  # before the settings are first read (they are cached)
        os.environ["TRIAGE_LM_ONNX_THREADS"] = str(args.threads)
    command = "python -m triage.eval.cascade_data " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    manifest = generate(args.out, args.questions, start=args.start, max_new=args.max_new_tokens,
                        time_limit_s=args.time_limit_s, command=command)
    print(json.dumps({"questions": manifest.get("questions"), "elapsed_s": manifest["elapsed_s"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
