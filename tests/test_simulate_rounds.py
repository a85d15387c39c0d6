"""`triage replay simulate --rounds K`: traffic in rounds with `triage learn --apply` after each (issue #15).

The same GSM8K traffic, session probe and two-strategy policy as tests/test_learning_loop.py; a real
SQLite ledger; the learning step is the real `triage learn`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from triage.router.cli.main import app
from tests.support.loop import gsm8k_traffic, one_line_exit_2, policy_doc, runner, write

ROWS = 240


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gsm8k_traffic(tmp_path_factory.mktemp("rounds"), ROWS)


def test_each_round_is_routed_by_the_version_the_last_one_learned(traffic: Path, tmp_path: Path) -> None:
    from triage.router.ledger import open_ledger

    policy = write(tmp_path / "p.yaml", policy_doc(epsilon=0.5))
    ledger = str(tmp_path / "l.sqlite")
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy), "--ledger", ledger,
                              "--rounds", "2", "--objective", "tier-shares", "--tier-shares", "0.5,0.3,0.2", "--json"])
    assert res.exit_code == 0, res.output
    rounds = json.loads(res.stdout.strip().splitlines()[-1])["rounds"]
    assert [(r["round"], r["of"], r["traffic"]) for r in rounds] == [(1, 2, [0, 120]), (2, 2, [120, 240])]
    # round 1 ran on v1 and wrote v2; round 2 ran on v2 (the applied file) and wrote v3
    assert [r["simulation"]["policy_version"] for r in rounds] == ["1", "2"]
    assert [r["learned"]["version"] for r in rounds] == ["2", "3"]
    assert [r["learned"]["rows"] for r in rounds] == [120, 240]  # each learns from the whole ledger so far
    assert all(r["learned"]["objective"].startswith("tier shares") for r in rounds), rounds
    applied = yaml.safe_load(policy.read_text())
    assert str(applied["version"]) == "3" and applied["probe"] != "default"
    assert (tmp_path / "p.v1.yaml").is_file() and (tmp_path / "p.v2.yaml").is_file()
    # round r's request ids carry seed + r, so the two rounds' ids never clash
    store = open_ledger(ledger)
    try:
        ids = [e.record.request_id for e in store.iter_entries()]
    finally:
        store.close()
    assert len(ids) == ROWS == len(set(ids))
    assert sum(i.startswith("sim0:") for i in ids) == 120 and sum(i.startswith("sim1:") for i in ids) == 120


def test_a_round_whose_learning_is_refused_keeps_the_policy_and_says_why(traffic: Path, tmp_path: Path) -> None:
    """No exploration: one strategy per tier, so no support for another policy - every round is
    refused, the policy file stays at v1, and the command ends in one line, exit 2."""
    policy = write(tmp_path / "p.yaml", policy_doc(epsilon=None))
    before = policy.read_text()
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy),
                              "--ledger", str(tmp_path / "l.sqlite"), "--rounds", "2", "--n", "80"])
    line = one_line_exit_2(res)
    assert line.startswith("error: no round learned a new version; the last refusal: ")
    assert "too few logged outcomes" in line or "no support" in line
    assert res.stdout.count("learning refused: ") == 2 and "round 2/2: simulated 40 queries with loop v1" in res.stdout
    assert policy.read_text() == before and not (tmp_path / "p.v1.yaml").exists()


def test_a_refused_objective_falls_back_to_the_next(traffic: Path, tmp_path: Path) -> None:
    """simulate_rounds tries a round's learn configurations in turn (the bench falls back to tier shares)."""
    from triage.eval.calibrate import Objective
    from triage.eval.learn import LearnConfig
    from triage.eval.simulate_rounds import simulate_rounds
    from triage.replay import read_replay

    policy = write(tmp_path / "p.yaml", policy_doc(epsilon=0.5))
    ledger = str(tmp_path / "l.sqlite")
    configs = lambda r: [LearnConfig(ledger=ledger, policy=policy, objective=o, folds=3, n_boot=50, seed=r)  # noqa: E731
                         for o in (Objective(target_accuracy=0.95, of="no-such-strategy"),
                                   Objective(tier_shares=(0.5, 0.3, 0.2)))]
    (only,) = simulate_rounds(read_replay(traffic)[:120], policy, ledger, configs=configs, rounds=1)
    assert len(only.refused) == 1 and "--of must be BEST or a strategy" in only.refused[0]
    assert only.learned is not None and only.learned.new_version == "2"
    assert only.learned.applied is not None  # apply is forced on: the next round must route by it
    assert str(yaml.safe_load(policy.read_text())["version"]) == "2"


