"""`make demo`, step ``local-pair``: query-level routing between two real local models on GSM8K.

EllieSQL-style: the default probe's difficulty tier picks the model of each question
(``policies/examples/local_pair.yaml``: Qwen2.5-Coder-0.5B for easy and normal, 1.5B for hard).
A fixed slice of GSM8K test questions (the first N; ``--local-pair-questions N``, 0 skips the step)
is answered three ways - small model only, large model only, and through the Router with the policy
(real routed calls, each recorded in ``OUT/local_pair_ledger.sqlite`` with its exact-match outcome
attached as feedback) - and scored by exact match on the final number.

Both strategies decode greedily with the same prompt, so the routed answer of a question *is* the
chosen model's own answer: the single-model rows reuse it (``reuse=True``) and call the model only
for the questions routed elsewhere, two model calls per question in all instead of three.

Writes ``OUT/local_pair.json``: the table's rows, every question's answers, the ledger's path.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from triage.policies.loader import EXAMPLES_DIR, load_policy
from triage.policies.policy import Policy
from triage.probes.types import TIERS
from triage.token_router.gsm8k import Problem, extract_answer, load_problems, same_answer

DEFAULT_POLICY = EXAMPLES_DIR / "local_pair.yaml"
DEFAULT_QUESTIONS = 12
OUTCOME_SOURCE = "gsm8k-exact-match"
JSON_NAME = "local_pair.json"
LEDGER_NAME = "local_pair_ledger.sqlite"


@dataclass
class Answer:
    """One model answer to one question."""

    text: str
    number: float | None
    correct: bool
    completion_tokens: int
    seconds: float  # the model call's wall time (routed answers: the whole request, probe included)
    truncated: bool
    reused: bool = False  # a single-model answer taken from the routed call (same greedy call)


@dataclass
class QuestionRun:
    index: int  # line of the GSM8K file
    reference: float
    tier: str
    p_hard: float
    strategy: str  # the routed choice
    model: str
    request_id: str
    routed: Answer
    single: dict[str, Answer] = field(default_factory=dict)  # strategy -> its own answer


@dataclass
class PairRun:
    policy: str
    probe_version: str
    strategies: dict[str, str]  # strategy -> model, easy tier's first ("small", "large")
    large: str  # the strategy of the hard tier: the "share routed to large" counts it
    questions: list[QuestionRun]
    rows: list[dict[str, Any]]
    ledger: str


def _strategy_order(policy: Policy) -> list[str]:
    """The strategies the tiers use, easiest tier's first (small, then large)."""
    order: list[str] = []
    for tier in TIERS:
        name = policy.tiers.get(tier)
        if name and name not in order:
            order.append(name)
    return order


def _score(text: str | None, reference: float, tokens: int | None, seconds: float, truncated: bool,
           *, reused: bool = False) -> Answer:
    number = extract_answer(text or "")
    return Answer(text or "", number, same_answer(number, reference), int(tokens or 0), round(seconds, 3),
                  truncated, reused)


def _call_strategy(policy: Policy, name: str, question: str, reference: float) -> Answer:
    """One direct call of strategy ``name``, with exactly the arguments the router would send."""
    from triage.policies.pricing import import_litellm
    from triage.router.core.calls import Step, build_kwargs

    strategy = policy.strategies[name]
    strategy.kind.register()
    kwargs = build_kwargs(strategy, Step(name, "primary", strategy.max_tokens),
                          [{"role": "user", "content": question}], {})
    t0 = time.perf_counter()
    response = import_litellm().completion(**kwargs)
    seconds = time.perf_counter() - t0
    choice = response.choices[0]
    return _score(choice.message.content, reference, response.usage.completion_tokens, seconds,
                  choice.finish_reason == "length")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _row(label: str, model: str, answers: list[Answer], *, large_share: float | None,
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "row": label, "model": model, "n": len(answers),
        "accuracy": _mean([1.0 if a.correct else 0.0 for a in answers]),
        "mean_completion_tokens": _mean([float(a.completion_tokens) for a in answers]),
        "seconds": round(sum(a.seconds for a in answers), 2),
        "share_large": large_share, **(extra or {}),
    }


