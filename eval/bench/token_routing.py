"""Benchmark: token-level small/large routing on a fixed slice of GSM8K test (issue #17).

Methods (one harness, greedy decoding, the same prompt): small-only, large-only, speculative-thinking
(paragraph-level hand-off on reflection cues), and two sweeps over the large-token share: the
token router (the trained ONNX head) and the entropy threshold, each at the head card's
``operating_points`` (the threshold / tau that flag a share ``f`` of the label set's positions), so
the two curves are compared at equal large-token share. Pair: Qwen2.5-Coder-0.5B-Instruct /
Qwen2.5-Coder-1.5B-Instruct, int4 ONNX (onnxruntime-genai, CPU).

Slice: lines ``start .. start+n-1`` of ``<data_dir>/gsm8k/test.jsonl`` (default: the first 100),
generations capped at ``--max-new-tokens`` (default 256). Questions run in order and, for each
question, every method runs back to back, so slow phases of the shared CPU hit all methods alike.
Per-(method, question) results are appended to ``<cache_dir>/token_router/bench_runs.jsonl`` and
reused on the next run with the same settings, so an interrupted run resumes.

Per method: ``accuracy``, ``large_token_fraction`` (tokens written by the large model / all),
``mean_activated_params_per_token`` (small params for every token the small model proposed + large
params for every token the large model wrote, over generated tokens - R2R's measure),
``wall_clock_per_question_s``, ``tokens_per_s``, and also process CPU seconds per question (less
sensitive to neighbours on shared cores), large-model forwards (hand-offs) and the tokens the large
model processed per generated token (catch-up included). Accuracy has a 95% bootstrap interval
over questions, and the paired difference to large-only has one too. The cost floor of token
routing on a CPU is the small model's decode plus the large model's prefill of every token, the
prompt's included (per-token rates measured once per run: ``floor``; each configuration's floor
per question from its own prompt and answer lengths); the speedups are reported against large-only
and against that floor. ``diagnosis`` says where each configuration loses against large-only. A
PNG plots accuracy against large-token share for both sweeps.

    python eval/bench/token_routing.py --json [--n 100] [--start 0] [--fractions 0.05,0.1,0.2,0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from triage.eval.bench.token_routing_report import (
    SWEPT,
    aggregate,
    bootstrap,
    diagnosis,
    floor_and_goal,
    plot,
)

METHODS = ("small-only", "large-only", "speculative-thinking", "entropy-threshold", "token-router")
RESULTS = Path(__file__).resolve().parent / "results" / "token_routing.json"


def _runs_file() -> Path:
    from triage.settings import get_settings

    return Path(get_settings().cache_dir) / "token_router" / "bench_runs.jsonl"


def _load_runs(path: Path) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[row["key"]] = row
    return runs


def _configs(methods: list[str], fractions: list[float], head: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Label -> controller: one per fixed method, one per (swept method, share) from the head card."""
    from triage.token_router.runner import controller_for

    out: dict[str, Any] = {}
    points = head.operating_points if head is not None else {}
    for m in methods:
        if m not in SWEPT:
            out[m] = controller_for(m)
            continue
        if not points or args.threshold is not None:
            out[m] = controller_for(m, head_dir=args.head, threshold=args.threshold)
            continue
        for f in fractions:
            op = points.get(f"{f:g}")
            if op is None:
                raise SystemExit(f"error: the head card has no operating point for share {f:g} "
                                 f"(it has {', '.join(points)}); retrain with `triage token-router train`")
            if m == "token-router":
                out[f"{m}@{f:g}"] = controller_for(m, head_dir=args.head, threshold=op["threshold"])
            else:
                out[f"{m}@{f:g}"] = controller_for(m, tau=op["entropy_tau"])
    return out


def _prefill_ms_per_token(lm: Any, ids: list[int]) -> float:
    from triage.token_router.engine import teacher_forced

    teacher_forced(lm, ids[:16], 15)  # warm-up
    t0 = time.perf_counter()
    teacher_forced(lm, ids, len(ids) - 1)
    return 1000 * (time.perf_counter() - t0) / len(ids)


def _decode_ms_per_token(pair: Any, method: str, messages: list[dict[str, str]], n: int = 48) -> float:
    """Greedy decode cost per generated token: (wall of n tokens - wall of 1 token) / (n - 1)."""
    from triage.token_router.decode import decode
    from triage.token_router.runner import controller_for

    controller = controller_for(method)
    decode(pair, messages, controller, max_new_tokens=4)  # warm-up
    one = decode(pair, messages, controller, max_new_tokens=1)
    many = decode(pair, messages, controller, max_new_tokens=n)
    return 1000 * (many.wall_s - one.wall_s) / max(1, many.n_tokens - 1)


