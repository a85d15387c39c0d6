"""`make demo`: import shared datasets, replay them through baselines and routers, write a report.

    python -m triage.eval.demo --out demo-output [--data-dir ../shared/data] [--bootstrap 1000]

The demo is a list of steps run in order over one :class:`DemoContext`. Later work appends
steps (training a probe, routing real queries through the local model) with :func:`add_step`;
the ``report`` step stays last and reports every evaluation found in ``ctx.results``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from triage.eval.evaluation import EvaluationResult, evaluate
from triage.eval.demo_local_pair import DEFAULT_QUESTIONS as DEFAULT_LOCAL_PAIR_QUESTIONS
from triage.eval.evaluation.table import print_frontier
from triage.replay import ReplayData, write_replay

NOISE_LOG = "library.log"  # OUT/library.log: the libraries' warnings and progress bars (eval/library_noise.py)


@dataclass(frozen=True)
class DemoDataset:
    """A shared dataset the demo imports, and the routers it evaluates on it."""

    name: str
    source: str
    path: str  # relative to the data folder
    dataset: str | None = None
    routers: tuple[str, ...] = ()


DATASETS: list[DemoDataset] = [
    DemoDataset("routellm-gsm8k", "routellm", "routellm", "gsm8k",
                ("threshold:score=prompt_words", "threshold:score=digits", "probe-text")),
    DemoDataset("routerbench", "routerbench", "routerbench-subset", None, ("threshold:score=prompt_chars",)),
    DemoDataset("pricing-reversal-gpqa", "pricing-reversal", "pricing-reversal", "gpqa-test",
                ("threshold:score=prompt_chars",)),
]


@dataclass
class DemoContext:
    out: Path
    data_dir: Path
    console: Console
    n_boot: int = 1000
    seed: int = 0
    local_pair_questions: int = DEFAULT_LOCAL_PAIR_QUESTIONS  # GSM8K questions of the `local-pair` step; 0 skips it
    wide: bool = False  # every table column (--wide); by default the tables fit 100-120 columns
    datasets: dict[str, tuple[DemoDataset, ReplayData]] = field(default_factory=dict)
    results: dict[str, EvaluationResult] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[DemoContext], None]


def step_import(ctx: DemoContext) -> None:
    """Import each shared dataset into the replay format (also written to OUT/replay/*.jsonl)."""
    from triage.eval.importers import import_source

    for spec in DATASETS:
        path = ctx.data_dir / spec.path
        records = import_source(spec.source, path, dataset=spec.dataset)
        jsonl = ctx.out / "replay" / f"{spec.name}.jsonl"
        write_replay(records, jsonl)
        ctx.artifacts[f"replay:{spec.name}"] = jsonl
        ctx.datasets[spec.name] = (spec, ReplayData.from_records(records, name=spec.name))
        ctx.console.print(f"  {spec.name}: {len(records):,} queries from {path} -> {jsonl}")


def step_probe(ctx: DemoContext) -> None:
    """Make sure the default probe exists (`triage probe build-default`; minutes on first use, then cached)."""
    from triage.eval.default_probe import ensure_default_probe
    from triage.probes.runtime import default_probe_path, load_probe

    path = default_probe_path()
    if not (path / "card.json").is_file():
        from triage.console import StepProgress, progress_bar
        from triage.eval.default_probe import build_default_probe

        ctx.console.print(f"  building the default probe into {path} (first run only; a few minutes on 2 cores)")
        with progress_bar(ctx.console, transient=False) as bar:
            build_default_probe(out_dir=path, progress=StepProgress(bar))
    probe = load_probe(ensure_default_probe())
    success = probe.card.metrics.get("calibrated", {}).get("success", {})
    auroc = ", ".join(f"{label} {m['auroc']['value']:.3f}" for label, m in success.items())
    ctx.console.print(f"  default probe {probe.card.probe_version} at {path}"
                      + (f"; cross-fitted AUROC of P(success): {auroc}" if auroc else ""))
    ctx.artifacts["probe"] = path


def step_route(ctx: DemoContext) -> None:
    """Route real easy and hard queries through the local model with policies/examples/local.yaml."""
    from triage.eval.local_builds import ensure_policy_models
    from triage.policies.loader import DEFAULT_POLICY
    from triage.router.sdk.demo import demo_step

    # Serving never builds; the demo is an offline tool, so it builds the int4 ONNX model once.
    with ctx.console.status("checking the local model build", spinner="dots") as status:
        ensure_policy_models(DEFAULT_POLICY, _say_with(ctx, status))
    demo_step(ctx)


def _say_with(ctx: DemoContext, status: Any) -> Callable[[str], None]:
    """Print a build line and show it on the spinner while the next (long) part runs."""
    def say(line: str) -> None:
        ctx.console.print(f"  {line}", highlight=False)
        status.update(line)
    return say


def step_local_pair(ctx: DemoContext) -> None:
    """GSM8K through policies/examples/local_pair.yaml: Qwen2.5-Coder 0.5B (easy, normal) / 1.5B (hard)."""
    from triage.eval.demo_local_pair import local_pair_step

    local_pair_step(ctx)


def step_evaluate(ctx: DemoContext) -> None:
    """Evaluate baselines and the dataset's routers; print the frontier table of each."""
    from triage.console import progress_bar

    for name, (spec, data) in ctx.datasets.items():
        with progress_bar(ctx.console) as bar:
            bar.add_task(f"{name}: {len(spec.routers)} routers + baselines, {ctx.n_boot} bootstrap replicates",
                         total=None)
            result = evaluate(data, list(spec.routers), n_boot=ctx.n_boot, seed=ctx.seed)
        ctx.results[name] = result
        print_frontier(ctx.console, result, wide=ctx.wide)


def step_report(ctx: DemoContext) -> None:
    """Write OUT/report.html with the frontier plots of every evaluation."""
    from triage.eval.report import write_report

    path = write_report(list(ctx.results.values()), ctx.out)
    ctx.artifacts["report"] = path
    ctx.console.print(f"  report: {path}")


STEPS: list[Step] = [
    Step("import", "import shared datasets into the replay format", step_import),
    Step("probe", "the default difficulty probe (built from ../shared/data on first use)", step_probe),
    Step("evaluate", "replay baselines and routers; frontier tables", step_evaluate),
    Step("route", "route real queries through the local model (no API key)", step_route),
    Step("local-pair", "query-level routing between two local models, Qwen2.5-Coder 0.5B / 1.5B, on GSM8K",
         step_local_pair),
    Step("report", "HTML report with cost-accuracy frontiers", step_report),
]


def add_step(step: Step, *, before: str | None = "report") -> None:
    """Add a step to the demo, by default just before the report."""
    names = [s.name for s in STEPS]
    if step.name in names:
        raise ValueError(f"demo step {step.name!r} already exists")
    STEPS.insert(names.index(before) if before in names else len(STEPS), step)


def run(ctx: DemoContext, steps: list[Step] | None = None) -> DemoContext:
    for step in steps or STEPS:
        started = time.perf_counter()
        ctx.console.rule(f"[bold]{step.name}[/]: {step.description}")
        step.run(ctx)
        ctx.console.print(f"  [dim]{step.name} took {time.perf_counter() - started:.1f} s[/]")
    return ctx


def main(argv: list[str] | None = None) -> int:
    from triage.console import output_width
    from triage.eval.library_noise import library_noise_to
    from triage.settings import get_settings

    ap = argparse.ArgumentParser(description="Triage demo: replay evaluation on shared datasets.")
    ap.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    ap.add_argument("--data-dir", type=Path, default=None, help="shared data (default: TRIAGE_DATA_DIR)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--local-pair-questions", type=int, default=DEFAULT_LOCAL_PAIR_QUESTIONS, metavar="N",
                    help="GSM8K test questions for the local-pair step (0 skips it and its 1.6 GB install)")
    ap.add_argument("--wide", action="store_true", help="print every table column (default: fit 100-120 columns)")
    ap.add_argument("--steps", default=None, metavar="A,B",
                    help=f"run only these steps, in the demo's order ({', '.join(s.name for s in STEPS)})")
    args = ap.parse_args(argv)
    steps = STEPS
    if args.steps:
        wanted = [n.strip() for n in args.steps.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {s.name for s in STEPS})
        if unknown:
            ap.error(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(s.name for s in STEPS)}")
        steps = [s for s in STEPS if s.name in wanted]
    data_dir = args.data_dir or get_settings().data_dir
    if not Path(data_dir).is_dir():
        ap.error(f"shared data folder not found: {data_dir} (set TRIAGE_DATA_DIR or --data-dir)")
    console = Console()
    console = Console(width=output_width(console))  # COLUMNS, the terminal's, or 120 when piped
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=args.out, data_dir=Path(data_dir), console=console, n_boot=args.bootstrap, seed=args.seed,
                      local_pair_questions=args.local_pair_questions, wide=args.wide)
    noise_path = args.out / NOISE_LOG
    console.print(f"[dim]warnings and progress bars of torch, transformers, scikit-learn, ... go to {noise_path}[/]",
                  highlight=False)
    started = time.perf_counter()
    with library_noise_to(noise_path) as noise:
        run(ctx, steps)
    done = f"[bold green]demo done[/] in {time.perf_counter() - started:.1f} s"
    if "report" in ctx.artifacts:
        done += f"; report: {ctx.artifacts['report']}"
    if noise.written():
        done += f"; library output: {noise_path} ({noise.written():,} bytes)"
    console.print(done, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