def summarize(run_questions: list[QuestionRun], strategies: dict[str, str], large: str) -> list[dict[str, Any]]:
    """Rows: one per tier (routed answers), one per single strategy, one for the routed policy."""
    rows = []
    n = len(run_questions)
    for tier in TIERS:
        qs = [q for q in run_questions if q.tier == tier]
        models = sorted({q.model for q in qs})
        per_strategy = {f"accuracy_{s}_only": _mean([1.0 if q.single[s].correct else 0.0 for q in qs])
                        for s in strategies}
        rows.append(_row(f"tier {tier}", ", ".join(models) or "-", [q.routed for q in qs],
                         large_share=_mean([1.0 if q.strategy == large else 0.0 for q in qs]),
                         extra={"kind": "tier", "tier": tier, "share": round(len(qs) / n, 4) if n else None,
                                **per_strategy}))
    for s, model in strategies.items():
        rows.append(_row(f"{s}-only", model, [q.single[s] for q in run_questions],
                         large_share=1.0 if s == large else 0.0, extra={"kind": "single", "strategy": s}))
    rows.append(_row("routed", "policy", [q.routed for q in run_questions],
                     large_share=_mean([1.0 if q.strategy == large else 0.0 for q in run_questions]),
                     extra={"kind": "routed"}))
    return rows


def run_pair(problems: list[Problem], *, policy_path: str | Path = DEFAULT_POLICY, ledger_path: str | Path,
             reuse: bool = True, say: Any = None) -> PairRun:
    """Answer ``problems`` routed (through the Router, recorded in ``ledger_path``) and with each
    strategy alone. Models must be built already (:mod:`triage.eval.local_builds`)."""
    from triage.router.core import Router

    say = say or (lambda _line: None)
    policy = load_policy(Path(policy_path))
    order = _strategy_order(policy)
    strategies = {s: policy.strategies[s].model for s in order}
    large = policy.tiers.get("hard") or order[-1]
    router = Router.from_file(policy_path, ledger=str(ledger_path))
    runs: list[QuestionRun] = []
    probe_version = ""
    try:
        router.warm()
        for i, p in enumerate(problems, 1):
            response = router.completion(messages=[{"role": "user", "content": p.question}])
            info = response._hidden_params["triage"]
            d = info["decision"]
            probe_version = d["probe_version"]
            routed = _score(response.choices[0].message.content, p.answer, info["completion_tokens"],
                            info["latency_s"], info["truncated"])
            router.feedback(info["request_id"], 1.0 if routed.correct else 0.0, source=OUTCOME_SOURCE)
            q = QuestionRun(p.index, p.answer, d["tier"], round(d["tier_probs"]["hard"], 4), info["strategy"],
                            info["model"], info["request_id"], routed)
            if reuse:  # the routed call is the chosen strategy's own greedy call: same arguments
                final = info["attempts"][-1]
                q.single[q.strategy] = _score(routed.text, p.answer, final["completion_tokens"],
                                              final["latency_s"], routed.truncated, reused=True)
            runs.append(q)
            say(f"routed {i}/{len(problems)}: tier {q.tier} -> {q.strategy} ({q.model}), "
                f"{routed.completion_tokens} tokens, {routed.seconds:.1f} s, "
                f"{'right' if routed.correct else 'wrong'}")
    finally:
        router.close()
    for s in order:
        todo = [(q, p) for q, p in zip(runs, problems) if s not in q.single]
        for j, (q, p) in enumerate(todo, 1):
            q.single[s] = _call_strategy(policy, s, p.question, p.answer)
            a = q.single[s]
            say(f"{s}-only {j}/{len(todo)}: {a.completion_tokens} tokens, {a.seconds:.1f} s, "
                f"{'right' if a.correct else 'wrong'}")
    return PairRun(policy.name, probe_version, strategies, large, runs, summarize(runs, strategies, large),
                   str(ledger_path))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pair_table(run: PairRun, *, wide: bool = False) -> Table:
    """The step's table; the model column (long names, also in the caption) only with ``wide``."""
    from triage.console import Col, make_table

    names = list(run.strategies)
    cols = [Col("row"), Col("model", wide_only=True), Col("n", "right"), Col("accuracy", "right"),
            *(Col(f"acc {s}-only", "right") for s in names), Col("mean tokens", "right"), Col("seconds", "right"),
            Col(f"-> {run.large}", "right")]
    rows = []
    for r in run.rows:
        per = [_fmt(r.get(f"accuracy_{s}_only"), ".2f") if r["kind"] == "tier" else "" for s in names]
        rows.append({"cells": [r["row"], r["model"], r["n"], _fmt(r["accuracy"], ".2f"), *per,
                               _fmt(r["mean_completion_tokens"], ".0f"), f"{r['seconds']:.1f}",
                               _fmt(r["share_large"], ".0%")],
                     "end_section": r["row"] == "tier hard"})
    caption = ", ".join(f"{s} = {m}" for s, m in run.strategies.items())
    return make_table(cols, rows, wide=wide, caption=caption,
                      title=f"GSM8K, {len(run.questions)} test questions: policy {run.policy} "
                            f"(probe {run.probe_version}); exact match on the final number")


