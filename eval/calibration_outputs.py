"""Where the probe outputs a policy is calibrated on come from (``triage policy calibrate``).

Three sources, each a ``{query id: ProbeOutput}`` map and a line saying what it is: a JSON Lines file
computed elsewhere (``--probe-outputs``), the policy's probe configuration retrained k-fold on the
data (cross-fitted: what the deployed probe would say about a query it was not trained on; the
default), or the policy's own probe on every query exactly as a live request runs it (in-sample
where the probe saw the data). :mod:`triage.eval.calibrate` does the search.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from triage.errors import ConfigError
from triage.policies.policy import Policy
from triage.probes.types import TIERS, ProbeOutput
from triage.replay.matrix import ReplayData


def outputs_from_file(path: str | Path) -> dict[str, ProbeOutput]:
    """Probe outputs from JSON Lines ``{"id": ..., "tier_probs": {...}, "success": {...}}``."""
    out: dict[str, ProbeOutput] = {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"probe outputs file not found: {p}")
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out[str(obj["id"])] = ProbeOutput(tier_probs={k: float(v) for k, v in obj["tier_probs"].items()},
                                                  success={k: float(v) for k, v in obj.get("success", {}).items()},
                                                  probe_version=str(obj.get("probe_version", "")))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{p}:{n}: not a probe output line ({type(exc).__name__}: {exc})") from None
    return out


def probe_card_path(policy: Policy, policy_path: str | Path | None) -> Path:
    from triage.policies.loader import resolve_probe_path

    where = resolve_probe_path(policy, policy_path)
    if where == "default":
        from triage.eval.default_probe import ensure_default_probe

        return Path(ensure_default_probe())
    return Path(where)


def cross_fitted_outputs(policy: Policy, policy_path: str | Path | None, data: ReplayData, *,
                         folds: int = 5, seed: int = 0, progress: Any = None) -> tuple[dict[str, ProbeOutput], str]:
    """Out-of-fold outputs of the policy's probe configuration retrained on ``data``, by query id."""
    from triage.probes.card import read_card
    from triage.probes.features.base import make_feature
    from triage.probes.labels import LabelRule
    from triage.probes.training import TrainConfig, train_probe

    card, _ = read_card(probe_card_path(policy, policy_path))
    rule = card.label_rule
    config = TrainConfig(
        features=[f.name for f in card.features],
        head=card.head.kind,
        head_params=dict(card.head.params),
        folds=folds,
        calibration=str(card.calibration.get("method", "platt")),
        rule=LabelRule(threshold=float(rule.get("threshold", 0.5)), budgets=dict(rule.get("budgets", {})),
                       easy_candidates=int(rule.get("easy_candidates", 1))),
        seed=seed,
        n_boot=0,
    )
    features = [make_feature(f.name, **f.params) for f in card.features]
    if any(f.requires_torch for f in card.features):
        raise ConfigError("calibrate retrains text-feature probes only; for an LM-feature probe pass "
                          "--probe-outputs with cross-fitted outputs")
    trained = train_probe(data, config, features=features, progress=progress)
    labels = trained.labels
    out = {}
    for k, row in enumerate(labels.rows):
        tier = {t: float(trained.oof_tier[k, j]) for j, t in enumerate(TIERS)}
        success = {c: float(trained.oof_success[k, j]) for j, c in enumerate(labels.candidates)}
        out[data.ids[row]] = ProbeOutput(tier_probs=tier, success=success, probe_version=f"{card.probe_version}/oof")
    what = (f"{folds}-fold cross-fitted outputs of the probe's configuration (features "
            f"{','.join(config.features)}, head {config.head}, calibration {config.calibration}) retrained on the data")
    return out, what


def policy_probe_outputs(policy: Policy, policy_path: str | Path | None, data: ReplayData) -> tuple[dict[str, ProbeOutput], str]:
    """The policy's own probe on every query, one at a time exactly as a live request runs it."""
    from triage.router.core.messages import probe_text
    from triage.router.core.probing import ProbeRunner

    runner = ProbeRunner(policy, str(policy_path) if policy_path is not None else None)
    out = {}
    for i in range(data.n):
        messages = data.records[i].messages() if data.records else [{"role": "user", "content": data.texts[i]}]
        out[data.ids[i]] = runner.predict(probe_text(messages))
    return out, f"the policy's probe {runner.probe.version} on the data's queries (as live requests)"