def _measure_rates(pair: Any, problems: list[Any], messages_for: Any) -> dict[str, float]:
    """Per-token prefill and decode costs of both models on this machine, measured once per run."""
    ids = [t for p in problems[:4] for t in pair.small.encode_chat(messages_for(p.question))[0]][:200]
    messages = messages_for(problems[0].question)
    return {"large_prefill_ms_per_token": round(_prefill_ms_per_token(pair.large, ids), 2),
            "small_prefill_ms_per_token": round(_prefill_ms_per_token(pair.small, ids), 2),
            "large_decode_ms_per_token": round(_decode_ms_per_token(pair, "large-only", messages), 2),
            "small_decode_ms_per_token": round(_decode_ms_per_token(pair, "small-only", messages), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="Questions in the slice.")
    ap.add_argument("--start", type=int, default=0, help="First line of gsm8k/test.jsonl (0-based).")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--fractions", default="0.05,0.1,0.2,0.3",
                    help="Large-token shares of the two sweeps (operating points of the head card).")
    ap.add_argument("--head", type=Path, default=None, help="Router head folder (default: the cache's).")
    ap.add_argument("--threshold", type=float, default=None, help="One router threshold instead of the sweep.")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="Stop starting new questions after this long; figures cover the completed questions.")
    ap.add_argument("--override-questions", type=int, default=30,
                    help="Hand-off precision: rows recorded before decodes counted overrides are decoded again "
                         "on this many of the completed questions (0: skip).")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--json", action="store_true", help="Print the result object as JSON.")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        fractions = []
    if unknown or not 1 <= args.max_new_tokens <= 256 or args.n < 1 or not fractions:
        print(f"error: bad arguments (unknown methods {unknown}, max-new-tokens 1..256, n >= 1, "
              "--fractions a comma list of numbers)", file=sys.stderr)
        return 2

    from triage.settings import get_settings
    from triage.token_router.decode import decode
    from triage.token_router.gsm8k import (
        SYSTEM_PROMPT,
        extract_answer,
        load_problems,
        messages_for,
        same_answer,
    )
    from triage.token_router.head import head_dir, read_card
    from triage.token_router.pair import load_pair
    from triage.token_router.runner import check_head_fits

    data = Path(get_settings().data_dir) / "gsm8k" / "test.jsonl"
    problems = load_problems(data, args.start, args.n)
    pair = load_pair()
    small_params, large_params = pair.params()
    card_dir = Path(args.head or head_dir())
    card = read_card(card_dir) if (card_dir / "card.json").is_file() else None
    controllers = _configs(methods, fractions, card, args)
    for c in controllers.values():
        check_head_fits(c, pair)
    settings = {"max_new_tokens": args.max_new_tokens, "prompt": SYSTEM_PROMPT,
                "small": pair.small.sha256[:12], "large": pair.large.sha256[:12], "engine": pair.engine}
    runs_path = _runs_file()
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    runs = _load_runs(runs_path)
    prompt_tokens = {p.index: len(pair.small.encode_chat(messages_for(p.question))[0]) for p in problems}
    floor = _measure_rates(pair, problems, messages_for)
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    def key_of(label: str, index: int) -> str:
        m = label.split("@")[0]
        return json.dumps({"m": m, "i": index, "s": settings, "p": controllers[label].params()}, sort_keys=True)

    for p in problems:
        if args.max_minutes is not None and time.perf_counter() - t_start > 60 * args.max_minutes:
            print(f"stopping after {args.max_minutes} min (--max-minutes)", file=sys.stderr)
            break
        for label, controller in controllers.items():
            key = key_of(label, p.index)
            if key in runs:
                continue
            c0 = time.process_time()
            r = decode(pair, messages_for(p.question), controller, max_new_tokens=args.max_new_tokens)
            answer = extract_answer(r.text)
            row = {"key": key, "method": label.split("@")[0], "index": p.index, "correct": same_answer(answer, p.answer),
                   "answer": answer, "gold": p.answer, "tokens": r.n_tokens, "large_tokens": r.n_large,
                   "small_proposals": r.small_proposals, "wall_s": r.wall_s, "cpu_s": time.process_time() - c0,
                   "large_forwards": r.large_forwards, "large_positions": r.large_positions,
                   "finish_reason": r.finish_reason, "text": r.text, "large_overrides": r.large_overrides,
                   "loadavg_1min": round(os.getloadavg()[0], 2)}  # what the decode ran beside (wall_s)
            runs[key] = row
            with runs_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"[{label}] q{p.index}: correct={row['correct']} tokens={r.n_tokens} large={r.n_large} "
                  f"wall={r.wall_s:.1f}s", file=sys.stderr, flush=True)

    # Only questions every configuration finished count (a run stopped early compares like with like).
    done = [p for p in problems if all(key_of(label, p.index) in runs for label in controllers)]
    result: dict[str, Any] = {"methods": {}, "slice": {
        "file": "gsm8k/test.jsonl", "start": args.start, "count": args.n, "completed": len(done),
        "completed_indices": [p.index for p in done], "max_new_tokens": args.max_new_tokens, "decoding": "greedy",
        "system_prompt": SYSTEM_PROMPT}}
    labels = list(controllers)
    correct = [[bool(runs[key_of(label, p.index)]["correct"]) for p in done] for label in labels]
    cis = bootstrap(correct)
    base = labels.index("large-only") if "large-only" in labels else None
    deltas = bootstrap([[float(a) - float(b) for a, b in zip(c, correct[base], strict=True)] for c in correct]) \
        if base is not None and done else []
    for i, label in enumerate(labels):
        rows = [runs[key_of(label, p.index)] for p in done]
        entry = {**aggregate(rows, small_params, large_params), "params": controllers[label].params()}
        entry["accuracy_ci"] = list(cis[i]) if cis else None
        if deltas:
            entry["accuracy_minus_large_only_ci"] = list(deltas[i])
        if "@" in label:
            entry["target_large_fraction"] = float(label.split("@")[1])
        result["methods"][label] = entry
    # Router against the entropy threshold at the same target share, paired over questions.
    for label in labels:
        twin = label.replace("token-router@", "entropy-threshold@")
        if label.startswith("token-router@") and twin in labels and done:
            a, b = correct[labels.index(label)], correct[labels.index(twin)]
            ci = bootstrap([[float(x) - float(y) for x, y in zip(a, b, strict=True)]])[0]
            result["methods"][label]["accuracy_minus_entropy_same_target"] = {
                "entropy": twin, "difference": round((sum(a) - sum(b)) / len(a), 4), "ci": list(ci)}
    floor_and_goal(result, floor, {label: [(prompt_tokens[p.index], runs[key_of(label, p.index)]["tokens"])
                                            for p in done] for label in labels})
    overrides = _count_overrides(pair, done, controllers, runs, key_of, args, messages_for)
    result["diagnosis"] = diagnosis({label: [runs[key_of(label, p.index)] for p in done] for label in labels}, overrides)
    result["models"] = {"small": {"name": pair.small.name, "params": small_params, "sha256": pair.small.sha256},
                        "large": {"name": pair.large.name, "params": large_params, "sha256": pair.large.sha256}}
    result["head"] = {"version": card.version, "target": card.target, "metrics": card.metrics, "training_data": {
        k: card.training_data.get(k) for k in ("source", "counts", "labels_command")}} if card else None
    # The decodes may come from the cache (earlier invocations): their own load is in each run row; the
    # load of this invocation says only how busy the machine was while it ran (or aggregated).
    run_loads = [row["loadavg_1min"] for label in labels for p in done
                 if (row := runs[key_of(label, p.index)]).get("loadavg_1min") is not None]
    result["environment"] = {"engine": pair.engine, "cpu_count": os.cpu_count(), "nice": os.nice(0),
                             "decodes_loadavg_1min": {"runs": len(run_loads), "of": len(labels) * len(done),
                                                      "min": min(run_loads, default=None),
                                                      "median": statistics.median(run_loads) if run_loads else None,
                                                      "max": max(run_loads, default=None)},
                             "this_invocation_loadavg_start": [round(x, 2) for x in load_start],
                             "this_invocation_loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if done:
        plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _count_overrides(pair: Any, done: list[Any], controllers: dict[str, Any], runs: dict[str, dict[str, Any]],
                     key_of: Any, args: argparse.Namespace, messages_for: Any) -> dict[str, int]:
    """Run key -> large-model overrides, for rows recorded before decodes counted them: such rows of
    the swept configurations are decoded again on the first ``--override-questions`` completed
    questions (greedy, so the same tokens; checked) into ``bench_overrides.jsonl`` beside the runs."""
    from triage.token_router.decode import decode

    path = _runs_file().with_name("bench_overrides.jsonl")
    known = {row["key"]: row["large_overrides"] for row in _load_runs(path).values()}
    for p in done[: max(0, args.override_questions)]:
        for label, controller in controllers.items():
            key = key_of(label, p.index)
            if label.split("@")[0] not in SWEPT or "large_overrides" in runs[key] or key in known:
                continue
            r = decode(pair, messages_for(p.question), controller, max_new_tokens=args.max_new_tokens)
            if r.text != runs[key]["text"]:
                raise SystemExit(f"error: {label} q{p.index} decoded another text than its recorded run; "
                                 "the recorded runs do not match these models (delete the runs file)")
            known[key] = r.large_overrides
            with path.open("a") as fh:
                fh.write(json.dumps({"key": key, "large_overrides": r.large_overrides}) + "\n")
            print(f"[{label}] q{p.index}: overrides={r.large_overrides}/{r.n_large}", file=sys.stderr, flush=True)
    return known


if __name__ == "__main__":
    sys.exit(main())
