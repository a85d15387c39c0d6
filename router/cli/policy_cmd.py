"""`triage policy ...` commands: init, schema, validate, calibrate."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from triage.router.cli.common import console, fail, user_errors

app = typer.Typer(help="Policy files: schema, validation, calibration on replay data.", no_args_is_help=True)


@app.command("init")
@user_errors
def init_cmd(
    cheap: Annotated[str, typer.Option("--cheap", help="Model for easy and normal queries (litellm string, "
                                                        "e.g. openai/gpt-4o-mini, or local/<name>).")],
    strong: Annotated[str, typer.Option("--strong", help="Model for hard queries (e.g. openai/gpt-4o).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")] = Path("my-policy.yaml"),
    name: Annotated[str, typer.Option("--name", help="Policy name (the sidecar's triage/<name>).")] = "my-policy",
    cheap_key_env: Annotated[str | None, typer.Option("--cheap-key-env", help="Variable holding the cheap "
                                                      "model's key (default: its provider's, e.g. OPENAI_API_KEY).")] = None,
    strong_key_env: Annotated[str | None, typer.Option("--strong-key-env", help="Same for the strong model.")] = None,
    cheap_api_base: Annotated[str | None, typer.Option("--cheap-api-base", help="Endpoint URL (self-hosted).")] = None,
    strong_api_base: Annotated[str | None, typer.Option("--strong-api-base", help="Endpoint URL (self-hosted).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Write a commented starter policy for your own cheap and strong models, validated before it is written."""
    from triage.router.cli.policy_init import (
        ENV_NAME,
        POLICY_NAME,
        StrategySpec,
        guess_key_env,
        next_steps,
        render_policy,
        write_policy,
    )

    if not POLICY_NAME.match(name):
        fail(f"--name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if out.exists() and not force:  # before anything slow (the model checks import litellm)
        fail(f"{out} already exists; pass --force to overwrite it")
    specs = []
    for flag, model, key_env, base, max_tokens in (("--cheap", cheap, cheap_key_env, cheap_api_base, 1024),
                                                    ("--strong", strong, strong_key_env, strong_api_base, 2048)):
        model = model.strip()
        if not model or any(c.isspace() for c in model):
            fail(f"{flag} {model!r}: a model string has no spaces, e.g. openai/gpt-4o-mini")
        if key_env is not None and not ENV_NAME.match(key_env):
            fail(f"{flag}-key-env {key_env!r}: give the NAME of an environment variable, not a key")
        specs.append(StrategySpec(model=model, key_env=key_env if key_env is not None else guess_key_env(model),
                                  api_base=base, max_tokens=max_tokens))
    write_policy(out, render_policy(name, specs[0], specs[1]), force=force)
    envs = list(dict.fromkeys(s.key_env for s in specs if s.key_env))
    console.print(f"wrote {out}: policy '{name}', cheap {specs[0].model}, strong {specs[1].model}. Next:",
                  highlight=False, soft_wrap=True)
    for step in next_steps(out, name, envs):
        console.print(f"  {step}", highlight=False, soft_wrap=True, markup=False)


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON schema of a policy file (one JSON document)."""
    from triage.policies.policy import Policy

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **Policy.model_json_schema(by_alias=True, mode="validation")}
    typer.echo(json.dumps(schema, indent=2))


@app.command("validate")
@user_errors
def validate_cmd(
    policy: Annotated[Path, typer.Argument(help="Policy YAML file.")],
    check_probe: Annotated[
        bool, typer.Option("--check-probe", help="Also load the policy's probe and check its success labels.")
    ] = False,
) -> None:
    """Check a policy file; prints a one-line summary, or one line per problem and exit code 2."""
    from triage.policies.loader import load_policy

    p = load_policy(policy)
    if check_probe:
        from triage.policies.decide import DecisionError, decide
        from triage.policies.policy import ExpectedUtilityRule
        from triage.probes.types import ProbeOutput
        from triage.router.core.probing import load_policy_probe

        probe = load_policy_probe(p, str(policy))
        if isinstance(p.rule, ExpectedUtilityRule):
            labels = set(probe.labels)
            missing = [n for n in p.candidates() if p.strategies[n].candidate not in labels]
            if missing:
                fail(f"{policy}: probe {probe.version} has no success label for "
                     + ", ".join(f"{n} ({p.strategies[n].candidate})" for n in missing)
                     + f"; it has: {', '.join(probe.labels)}")
        try:  # one dry decision with a neutral output catches anything else decide() would refuse
            decide(p, ProbeOutput(tier_probs={"easy": 1 / 3, "normal": 1 / 3, "hard": 1 / 3},
                                  success={label: 0.5 for label in probe.labels}, probe_version=probe.version))
        except DecisionError as exc:
            fail(f"{policy}: {exc}")
    tiers = ", ".join(f"{t}={p.tiers.get(t)}" for t in ("easy", "normal", "hard"))
    console.print(f"ok: {policy}: policy '{p.name}' v{p.version}, rule {p.rule.type}, "
                  f"{len(p.strategies)} strategies ({tiers})" + (", probe checked" if check_probe else ""),
                  highlight=False, soft_wrap=True)


@app.command("calibrate")
@user_errors
def calibrate_cmd(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file to calibrate (rewritten in place).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Replay JSON Lines file.")],
    target_accuracy: Annotated[
        float | None, typer.Option("--target-accuracy", help="Share of the --of strategy's accuracy to keep, e.g. 0.95.")
    ] = None,
    of: Annotated[str, typer.Option("--of", help="Reference strategy for --target-accuracy: BEST or a name.")] = "BEST",
    max_cost_per_query: Annotated[
        float | None, typer.Option("--max-cost-per-query", help="Cost cap in USD per query (instead of a target).")
    ] = None,
    tier_shares: Annotated[
        str | None,
        typer.Option("--tier-shares", help="easy,normal,hard shares of DATA's queries (e.g. 0.5,0.3,0.2): sets "
                                           "thresholds from the policy's own probe; needs no outcomes."),
    ] = None,
    probe_outputs: Annotated[
        Path | None,
        typer.Option("--probe-outputs", help="JSONL of cross-fitted probe outputs by query id (default: retrain "
                                             "the policy's probe configuration k-fold on --data)."),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Cross-fitting folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of rewriting --policy.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the calibration figures as JSON.")] = False,
    allow_degenerate: Annotated[bool, typer.Option(
        "--allow-degenerate", help="Write a result that routes (almost) everything to one strategy or tier "
                                   "(refused by default: exit 2).")] = False,
) -> None:
    """Choose thresholds / lambda on replay data and write them back with the calibration figures.

    Refuses (exit 2, nothing written) a degenerate result: tier shares far from those asked or
    thresholds at the 0/1 edges, an unreachable target, or (almost) every query to one strategy.
    """
    from triage.replay import ReplayData, read_replay
    from triage.eval.calibrate import Objective, calibrate, calibrate_tier_shares, degenerate_reason, describe_knob
    from triage.eval.calibration_outputs import cross_fitted_outputs, outputs_from_file, policy_probe_outputs
    from triage.policies.loader import load_policy

    shares = None
    if tier_shares is not None:
        try:
            shares = tuple(float(x) for x in tier_shares.split(","))
        except ValueError:
            fail(f"--tier-shares must be three numbers like 0.5,0.3,0.2, got {tier_shares!r}")
    objective = Objective(target_accuracy=target_accuracy, of=of, max_cost_per_query=max_cost_per_query,
                          tier_shares=shares)  # type: ignore[arg-type]
    pol = load_policy(policy, for_calibration=True)
    records = read_replay(data)
    replay = ReplayData.from_records(records, name=data.stem)
    command = "triage policy calibrate " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    if objective.tier_shares is not None:
        if probe_outputs is not None:
            outputs, label = outputs_from_file(probe_outputs), f"from {probe_outputs}"
        else:
            outputs, label = policy_probe_outputs(pol, policy, replay)
        result = calibrate_tier_shares(pol, replay, outputs, objective.tier_shares, data_label=str(data),
                                       outputs_label=label, command=command)
        reason = degenerate_reason(result, objective)
        if reason and not allow_degenerate:
            fail(reason)
        _write(result, policy, out)
        if as_json:
            typer.echo(json.dumps(result.figures, indent=2))
        else:
            f = result.figures
            console.print(f"{out or policy}: {describe_knob(f['knob'])}; tier shares {f['tier_shares']} "
                          f"on {f['rows_reported']} queries", highlight=False, soft_wrap=True)
        return
    from triage.probes.bandit import is_logged

    if is_logged(records):
        # Choosing thresholds by accuracy/cost compares strategies on the same queries: logged data
        # shows one strategy per query, so the search would see only the rows a policy already took.
        fail(f"{data} is logged bandit data (one outcome per query): --target-accuracy / --max-cost-per-query "
             "need every strategy's outcome on each query; use --tier-shares, estimate a policy with "
             "`triage replay evaluate --logged`, or calibrate on full-information replay data")
    if probe_outputs is not None:
        outputs, label = outputs_from_file(probe_outputs), f"from {probe_outputs}"
    else:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            class _Bar:
                task = None

                def start(self, description: str, total: int) -> None:
                    if self.task is not None:
                        bar.remove_task(self.task)
                    self.task = bar.add_task(description, total=total)

                def advance(self, n: int = 1) -> None:
                    bar.advance(self.task, n)

            outputs, label = cross_fitted_outputs(pol, policy, replay, folds=folds, seed=seed, progress=_Bar())
    result = calibrate(pol, replay, outputs, objective, data_label=str(data), outputs_label=label, command=command)
    reason = degenerate_reason(result, objective)
    if reason and not allow_degenerate:
        fail(reason)
    target = _write(result, policy, out)
    f = result.figures
    if as_json:
        typer.echo(json.dumps(f, indent=2))
        return
    best = f["best_single"]
    share = f"{f['cost_share_of_best']:.1%}" if f["cost_share_of_best"] is not None else "n/a"
    console.print(
        f"{target}: {describe_knob(f['knob'])}; accuracy {f['accuracy']:.4f} "
        f"(best single {best['strategy']}: {best['accuracy']:.4f}), cost/query ${f['cost_per_query_usd']:.6g} "
        f"(= {share} of {best['strategy']}'s) on {f['rows_reported']} rows, "
        f"{f['reported_on']}" + ("" if f["target_met"] else "  [target NOT met: closest point written, --allow-degenerate]"),
        highlight=False, soft_wrap=True,
    )


def _write(result, policy: Path, out: Path | None) -> Path:  # noqa: ANN001
    """Write the calibrated keys into ``out`` (a copy of ``policy``) or ``policy`` itself."""
    from triage.policies.loader import save_policy_updates

    target = out or policy
    if out is not None:
        out.write_text(policy.read_text(encoding="utf-8"), encoding="utf-8")
    save_policy_updates(target, result.updates)
    return target
