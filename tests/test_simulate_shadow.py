"""Shadow sampling in the bandit simulator and in what learns from it (issue #15).

`triage replay simulate` honours a policy's `shadow:` block as the router does (the same seeded
choice, the same linked record and observed-strategy propensity), so shadowing can be measured
on full-information replay data; `triage learn` then keeps a shadow row on its query's side of the
OPE holdout split and in its query's cross-fitting fold. Traffic: RouteLLM GSM8K into real SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from triage.router.cli.main import app
from tests.support.loop import SMALL, gsm8k_traffic, policy_doc, runner, simulate, write

ROWS = 160
EPSILON, RATE = 0.3, 0.5


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gsm8k_traffic(tmp_path_factory.mktemp("shadow-loop"), ROWS)


def export(ledger: str, out: Path) -> list:
    from triage.replay import read_replay

    res = runner.invoke(app, ["ledger", "export", "--ledger", ledger, "-o", str(out)])
    assert res.exit_code == 0, res.output
    return read_replay(out)


@pytest.fixture(scope="module")
def shadowed(traffic: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict, list]:
    """(policy, ledger, simulate's JSON, the ledger export) of one shadowed run."""
    where = tmp_path_factory.mktemp("shadowed")
    policy = write(where / "p.yaml", policy_doc(EPSILON, shadow={"rate": RATE, "strategies": ["small"]}))
    ledger = str(where / "l.sqlite")
    sim = simulate(traffic, policy, ledger)
    return policy, ledger, sim, export(ledger, where / "export.jsonl")


def test_simulate_shadows_the_requests_the_router_would(traffic: Path, shadowed: tuple) -> None:
    from triage.policies.loader import load_policy
    from triage.policies.shadow import choose_shadow
    from triage.replay import read_replay

    policy_path, _, sim, rows = shadowed
    policy = load_policy(policy_path)
    full = {r.id: r for r in read_replay(traffic)}
    primaries = {r.id: r for r in rows if not r.model_extra["logged"].get("shadow")}
    shadows = {r.id: r for r in rows if r.model_extra["logged"].get("shadow")}
    assert len(primaries) == ROWS and len(shadows) == sim["shadows"] > 0
    assert sim["shadow_chosen"] == {"small": len(shadows)} and sim["shadows_dropped_budget"] == 0
    # exactly the requests the router's seeded choice shadows: decided `large` (the pool is [small],
    # a request decided `small` has nothing else to shadow with) and drawn under the rate
    want = {rid + ":shadow" for rid, r in primaries.items()
            if choose_shadow(policy, rid, r.model_extra["logged"]["strategy"]) is not None}
    assert set(shadows) == want
    assert all(primaries[s.removesuffix(":shadow")].model_extra["logged"]["strategy"] == "large" for s in shadows)
    assert 0.3 * sim["chosen"]["large"] < len(shadows) < 0.7 * sim["chosen"]["large"]
    cost = 0.0
    for sid, r in shadows.items():
        logged = r.model_extra["logged"]
        assert logged["shadow_of"] == sid.removesuffix(":shadow") and logged["strategy"] == "small"
        (name, o), = r.outcomes.items()
        truth = full[sid.split(":")[1]].outcomes[SMALL]
        assert name == "small" and o.score == truth.score and o.cost_usd == pytest.approx(truth.cost_usd)
        assert r.prompt_text() == primaries[logged["shadow_of"]].prompt_text()
        # P(small observed | x) = pi(small | x) + rate * pi(large | x): epsilon-greedy's two cases
        greedy = primaries[logged["shadow_of"]].model_extra["logged"]["greedy_strategy"]
        pi_small = 1 - EPSILON / 2 if greedy == "small" else EPSILON / 2
        assert logged["propensity"] == pytest.approx(pi_small + RATE * (1 - pi_small))
        cost += truth.cost_usd
    assert sim["shadow_cost_usd"] == pytest.approx(cost)
    # A primary row keeps its decision's propensity (off-policy evaluation) and logs the probability
    # its strategy is observed at all; the trainer weights first-call and shadow outcomes by the latter.
    from triage.probes.bandit import make_logged_labels

    labels = make_logged_labels(rows, min_rows=5)
    weight = dict(zip(labels.ids, labels.weight, strict=True))
    for rid, r in primaries.items():
        logged = r.model_extra["logged"]
        pi = logged["propensity"]
        if logged["strategy"] == "small":
            assert logged["observed_propensity"] == pytest.approx(pi + RATE * (1 - pi))
        else:  # `large` never shadows (the pool is [small])
            assert logged["observed_propensity"] == pytest.approx(pi)
        assert weight[rid] == pytest.approx(1 / logged["observed_propensity"])
    for sid, r in shadows.items():
        assert weight[sid] == pytest.approx(1 / r.model_extra["logged"]["propensity"])


def test_the_day_cap_stops_simulated_shadows(traffic: Path, tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", policy_doc(EPSILON, shadow={"rate": 1.0, "strategies": ["small"],
                                                               "max_cost_usd_per_day": 1e-9}))  # one shadow spends it
    ledger = str(tmp_path / "l.sqlite")
    sim = simulate(traffic, policy, ledger, "--n", "60")
    assert sim["shadows"] == 1 and sim["shadows_dropped_budget"] == sim["chosen"]["large"] - 1
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy), "--ledger", ledger,
                              "--skip", "60", "--n", "30"])
    assert res.exit_code == 0, res.output
    assert "dropped by the daily cap" in res.stdout


