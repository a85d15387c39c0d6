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
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

METHODS = ("small-only", "large-only", "speculative-thinking", "entropy-threshold", "token-router")
SWEPT = ("entropy-threshold", "token-router")
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


def _bootstrap(correct: list[list[bool]], reps: int = 1000, seed: int = 0) -> list[tuple[float, float]]:
    """95% intervals of the mean of each list (paired: the same question draws for every list)."""
    import numpy as np

    arr = np.asarray(correct, dtype=float)
    if arr.size == 0:
        return []
    idx = np.random.default_rng(seed).integers(0, arr.shape[1], size=(reps, arr.shape[1]))
    means = arr[:, idx].mean(axis=2)
    return [(round(float(np.quantile(m, 0.025)), 4), round(float(np.quantile(m, 0.975)), 4)) for m in means]


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


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, marker in (("token-router", "o"), ("entropy-threshold", "s")):
        pts = sorted((v["large_token_fraction"], v["accuracy"], v["accuracy_ci"]) for k, v in result["methods"].items()
                     if k.split("@")[0] == m and v["large_token_fraction"] is not None)
        if pts:
            xs, ys, cis = zip(*pts, strict=True)
            err = [[y - c[0] for y, c in zip(ys, cis, strict=True)], [c[1] - y for y, c in zip(ys, cis, strict=True)]]
            ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3, label=m)
    for m, style in (("small-only", ":"), ("large-only", "--")):
        if m in result["methods"]:
            ax.axhline(result["methods"][m]["accuracy"], linestyle=style, color="grey", label=m)
    spec = result["methods"].get("speculative-thinking")
    if spec:
        ax.plot([spec["large_token_fraction"]], [spec["accuracy"]], "^", label="speculative-thinking")
    ax.set_xlabel("share of tokens written by the large model")
    ax.set_ylabel(f"GSM8K accuracy ({result['slice']['completed']} questions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
                   "finish_reason": r.finish_reason, "text": r.text, "large_overrides": r.large_overrides}
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
    cis = _bootstrap(correct)
    base = labels.index("large-only") if "large-only" in labels else None
    deltas = _bootstrap([[float(a) - float(b) for a, b in zip(c, correct[base], strict=True)] for c in correct]) \
        if base is not None and done else []
    for i, label in enumerate(labels):
        rows = [runs[key_of(label, p.index)] for p in done]
        entry = {**_aggregate(rows, small_params, large_params), "params": controllers[label].params()}
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
            ci = _bootstrap([[float(x) - float(y) for x, y in zip(a, b, strict=True)]])[0]
            result["methods"][label]["accuracy_minus_entropy_same_target"] = {
                "entropy": twin, "difference": round((sum(a) - sum(b)) / len(a), 4), "ci": list(ci)}
    _floor_and_goal(result, floor, {label: [(prompt_tokens[p.index], runs[key_of(label, p.index)]["tokens"])
                                            for p in done] for label in labels})
    overrides = _count_overrides(pair, done, controllers, runs, key_of, args, messages_for)
    result["diagnosis"] = _diagnosis(result, {label: [runs[key_of(label, p.index)] for p in done] for label in labels},
                                     overrides)
    result["models"] = {"small": {"name": pair.small.name, "params": small_params, "sha256": pair.small.sha256},
                        "large": {"name": pair.large.name, "params": large_params, "sha256": pair.large.sha256}}
    result["head"] = {"version": card.version, "target": card.target, "metrics": card.metrics, "training_data": {
        k: card.training_data.get(k) for k in ("source", "counts", "labels_command")}} if card else None
    result["environment"] = {"engine": pair.engine, "cpu_count": os.cpu_count(), "nice": os.nice(0),
                             "loadavg_start": [round(x, 2) for x in load_start],
                             "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if done:
        _plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _floor_and_goal(result: dict[str, Any], floor: dict[str, float],
                    lengths: dict[str, list[tuple[int, int]]]) -> None:
    """The CPU floor of token routing and the issue's goal, read off the sweeps.

    On this machine a token the large model did not write still costs it a prefill position (its KV
    cache must hold every token), so for a question with P prompt tokens and T generated ones the
    token router cannot take less than P*(small_prefill + large_prefill) + T*(small_decode +
    large_prefill), whatever it routes; large-only takes P*large_prefill + T*large_decode. Both are
    computed per question from the measured per-token rates (``floor``) and the configuration's own
    P and T, and each configuration's measured wall-clock is reported against its floor."""
    ms = result["methods"]
    large = ms.get("large-only")
    sp, lp = floor["small_prefill_ms_per_token"], floor["large_prefill_ms_per_token"]
    sd, ld = floor["small_decode_ms_per_token"], floor["large_decode_ms_per_token"]
    floor["token_routing_floor_ms_per_generated_token"] = round(sd + lp, 2)
    floor["large_only_ms_per_generated_token"] = ld
    floor["floor_speedup_bound_long_answers"] = round(ld / (sd + lp), 3)  # T >> P
    result["floor"] = floor
    for label, v in ms.items():
        pt = lengths.get(label) or []
        if not pt:
            continue
        floor_s = sum(p * (sp + lp) + t * (sd + lp) for p, t in pt) / 1000 / len(pt)
        large_model_s = sum(p * lp + t * ld for p, t in pt) / 1000 / len(pt)
        v["mean_prompt_tokens"] = round(sum(p for p, _ in pt) / len(pt), 1)
        v["floor_wall_per_question_s"] = round(floor_s, 3)
        v["wall_over_floor"] = round(v["wall_clock_per_question_s"] / floor_s, 3) if floor_s else None
        # What large-only would take for the same P and T: the most token routing could save here.
        v["floor_speedup_bound_vs_large_only"] = round(large_model_s / floor_s, 3) if floor_s else None
        if large and v["wall_clock_per_question_s"]:
            v["speedup_vs_large_only"] = round(large["wall_clock_per_question_s"] / v["wall_clock_per_question_s"], 3)
    routers = {k: v for k, v in ms.items() if k.split("@")[0] == "token-router"}
    entropy = sorted((v["large_token_fraction"], v["accuracy"]) for k, v in ms.items()
                     if k.split("@")[0] == "entropy-threshold")
    if not (large and routers):
        return
    within = {k: v for k, v in routers.items() if v["large_token_fraction"] <= 0.2}
    best = max(within.items(), key=lambda kv: kv[1]["accuracy"]) if within else None
    goal: dict[str, Any] = {"large_only_accuracy": large["accuracy"]}
    if best:
        k, v = best
        goal.update({"router": k, "router_accuracy": v["accuracy"], "router_large_token_fraction": v["large_token_fraction"],
                     "accuracy_within_2_points_of_large": v["accuracy"] >= large["accuracy"] - 0.02,
                     "faster_than_large_only": v["wall_clock_per_question_s"] < large["wall_clock_per_question_s"]})
        if len(entropy) >= 2:
            import numpy as np

            xs, ys = zip(*entropy, strict=True)
            at = float(np.interp(v["large_token_fraction"], xs, ys))
            goal.update({"entropy_accuracy_at_same_share": round(at, 4), "beats_entropy_at_same_share": v["accuracy"] > at})
    result["goal"] = goal


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


def _wilson(k: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    z, ph = 1.96, k / n
    mid, half = (ph + z * z / (2 * n)) / (1 + z * z / n), z * ((ph * (1 - ph) + z * z / (4 * n)) / n) ** 0.5 / (1 + z * z / n)
    return [round(mid - half, 4), round(mid + half, 4)]


def _diagnosis(result: dict[str, Any], rows: dict[str, list[dict[str, Any]]],
               overrides: dict[str, int]) -> dict[str, Any]:
    """Where a swept configuration stands against large-only, and why: per configuration, how its
    decode-time large share compares with the share its threshold flags on the label set (the shift
    between teacher-forced reference solutions and the model's own text), how often it gives
    large-only's answer, the questions it loses and wins against large-only, and the hand-off cost
    (large-model forwards and tokens processed per generated token). Plus the label check
    (``eval/data/token_router/verify.json``) when it is there."""
    out: dict[str, Any] = {"configurations": {}}
    large = rows.get("large-only")
    for label, rs in rows.items():
        v = result["methods"][label]
        d: dict[str, Any] = {"large_token_fraction": v["large_token_fraction"],
                             "target_large_fraction": v.get("target_large_fraction"),
                             "large_forwards_per_token": round(sum(r["large_forwards"] for r in rs)
                                                               / max(1, sum(r["tokens"] for r in rs)), 4),
                             "large_positions_per_token": v["large_positions_per_token"]}
        if label.split("@")[0] in SWEPT:
            # Hand-off precision at decode time: of the tokens handed to the large model, the share it
            # wrote differently from the small model's proposal (the rest changed nothing).
            counted = [(r.get("large_overrides", overrides.get(r["key"])), r["large_tokens"]) for r in rs]
            counted = [(o, n) for o, n in counted if o is not None]
            k, n = sum(o for o, _ in counted), sum(n for _, n in counted)
            d["hand_offs"] = {"questions": len(counted), "hand_offs": n, "overrides": k,
                              "override_rate": round(k / n, 4) if n else None, "override_rate_ci": _wilson(k, n)}
        if large is not None and label != "large-only":
            same = sum(1 for a, b in zip(rs, large, strict=True) if a["answer"] is not None and a["answer"] == b["answer"])
            d["same_answer_as_large_only"] = round(same / len(rs), 4) if rs else None
            d["lost_vs_large_only"] = sum(1 for a, b in zip(rs, large, strict=True) if b["correct"] and not a["correct"])
            d["won_vs_large_only"] = sum(1 for a, b in zip(rs, large, strict=True) if a["correct"] and not b["correct"])
        out["configurations"][label] = d
    verify = Path(__file__).resolve().parents[2] / "eval" / "data" / "token_router" / "verify.json"
    if verify.is_file():
        checked = json.loads(verify.read_text())
        out["label_check"] = {"source": "eval/data/token_router/verify.json",
                              "by_category": {k: {"sampled": c["sampled"], "agreement": c["agreement"],
                                                  "verified": c["verified"]}
                                              for k, c in checked["by_category"].items()}}
    return out


if __name__ == "__main__":
    sys.exit(main())
