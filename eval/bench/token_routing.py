"""Benchmark: token-level small/large routing on a fixed slice of GSM8K test.

Methods (one harness, greedy decoding, the same prompt): small-only, large-only, entropy-threshold
(tau from the router head card: it flags the same share of training positions as the router),
speculative-thinking (paragraph-level hand-off on reflection cues) and token-router (the trained
ONNX head). Pair: Qwen2.5-Coder-0.5B-Instruct / Qwen2.5-Coder-1.5B-Instruct (fp32, transformers, CPU).

Slice: lines ``start .. start+n-1`` of ``<data_dir>/gsm8k/test.jsonl`` (default: the first 10),
generations capped at ``--max-new-tokens`` (default 256). Questions run in order and, for each
question, every method runs back to back, so slow phases of the shared CPU hit all methods alike.
Per-(method, question) results are appended to ``<cache_dir>/token_router/bench_runs.jsonl`` and
reused on the next run with the same settings, so an interrupted run resumes.

Per method: ``accuracy``, ``large_token_fraction`` (tokens written by the large model / all),
``mean_activated_params_per_token`` (small params for every token the small model proposed + large
params for every token the large model wrote, over generated tokens - R2R's measure),
``wall_clock_per_question_s``, ``tokens_per_s``, and also process CPU seconds per question (less
sensitive to neighbours on shared cores), large-model forwards (hand-offs) and the tokens the large
model processed per generated token (catch-up included).

    python eval/bench/token_routing.py --json [--n 10] [--start 0] [--max-new-tokens 256] [--methods a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

METHODS = ("small-only", "large-only", "entropy-threshold", "speculative-thinking", "token-router")
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


def _aggregate(rows: list[dict[str, Any]], small_params: int, large_params: int) -> dict[str, Any]:
    n = len(rows)
    tokens = sum(r["tokens"] for r in rows)
    large = sum(r["large_tokens"] for r in rows)
    proposals = sum(r["small_proposals"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    return {
        "questions": n,
        "accuracy": round(sum(r["correct"] for r in rows) / n, 4) if n else None,
        "large_token_fraction": round(large / tokens, 4) if tokens else None,
        "mean_activated_params_per_token": round((proposals * small_params + large * large_params) / tokens)
        if tokens else None,
        "wall_clock_per_question_s": round(wall / n, 2) if n else None,
        "tokens_per_s": round(tokens / wall, 3) if wall else None,
        "cpu_s_per_question": round(cpu / n, 2) if n else None,
        "mean_tokens_per_question": round(tokens / n, 1) if n else None,
        "large_forwards_per_question": round(sum(r["large_forwards"] for r in rows) / n, 2) if n else None,
        "large_positions_per_token": round(sum(r["large_positions"] for r in rows) / tokens, 3) if tokens else None,
        "truncated": sum(1 for r in rows if r["finish_reason"] == "length"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="Questions in the slice.")
    ap.add_argument("--start", type=int, default=0, help="First line of gsm8k/test.jsonl (0-based).")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--head", type=Path, default=None, help="Router head folder (default: the cache's).")
    ap.add_argument("--threshold", type=float, default=None, help="Override the head card's threshold.")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="Stop starting new questions after this long; figures cover the completed questions.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--json", action="store_true", help="Print the result object as JSON.")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not 1 <= args.max_new_tokens <= 256 or args.n < 1:
        print(f"error: bad arguments (unknown methods {unknown}, max-new-tokens 1..256, n >= 1)", file=sys.stderr)
        return 2

    import torch

    from triage.token_router.decode import decode
    from triage.token_router.gsm8k import SYSTEM_PROMPT, extract_answer, load_problems, messages_for, same_answer
    from triage.token_router.pair import load_pair
    from triage.token_router.runner import controller_for
    from triage.settings import get_settings

    data = Path(get_settings().data_dir) / "gsm8k" / "test.jsonl"
    problems = load_problems(data, args.start, args.n)
    pair = load_pair()
    small_params, large_params = pair.params()
    controllers = {m: controller_for(m, head_dir=args.head, threshold=args.threshold) for m in methods}
    if "token-router" in controllers:
        controllers["token-router"].head.check_small_model(  # type: ignore[attr-defined]
            pair.small.name, pair.small.hidden_size, pair.small.sha256)
    settings = {"max_new_tokens": args.max_new_tokens, "prompt": SYSTEM_PROMPT,
                "small": pair.small.sha256[:12], "large": pair.large.sha256[:12]}
    runs_path = _runs_file()
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    runs = _load_runs(runs_path)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    for p in problems:
        if args.max_minutes is not None and time.perf_counter() - t_start > 60 * args.max_minutes:
            print(f"stopping after {args.max_minutes} min (--max-minutes)", file=sys.stderr)
            break
        for m in methods:
            params = controllers[m].params()
            key = json.dumps({"m": m, "i": p.index, "s": settings, "p": params}, sort_keys=True)
            if key in runs:
                continue
            c0 = time.process_time()
            r = decode(pair, messages_for(p.question), controllers[m], max_new_tokens=args.max_new_tokens)
            answer = extract_answer(r.text)
            row = {"key": key, "method": m, "index": p.index, "correct": same_answer(answer, p.answer),
                   "answer": answer, "gold": p.answer, "tokens": r.n_tokens, "large_tokens": r.n_large,
                   "small_proposals": r.small_proposals, "wall_s": r.wall_s, "cpu_s": time.process_time() - c0,
                   "large_forwards": r.large_forwards, "large_positions": r.large_positions,
                   "finish_reason": r.finish_reason, "text": r.text}
            runs[key] = row
            with runs_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"[{m}] q{p.index}: correct={row['correct']} tokens={r.n_tokens} large={r.n_large} "
                  f"wall={r.wall_s:.1f}s", file=sys.stderr, flush=True)

    result: dict[str, Any] = {"methods": {}, "slice": {
        "file": "gsm8k/test.jsonl", "start": args.start, "count": args.n,
        "indices": [p.index for p in problems], "max_new_tokens": args.max_new_tokens, "decoding": "greedy",
        "system_prompt": SYSTEM_PROMPT}}
    def key_of(m: str, index: int) -> str:
        return json.dumps({"m": m, "i": index, "s": settings, "p": controllers[m].params()}, sort_keys=True)

    # Only questions every method finished count (a run stopped early still compares like with like).
    done = [p for p in problems if all(key_of(m, p.index) in runs for m in methods)]
    result["slice"]["completed_indices"] = [p.index for p in done]
    for m in methods:
        rows = [runs[key_of(m, p.index)] for p in done]
        result["methods"][m] = {**_aggregate(rows, small_params, large_params), "params": controllers[m].params()}
    large_acc = result["methods"].get("large-only", {}).get("accuracy")
    result["models"] = {"small": {"name": pair.small.name, "params": small_params, "sha256": pair.small.sha256},
                        "large": {"name": pair.large.name, "params": large_params, "sha256": pair.large.sha256}}
    result["environment"] = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                             "nice": os.nice(0), "loadavg_start": [round(x, 2) for x in load_start],
                             "loadavg_end": [round(x, 2) for x in os.getloadavg()], "dtype": "float32"}
    if large_acc is not None and "token-router" in result["methods"]:
        tr = result["methods"]["token-router"]
        lo = result["methods"]["large-only"]
        result["goal"] = {
            "accuracy_within_2_points_of_large": tr["accuracy"] >= large_acc - 0.02,
            "large_token_fraction_at_most_0.2": tr["large_token_fraction"] <= 0.2,
            "faster_than_large_only": tr["wall_clock_per_question_s"] < lo["wall_clock_per_question_s"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