def test_no_shadow_block_no_shadow_and_no_observed_propensity(traffic: Path, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l.sqlite")
    sim = simulate(traffic, write(tmp_path / "p.yaml", policy_doc(EPSILON)), ledger, "--n", "40")
    assert sim["shadows"] == 0 and sim["shadow_cost_usd"] == 0
    rows = export(ledger, tmp_path / "export.jsonl")
    assert len(rows) == 40 and not any("observed_propensity" in r.model_extra["logged"] for r in rows)


def test_a_shadow_row_stays_with_its_query(shadowed: tuple) -> None:
    """The OPE holdout split and the cross-fitting folds key a shadow row by the query it shadows."""
    from triage.eval.learn import split_holdout
    from triage.probes.bandit import make_logged_labels, query_id
    from triage.probes.bandit_training import logged_fold_ids

    _, _, _, rows = shadowed
    fit, held = split_holdout(rows, 0.3)
    side = {query_id(r): "fit" for r in fit} | {query_id(r): "held" for r in held}
    assert len(side) == ROWS  # no query on both sides
    assert {query_id(r) for r in fit}.isdisjoint({query_id(r) for r in held})
    assert any(query_id(r) != r.id for r in held)  # some shadow rows were held out with their query
    labels = make_logged_labels(rows, min_rows=5)
    assert labels.queries is not None and len(set(labels.queries)) == ROWS < labels.n
    folds = logged_fold_ids(labels, 3, 0)
    by_query: dict[str, set[int]] = {}
    for q, k in zip(labels.queries, folds, strict=True):
        by_query.setdefault(q, set()).add(int(k))
    assert all(len(ks) == 1 for ks in by_query.values())
    assert len(np.bincount(folds)) == 3 and min(np.bincount(folds)) > 0.2 * labels.n
    # without shadow rows the folds are the stratified ones they always were
    plain = make_logged_labels([r for r in rows if query_id(r) == r.id], min_rows=5)
    from triage.probes.training import fold_ids

    assert np.array_equal(logged_fold_ids(plain, 3, 0), fold_ids(plain.label * 2 + plain.success, 3, 0))


def test_learn_on_a_shadowed_ledger_reports_queries_not_shadow_rows(shadowed: tuple, tmp_path: Path) -> None:
    policy, ledger, sim, _ = shadowed
    res = runner.invoke(app, ["learn", "--ledger", ledger, "--policy", str(policy), "--out", str(tmp_path / "out"),
                              "--folds", "3", "--bootstrap", "50", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["rows"] == ROWS + sim["shadows"]
    assert 0.15 * ROWS < doc["holdout_rows"] < 0.45 * ROWS
    assert f"refit on all {ROWS} logged queries" in doc["notes"][0]
    card = json.loads((Path(doc["probe"]) / "card.json").read_text(encoding="utf-8"))
    labels = card["training_data"]["logged"]["labels"]
    assert labels[SMALL]["rows"] == sim["chosen"]["small"] + sim["shadows"]  # the shadow outcomes trained it
    from triage.policies.loader import load_policy

    assert load_policy(doc["policy"]).shadow is not None  # the new version keeps the block