def write_json(run: PairRun, path: Path, *, data: dict[str, Any], timing: dict[str, float]) -> Path:
    doc = {
        "policy": run.policy, "probe_version": run.probe_version, "strategies": run.strategies,
        "large": run.large, "data": data, "scoring": "exact match on the final number (triage.token_router.gsm8k)",
        "rows": run.rows, "ledger": {"path": run.ledger, "records": len(run.questions), "outcome_source": OUTCOME_SOURCE},
        "timing_s": timing, "questions": [asdict(q) for q in run.questions],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def local_pair_step(ctx: Any, *, policy_path: str | Path = DEFAULT_POLICY, reuse: bool = True) -> PairRun | None:
    """The demo step (``ctx``: :class:`triage.eval.demo.DemoContext`). Builds what is missing, runs
    :func:`run_pair` on the first ``ctx.local_pair_questions`` GSM8K test questions, prints the
    table, writes OUT/local_pair.json and the ledger OUT/local_pair_ledger.sqlite."""
    from triage.eval.local_builds import ensure_policy_models

    n = int(getattr(ctx, "local_pair_questions", DEFAULT_QUESTIONS))
    console: Console = ctx.console
    if n <= 0:
        console.print("  skipped (--local-pair-questions 0)")
        return None
    say = lambda line: console.print(f"  {line}", highlight=False)  # noqa: E731
    t0 = time.perf_counter()
    with console.status("checking the local model builds", spinner="dots") as status:
        build_s = ensure_policy_models(policy_path, lambda line: (say(line), status.update(line)))
    data_file = Path(ctx.data_dir) / "gsm8k" / "test.jsonl"
    problems = load_problems(data_file, 0, n)
    ledger = Path(ctx.out) / LEDGER_NAME
    for suffix in ("", "-wal", "-shm"):  # this run's calls only
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    t1 = time.perf_counter()
    from triage.console import print_table, progress_bar

    # Model calls: one routed per question, plus each strategy's own (minus the reused routed one).
    calls = len(problems) * (len(_strategy_order(load_policy(Path(policy_path)))) + (0 if reuse else 1))
    with progress_bar(console) as bar:
        task = bar.add_task("answering GSM8K questions", total=calls)

        def progress(line: str) -> None:
            console.print(f"  [dim]{line}[/]", highlight=False)
            bar.update(task, advance=1, description=line.split(":")[0])

        run = run_pair(problems, policy_path=policy_path, ledger_path=ledger, reuse=reuse, say=progress)
    timing = {"builds": round(build_s, 1), "answers": round(time.perf_counter() - t1, 1),
              "step": round(time.perf_counter() - t0, 1)}
    wide = bool(getattr(ctx, "wide", False))
    print_table(console, pair_table(run, wide=wide), wide=wide)
    path = write_json(run, Path(ctx.out) / JSON_NAME, timing=timing,
                      data={"file": str(data_file), "start": 0, "count": len(problems)})
    console.print(f"  wrote {path}; {len(run.questions)} routed calls with their outcomes in the ledger:\n"
                  f"  triage ledger report --by tier --ledger {ledger}", highlight=False)
    ctx.artifacts["local_pair"] = path
    ctx.artifacts["local_pair_ledger"] = ledger
    return run