def test_learning_options_without_rounds_and_bad_rounds_are_refused(traffic: Path, tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", policy_doc())
    base = ["replay", "simulate", str(traffic), "--policy", str(policy), "--ledger", str(tmp_path / "l.sqlite")]
    line = one_line_exit_2(runner.invoke(app, [*base, "--objective", "tier-shares"]))
    assert "--objective set the learning step of --rounds" in line
    assert "must be at least 1" in one_line_exit_2(runner.invoke(app, [*base, "--rounds", "0"]))
    line = one_line_exit_2(runner.invoke(app, [*base, "--rounds", "2", "--objective", "cost-cap"]))
    assert "--objective cost-cap needs --max-cost-per-query" in line
    assert "no records to simulate" in one_line_exit_2(runner.invoke(app, [*base, "--skip", str(ROWS)]))
    assert not (tmp_path / "l.sqlite").exists()  # refused before anything was written


def test_skip_and_n_count_in_the_simulator_s_order(tmp_path: Path, traffic: Path) -> None:
    """With a `time` on every record the traffic is in time order, and --skip / --n count in it (they
    used to count --skip in file order and --n in time order)."""
    from triage.replay import read_replay, write_replay

    records = read_replay(traffic)[:6]
    timed = [r.model_copy(update={"time": f"2026-01-0{6 - i}T00:00:00Z"}) for i, r in enumerate(records)]
    path = tmp_path / "timed.jsonl"
    write_replay(timed, path)  # file order is the reverse of time order
    policy = write(tmp_path / "p.yaml", policy_doc())
    ledger = str(tmp_path / "l.sqlite")
    res = runner.invoke(app, ["replay", "simulate", str(path), "--policy", str(policy), "--ledger", ledger,
                              "--skip", "1", "--n", "2", "--json"])
    assert res.exit_code == 0, res.output
    from triage.router.ledger import open_ledger

    store = open_ledger(ledger)
    try:
        got = sorted(e.record.request_id for e in store.iter_entries())
    finally:
        store.close()
    # time order is records[5], records[4], ...: skip the earliest, take the next two
    assert got == sorted(f"sim0:{records[i].id}" for i in (4, 3))


def test_round_bounds_cut_equal_consecutive_parts() -> None:
    from triage.errors import ConfigError
    from triage.eval.simulate_rounds import round_bounds

    assert round_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert round_bounds(2205, 0, round_size=500) == [(0, 551), (551, 1102), (1102, 1654), (1654, 2205)]
    assert round_bounds(2, 5) == [(0, 1), (1, 2)]  # never an empty round
    with pytest.raises(ConfigError):
        round_bounds(10, -1)
    with pytest.raises(ConfigError):
        round_bounds(0, 2)


def _logged_propensities(ledger: str, tmp_path: Path) -> set[float]:
    from triage.replay import read_replay

    out = tmp_path / "export.jsonl"
    res = runner.invoke(app, ["ledger", "export", "--ledger", ledger, "-o", str(out)])
    assert res.exit_code == 0, res.output
    return {round(r.model_extra["logged"]["propensity"], 6) for r in read_replay(out)}


def test_explore_overrides_the_policy_s_exploration_and_leaves_the_file(traffic: Path, tmp_path: Path) -> None:
    greedy = write(tmp_path / "greedy.yaml", policy_doc(epsilon=None))
    before = greedy.read_text()
    ledger = str(tmp_path / "a.sqlite")
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(greedy), "--ledger", ledger,
                              "--n", "80", "--explore", "epsilon:0.5", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["explored"] > 0
    assert _logged_propensities(ledger, tmp_path) == {0.75, 0.25}  # epsilon 0.5 over two strategies
    assert greedy.read_text() == before
    # and `none` turns a policy's exploration off: every propensity 1
    exploring = write(tmp_path / "eps.yaml", policy_doc(epsilon=0.3))
    ledger = str(tmp_path / "b.sqlite")
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(exploring), "--ledger", ledger,
                              "--n", "40", "--explore", "none", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["explored"] == 0
    assert _logged_propensities(ledger, tmp_path) == {1.0}


def test_explore_in_rounds_routes_every_round_and_the_learned_versions_keep_the_file_s_block(
        traffic: Path, tmp_path: Path) -> None:
    """A greedy policy learns in simulation because --explore explores; what it writes stays greedy."""
    policy = write(tmp_path / "p.yaml", policy_doc(epsilon=None))
    ledger = str(tmp_path / "l.sqlite")
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy), "--ledger", ledger,
                              "--rounds", "2", "--explore", "epsilon:0.5", "--objective", "tier-shares",
                              "--tier-shares", "0.5,0.3,0.2", "--json"])
    assert res.exit_code == 0, res.output
    rounds = json.loads(res.stdout.strip().splitlines()[-1])["rounds"]
    assert all(r["simulation"]["explored"] > 0 for r in rounds) and rounds[-1]["learned"]["version"] == "3"
    assert "exploration" not in yaml.safe_load(policy.read_text())


@pytest.mark.parametrize("spec", ["greedy", "epsilon:0", "epsilon:1.5", "softmax:-1", "epsilon", "softmax:nan"])
def test_a_bad_explore_is_one_line_exit_2(traffic: Path, tmp_path: Path, spec: str) -> None:
    policy = write(tmp_path / "p.yaml", policy_doc())
    line = one_line_exit_2(runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy),
                                               "--ledger", str(tmp_path / "l.sqlite"), "--explore", spec]))
    assert "--explore must be epsilon:E (0 < E <= 1), softmax:T (T > 0) or none" in line
    assert not (tmp_path / "l.sqlite").exists()


def test_an_explore_that_does_not_fit_the_policy_is_refused(traffic: Path, tmp_path: Path) -> None:
    """A cascade has no per-strategy score for softmax: said as the policy file's own block would be,
    before anything is written."""
    doc = policy_doc(epsilon=None)
    doc["rule"] = {"type": "cascade", "start": "small", "escalate_to": "large", "max_mean_entropy": 1.2}
    policy = write(tmp_path / "p.yaml", doc)
    res = runner.invoke(app, ["replay", "simulate", str(traffic), "--policy", str(policy),
                              "--ledger", str(tmp_path / "l.sqlite"), "--explore", "softmax:0.5"])
    line = one_line_exit_2(res)
    assert line.startswith("error: --explore does not fit policy 'loop'") and "use type: epsilon" in line
    assert not (tmp_path / "l.sqlite").exists()
