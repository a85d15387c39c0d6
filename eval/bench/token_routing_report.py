"""Figures of the token-routing benchmark (eval/bench/token_routing.py) from its per-question runs:
per-configuration aggregates with bootstrap intervals, the CPU floor and the issue's goal (#17), the
diagnosis of where a configuration loses against large-only, and the accuracy/large-share plot.
Pure functions over run rows - no model is loaded here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SWEPT = ("entropy-threshold", "token-router")


def aggregate(rows: list[dict[str, Any]], small_params: int, large_params: int) -> dict[str, Any]:
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
        "large_forwards_per_token": round(sum(r["large_forwards"] for r in rows) / tokens, 4) if tokens else None,
        "large_positions_per_token": round(sum(r["large_positions"] for r in rows) / tokens, 3) if tokens else None,
        "truncated": sum(1 for r in rows if r["finish_reason"] == "length"),
    }


def bootstrap(correct: list[list[bool]], reps: int = 1000, seed: int = 0) -> list[tuple[float, float]]:
    """95% intervals of the mean of each list (paired: the same question draws for every list)."""
    import numpy as np

    arr = np.asarray(correct, dtype=float)
    if arr.size == 0:
        return []
    idx = np.random.default_rng(seed).integers(0, arr.shape[1], size=(reps, arr.shape[1]))
    means = arr[:, idx].mean(axis=2)
    return [(round(float(np.quantile(m, 0.025)), 4), round(float(np.quantile(m, 0.975)), 4)) for m in means]


def plot(result: dict[str, Any], path: Path) -> None:
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


def floor_and_goal(result: dict[str, Any], floor: dict[str, float],
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


def _wilson(k: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    z, ph = 1.96, k / n
    mid, half = (ph + z * z / (2 * n)) / (1 + z * z / n), z * ((ph * (1 - ph) + z * z / (4 * n)) / n) ** 0.5 / (1 + z * z / n)
    return [round(mid - half, 4), round(mid + half, 4)]


def diagnosis(rows: dict[str, list[dict[str, Any]]], overrides: dict[str, int]) -> dict[str, Any]:
    """Where each configuration loses against large-only, and why, beside its figures in
    ``methods`` (large share against the target share, large forwards and positions per token):
    for the swept configurations the hand-off precision at decode time, and for every one how often
    it gives large-only's answer and the questions it loses and wins against large-only. Plus the
    label check (``eval/data/token_router/verify.json``) when it is there."""
    out: dict[str, Any] = {"configurations": {}}
    large = rows.get("large-only")
    for label, rs in rows.items():
        d: dict[str, Any] = {}
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
        if d:
            out["configurations"][label] = d
    verify = Path(__file__).resolve().parents[2] / "eval" / "data" / "token_router" / "verify.json"
    if verify.is_file():
        checked = json.loads(verify.read_text())
        out["label_check"] = {"source": "eval/data/token_router/verify.json",
                              "by_category": {k: {"sampled": c["sampled"], "agreement": c["agreement"],
                                                  "verified": c["verified"]}
                                              for k, c in checked["by_category"].items()}}
    return out
