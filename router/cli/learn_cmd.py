"""`triage learn`: ledger -> bandit-trained probe -> calibrated new policy version -> OPE -> [--apply]."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from triage.router.cli.common import console, fail, user_errors


#: `--target-accuracy` and `--of` defaults, shared with `triage replay simulate --rounds`.
DEFAULT_TARGET_ACCURACY = 0.95
DEFAULT_OF = "BEST"
#: `--objective`'s help, shared with `triage replay simulate --rounds`.
OBJECTIVE_HELP = ("tier-shares, target-accuracy or cost-cap (with --tier-shares / --target-accuracy [--of] / "
                  "--max-cost-per-query).")


def objective_from_options(objective: str, tier_shares: str | None, target_accuracy: float, of: str,
                           max_cost_per_query: float | None) -> Any:
    """The calibration objective the `--objective` options name (a bad combination: one line, exit 2)."""
    from triage.eval.calibrate import Objective

    if objective == "tier-shares":
        if not tier_shares:
            fail("--objective tier-shares needs --tier-shares easy,normal,hard")
        try:
            shares = tuple(float(x) for x in (tier_shares or "").split(","))
        except ValueError:
            fail(f"--tier-shares must be three numbers, got {tier_shares!r}")
        return Objective(tier_shares=shares)  # type: ignore[arg-type]
    if objective == "target-accuracy":
        return Objective(target_accuracy=target_accuracy, of=of)
    if objective == "cost-cap":
        if max_cost_per_query is None:
            fail("--objective cost-cap needs --max-cost-per-query USD")
        return Objective(max_cost_per_query=max_cost_per_query)
    fail(f"--objective must be tier-shares, target-accuracy or cost-cap, got {objective!r}")


def register(app: typer.Typer) -> None:
    """Add `learn` to ``app``."""

    @app.command("learn")
    @user_errors
    def learn_cmd(
        ledger: Annotated[str, typer.Option("--ledger", help="Ledger to learn from: SQLite path or postgresql:// URL.")],
        policy: Annotated[Path, typer.Option("--policy", "-p", help="The policy that routed the traffic (its new version is written).")],
        objective: Annotated[str, typer.Option(
            "--objective", help=OBJECTIVE_HELP)] = "target-accuracy",
        tier_shares: Annotated[str | None, typer.Option("--tier-shares", help="easy,normal,hard shares, e.g. 0.5,0.3,0.2.")] = None,
        target_accuracy: Annotated[float, typer.Option("--target-accuracy", help="Share of the reference's accuracy to reach.")] = DEFAULT_TARGET_ACCURACY,
        of: Annotated[str, typer.Option("--of", help="Reference strategy of --target-accuracy (BEST: the most accurate).")] = DEFAULT_OF,
        max_cost_per_query: Annotated[float | None, typer.Option("--max-cost-per-query", help="Cost cap, USD per query.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Folder for the export, probe, new policy and report "
                                                              "(default: <policy>.learn/v<new>/ beside the policy).")] = None,
        apply: Annotated[bool, typer.Option("--apply", help="Replace the policy file atomically (old kept as <name>.v<old>.yaml).")] = False,
        reload_url: Annotated[str | None, typer.Option("--reload-url", help="With --apply: POST <url>/v1/admin/reload of a running sidecar.")] = None,
        admin_key_env: Annotated[str, typer.Option("--admin-key-env", help="Environment variable holding the sidecar admin key.")] = "TRIAGE_ADMIN_KEY",
        features: Annotated[str | None, typer.Option("--features", help="Probe features (default: the old probe's).")] = None,
        folds: Annotated[int, typer.Option("--folds", help="Cross-fitting folds of the probe training.")] = 5,
        C: Annotated[str, typer.Option("--C", help="The logistic head's inverse L2 strength, or `auto` (inner cross-validation on the logged rows).")] = "0.02",
        weighting: Annotated[str, typer.Option(
            "--weighting", help="Per-label fit on the logged outcomes: auto (for a cheap/strong pair the IPS-weighted or "
                                "unweighted fits whose gain ranks the logged queries best by doubly-robust value; with "
                                "more labels the lower IPS-weighted log loss), ips (always weighted: when the logging "
                                "policy chose by something the probe's features do not see) or none.")] = "auto",
        max_weight: Annotated[float, typer.Option("--max-weight", help="Clip of the inverse-propensity weights.")] = 20.0,
        min_rows: Annotated[int, typer.Option("--min-rows", help="Fewest logged outcomes each strategy needs.")] = 30,
        support_tolerance: Annotated[float, typer.Option("--support-tolerance", help="OPE: share of decisions allowed without support.")] = 0.01,
        holdout: Annotated[float, typer.Option("--holdout", help="Share of logged queries kept out of training for the OPE report.")] = 0.3,
        refit: Annotated[bool, typer.Option("--refit/--no-refit", help="After the report, fit the written version on every logged query (the report's version stays in <out>/evaluated/).")] = True,
        bootstrap: Annotated[int, typer.Option("--bootstrap", help="OPE bootstrap replicates.")] = 500,
        seed: Annotated[int, typer.Option("--seed", help="Seed of folds and bootstrap.")] = 0,
        allow_degenerate: Annotated[bool, typer.Option("--allow-degenerate", help="Write a degenerate calibration anyway.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    ) -> None:
        """Learn a new policy version from the ledger's own traffic (one outcome per query).

        Export (prompts required) -> train a probe on the logged outcomes (per label inverse-propensity
        weighted or not: --weighting) -> calibrate to the objective (degenerate results refused) ->
        write the new version -> compare old and new by off-policy evaluation -> with --apply,
        replace the policy file and reload."""
        from triage.eval.learn import LearnConfig, learn

        if not policy.is_file():
            fail(f"policy file not found: {policy}")
        obj = objective_from_options(objective, tier_shares, target_accuracy, of, max_cost_per_query)
        if reload_url and not apply:
            fail("--reload-url needs --apply (nothing changes without it)")
        cfg = LearnConfig(ledger=ledger, policy=policy, objective=obj, out=out, apply=apply, features=features,
                          folds=folds, weighting=weighting, max_weight=max_weight, min_rows=min_rows, support_tolerance=support_tolerance, holdout=holdout, refit=refit, C=C,
                          n_boot=bootstrap, seed=seed, allow_degenerate=allow_degenerate, reload_url=reload_url,
                          admin_key=os.environ.get(admin_key_env) or None,
                          command="triage " + " ".join(sys.argv[1:]))
        res = learn(cfg)
        if json_out:
            typer.echo(json.dumps(res.to_json(), default=str))
            return
        from triage.eval.calibrate import describe_knob
        from triage.probes.bandit_training import describe_weighting

        say = lambda s: console.print(s, highlight=False, soft_wrap=True)  # noqa: E731
        say(f"exported {res.rows:,} logged queries to {res.export}")
        say(f"probe trained on them: {res.probe}")
        if res.training:
            say(describe_weighting(res.training))
        f = res.calibration
        say(f"calibrated: {f.get('objective')} -> {describe_knob(f['knob'])}")
        say(f"new policy {res.policy} (version {res.old_version} -> {res.new_version})")
        say(f"off-policy on {len(res.holdout_ids):,} held-out queries (DR, 95% CI): {res.verdict}")
        for note in res.notes:
            say(note)
        if res.applied:
            say(f"applied: {res.applied} replaced atomically; old version kept as {res.backup}")
            say(res.reload)
        else:
            say(f"not applied (pass --apply to replace {policy})")
