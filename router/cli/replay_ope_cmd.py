"""`triage replay evaluate --logged EXPORT --policy P`: off-policy evaluation (called from replay_eval_cmd.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from triage.router.cli.common import console, err_console, fail, read_replay_or_fail

from triage.console import Col, make_table, print_table

if TYPE_CHECKING:
    from triage.eval.insample import TrainedRows
    from triage.eval.ope_data import LoggedRow

COLUMNS = (Col("estimator"), Col("accuracy", "right"), Col("95% CI", "right", no_wrap=True),
           Col("cost/query", "right"), Col("cost 95% CI", "right", no_wrap=True), Col("ESS", "right"))
LABELS = {"ips": "IPS", "snips": "self-normalised IPS", "dr": "doubly robust"}


def run_logged(logged: Path, policy_path: Path, *, reward_model: str, tolerance: float, null_as_one: bool,
               n_boot: int, seed: int, json_out: bool, skip_invalid: bool, exclude_trained: bool = False) -> None:
    from triage.eval.insample import policy_trained_rows
    from triage.eval.ope import check_support, estimate
    from triage.eval.ope_data import bandit_arrays, parse_logged
    from triage.policies.loader import load_policy

    if not logged.is_file():
        fail(f"logged data not found: {logged}")
    if not 0.0 <= tolerance < 1.0:
        fail(f"--support-tolerance must be in [0, 1), got {tolerance}")
    policy = load_policy(policy_path)
    records = read_replay_or_fail(logged, skip_invalid=skip_invalid)
    rows = parse_logged(records, null_propensity_as_one=null_as_one)
    trained = policy_trained_rows(policy, str(policy_path), [r.record.prompt_text() for r in rows])
    rows, in_sample, note = _in_sample(rows, trained, logged, exclude_trained)
    view = bandit_arrays(rows, policy, str(policy_path), reward_model=reward_model, seed=seed)
    unsupported = check_support(view.arrays, tolerance, policy.name)  # SupportError -> one line, exit 2
    result = estimate(view.arrays, n_boot=n_boot, seed=seed, reward_model=view.reward_model)
    result.notes[:0] = view.notes + ([note] if note else [])
    if json_out:
        doc = {"policy": policy.name, "policy_version": policy.version, "logged": str(logged),
               "probe_outputs": view.probe_source, "in_sample": in_sample, **result.to_json()}
        typer.echo(json.dumps(doc))
        return
    print_table(console, _table(result, policy, logged, view.probe_source, unsupported))


def _in_sample(rows: list[LoggedRow], trained: TrainedRows, logged: Path,
               exclude: bool) -> tuple[list[LoggedRow], dict[str, Any] | str | None, str | None]:
    """(rows to estimate on, the JSON ``in_sample`` value, a note): the logged queries the policy's probe
    was trained on are flagged - the probe saw their outcomes, so the estimate on them is in-sample, as
    `triage learn`'s refit version is on its whole export - or, with ``exclude``, left out."""
    k, n = int(trained.mask.sum()), len(rows)
    if not trained.known:
        return rows, "unknown", (f"the policy's probe {trained.probe} does not record its training rows (or its card "
                                 "could not be read): whether these figures are in-sample is unknown")
    if not k:
        return rows, None, None
    if exclude:
        if k == n:
            fail(f"--exclude-trained: the policy's probe {trained.probe} was trained on every logged query of {logged}")
        err_console.print(f"--exclude-trained: {k:,} of {n:,} logged queries the policy's probe was trained on are "
                          "left out", highlight=False)
        return [r for r, seen in zip(rows, trained.mask, strict=True) if not seen], None, None
    return rows, {"rows": k, "of": n, "probe": trained.probe}, (
        f"IN-SAMPLE: the policy's probe {trained.probe} was trained on {k:,} of these {n:,} logged queries, so the "
        "estimates read high (it saw their outcomes); evaluate on traffic logged after it, or pass --exclude-trained")


def _fmt(v: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _ci(ci: list[float | None] | None, fmt: str = "{:.3f}") -> str:
    return "-" if not ci else f"[{_fmt(ci[0], fmt)}, {_fmt(ci[1], fmt)}]"


def _money(v: float | None) -> str:
    return "-" if v is None else (f"${v:,.2f}" if v >= 100 else f"${v:.4g}")


def _table(result, policy, logged: Path, probe_source: str, unsupported: float):
    rows = []
    ess = f"{result.ess:,.0f} ({100 * result.ess / result.n:.0f}%)"
    for name, est in result.estimates.items():
        acc, cost = est["accuracy"], est["cost"]
        label = LABELS[name] + (f" ({result.reward_model} model)" if name == "dr" else "")
        rows.append([label, _fmt(acc.value), _ci(acc.ci), _money(cost.value),
                     "-" if not cost.ci else f"[{_money(cost.ci[0])}, {_money(cost.ci[1])}]", ess])
    logged_est = result.logged
    rows.append({"cells": ["logged policy (on-policy)", _fmt(logged_est["accuracy"].value), "-",
                           _money(logged_est["cost"].value), "-", f"{result.n:,}"], "style": "dim"})
    caption = [f"{result.n:,} logged queries; target = logging choice on {100 * result.match_rate:.0f}%; "
               f"unsupported target mass {100 * unsupported:.2f}%; {result.bootstrap['n_boot']} bootstrap replicates "
               f"(percentile, seed {result.bootstrap['seed']}); ESS: Kish, of the IPS weights",
               f"target probe: {probe_source}", *result.notes]
    return make_table(COLUMNS, rows, title=f"off-policy estimate of {policy.name} v{policy.version} from {logged.name}",
                      caption="\n".join(caption))
