"""The replay evaluator: facts on real shared data, cross-fitting, routers and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from triage.eval.evaluation import evaluate, make_protocol, run_router
from triage.eval.importers import import_source
from triage.replay import Outcome, ReplayData, ReplayRecord, write_replay
from triage.eval.routers import ReplayRouter, RouterSweep, make_router
from triage.eval.routers.probabilistic import ProbabilisticRouter
from triage.eval.routers.threshold import ThresholdRouter
from triage.router.cli.main import app
from triage.settings import get_settings

DATA = get_settings().data_dir


@pytest.fixture(scope="module")
def gsm8k() -> ReplayData:
    return ReplayData.from_records(import_source("routellm", DATA / "routellm", dataset="gsm8k"), name="gsm8k")


@pytest.fixture(scope="module")
def routerbench() -> ReplayData:
    return ReplayData.from_records(import_source("routerbench", DATA / "routerbench-subset"), name="routerbench")


def synthetic_records(n: int = 400, m: int = 2, seed: int = 0) -> list[ReplayRecord]:
    """Queries with a ``difficulty`` field that really predicts which candidate succeeds."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        d = float(rng.random())
        outcomes = {}
        for j in range(m):
            skill = 0.5 + 0.5 * j / max(m - 1, 1)
            ok = rng.random() < (1.0 if d < skill else 0.1)
            completion = int(50 + 400 * d * (j + 1))
            outcomes[f"model-{j}"] = Outcome(score=float(ok), cost_usd=(100 + 3 * completion) * 1e-6 * 10**j,
                                             prompt_tokens=100, completion_tokens=completion, reasoning_tokens=0)
        records.append(ReplayRecord(id=f"q{i}", prompt="x " * int(5 + 50 * d), outcomes=outcomes, difficulty=d))
    return records


# --- known facts on real data -------------------------------------------------------------------

def test_routellm_gsm8k_facts(gsm8k: ReplayData) -> None:
    result = evaluate(gsm8k, ["random:seeds=20"], n_boot=200)
    r = result.routers
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    assert round(r[weak].metrics["accuracy"], 3) == 0.638
    assert round(r[strong].metrics["accuracy"], 3) == 0.857
    assert result.pair == {"weak": weak, "strong": strong}
    assert r["best-single"].metrics["candidate"] == strong
    for name in (weak, strong):
        assert r["oracle"].metrics["accuracy"] >= r[name].metrics["accuracy"]
    # Random mixing recovers half the gap on average, exactly in expectation and ~ with 20 seeds.
    assert r["random"].metrics["apgr"] == pytest.approx(0.5, abs=0.03)
    assert r["random:seeds=20"].metrics["apgr"] == pytest.approx(0.5, abs=0.03)
    for m in (x.metrics for x in r.values()):
        lo, hi = m["accuracy_ci"]
        assert lo <= m["accuracy"] <= hi
    assert result.n == 1319 and result.cost_unit == "usd"


def test_routerbench_uses_its_split_for_every_router(routerbench: ReplayData) -> None:
    result = evaluate(routerbench, ["threshold:score=prompt_chars"], n_boot=100)
    assert result.protocol["kind"] == "split"
    n_test = sum(1 for s in routerbench.complete().splits if s == "test")
    assert result.n == n_test
    assert all(r.metrics["n"] == n_test for r in result.routers.values())
    assert result.n_dropped_incomplete == routerbench.n - routerbench.complete().n > 0
    best = max(result.routers[c].metrics["accuracy"] for c in routerbench.candidates)
    assert result.routers["best-single"].metrics["accuracy"] == best
    assert result.routers["oracle"].metrics["accuracy"] >= best
    assert result.pair is None and "apgr" not in result.routers["oracle"].metrics
    # the random mix goes from the cheapest to the most accurate candidate
    curve = result.routers["random"].curve
    assert curve[-1]["accuracy"] == pytest.approx(best)
    assert result.routers["random"].metrics["cost_ratio_at_best_accuracy"] == pytest.approx(1.0)


# --- cross-fitting --------------------------------------------------------------------------------

class MemorisingRouter(ReplayRouter):
    """Remembers the ids it trained on and fails if asked to score any of them."""

    name = "memorise"
    learned = True
    scored: list[str] = []

    def fit(self, data: ReplayData, train: np.ndarray) -> "MemorisingRouter":
        self.train_ids = {data.ids[i] for i in train}
        return self

    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        asked = [data.ids[i] for i in rows]
        assert not self.train_ids & set(asked), "scored a query it trained on"
        MemorisingRouter.scored.extend(asked)
        return RouterSweep(choices=np.zeros((2, len(rows))), knobs=[0.0, 1.0])


@pytest.mark.parametrize("split", [False, True])
def test_cross_fitting_never_scores_a_training_query(split: bool) -> None:
    records = synthetic_records(103)
    if split:
        records = [r.model_copy(update={"split": "train" if i % 4 else "test"}) for i, r in enumerate(records)]
    data = ReplayData.from_records(records)
    MemorisingRouter.scored = []
    result = evaluate(data, [MemorisingRouter()], folds=4, n_boot=0)
    expected = [r.id for r in records if not split or r.split == "test"]
    assert sorted(MemorisingRouter.scored) == sorted(expected)  # every evaluated query exactly once
    assert result.routers["memorise"].metrics["n"] == len(expected)


def test_learned_router_must_keep_its_operating_points_across_folds() -> None:
    class Drifting(MemorisingRouter):
        def sweep(self, data, rows):  # noqa: ANN001, ANN202
            k = 2 + len(self.train_ids) % 2 + rows[0] % 2
            return RouterSweep(choices=np.zeros((k, len(rows))), knobs=np.arange(k))

    data = ReplayData.from_records(synthetic_records(50))
    with pytest.raises(ValueError, match="different operating points"):
        run_router(Drifting(), data, make_protocol(data, folds=5))


# --- routers --------------------------------------------------------------------------------------

def test_threshold_router_on_an_informative_field() -> None:
    data = ReplayData.from_records(synthetic_records(600))
    result = evaluate(data, ["threshold:score=difficulty", "threshold:score=prompt_words"], n_boot=0)
    # Perfect ordering sends the hardest half to the strong model: PGR 1 at 50% calls, APGR 0.75.
    assert result.routers["threshold:score=difficulty"].metrics["apgr"] > 0.7
    assert result.routers["threshold:score=prompt_words"].metrics["apgr"] > 0.65
    assert result.routers["random"].metrics["apgr"] == pytest.approx(0.5)
    curve = result.routers["threshold:score=difficulty"].curve
    assert curve[0]["strong_pct"] == 0.0 and curve[-1]["strong_pct"] == 100.0


def test_threshold_quantiles_come_from_training_rows() -> None:
    data = ReplayData.from_records(synthetic_records(200))
    diff = np.array([r.model_extra["difficulty"] for r in data.records])
    train = np.flatnonzero(diff < 0.5)  # training rows are all easy
    test = np.flatnonzero(diff >= 0.5)
    sweep = ThresholdRouter(score="difficulty", points=5).fit(data, train).sweep(data, test)
    # Every test query is harder than all training queries: above every threshold but the top one.
    strong = data.candidate_index("model-1")
    share = (sweep.choices == strong).mean(axis=1)
    assert share.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_threshold_many_candidates_uses_the_training_frontier() -> None:
    records = synthetic_records(300, m=3)
    # make model-1 dearer than model-2 yet less accurate: it leaves the frontier
    for r in records:
        r.outcomes["model-1"].cost_usd = 1.0
    data = ReplayData.from_records(records)
    router = ThresholdRouter(score="difficulty").fit(data, np.arange(data.n))
    assert [data.candidates[j] for j in router.frontier_] == ["model-0", "model-2"]
    sweep = router.sweep(data, np.arange(data.n))
    assert set(np.unique(sweep.choices)) <= set(router.frontier_)
    assert (sweep.choices[0] == 0).all() and (sweep.choices[-1] == 2).all()


def test_threshold_bad_field_is_a_user_error() -> None:
    data = ReplayData.from_records(synthetic_records(20))
    with pytest.raises(ValueError, match="score field 'nope': no training record"):
        ThresholdRouter(score="nope").fit(data, np.arange(20))


class OracleProbability(ProbabilisticRouter):
    """Predicts success from the synthetic difficulty (not the outcomes): a good probe."""

    name = "difficulty-probe"

    def fit(self, data, train):  # noqa: ANN001, ANN201
        super().fit(data, train)
        self.fitted_on_ = len(train)
        return self

    def predict_success(self, data, rows):  # noqa: ANN001, ANN201
        d = np.array([data.records[i].model_extra["difficulty"] for i in rows])
        skill = np.linspace(0.5, 1.0, data.m)
        return np.where(d[:, None] < skill[None, :], 0.95, 0.1)


def test_probabilistic_router_two_candidates() -> None:
    data = ReplayData.from_records(synthetic_records(600))
    result = evaluate(data, [OracleProbability()], n_boot=100)
    m = result.routers["difficulty-probe"].metrics
    assert m["apgr"] > 0.7 and m["cpt50"] < 35
    assert m["knob_name"] == "share" and m["knob"] == 0.5


def test_probabilistic_router_utility_sweep_over_many_candidates() -> None:
    data = ReplayData.from_records(synthetic_records(300, m=4))
    router = OracleProbability().fit(data, np.arange(data.n))
    sweep = router.sweep(data, np.arange(data.n))
    p = router.predict_success(data, np.arange(data.n))
    # lambda = 0: most likely to succeed (ties -> cheapest); largest lambda: always the cheapest
    best_p = p.max(axis=1, keepdims=True)
    assert (p[np.arange(data.n), sweep.choices[0]] == best_p[:, 0]).all()
    assert (sweep.choices[-1] == int(np.argmin(router.train_cost_))).all()


def test_probabilistic_router_needs_super_fit() -> None:
    class Forgetful(OracleProbability):
        def fit(self, data, train):  # noqa: ANN001, ANN201
            return self

    data = ReplayData.from_records(synthetic_records(20))
    with pytest.raises(RuntimeError, match="super"):
        Forgetful().fit(data, np.arange(20)).sweep(data, np.arange(20))


def test_make_router_specs() -> None:
    r = make_router("threshold:score=digits,points=11")
    assert isinstance(r, ThresholdRouter) and r.points == 11 and r.learned
    with pytest.raises(KeyError, match="unknown router"):
        make_router("nope")


# --- CLI ------------------------------------------------------------------------------------------

def _invoke(*args: str):  # noqa: ANN202
    return CliRunner().invoke(app, ["replay", "evaluate", *args])


@pytest.fixture()
def replay_file(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.jsonl"
    write_replay(synthetic_records(200), path)
    return path


def test_cli_json_shape(replay_file: Path) -> None:
    result = _invoke(str(replay_file), "--router", "threshold:score=difficulty", "--json", "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"dataset", "n", "cost_unit", "routers"} <= set(doc)
    assert doc["dataset"] == "synthetic" and doc["n"] == 200 and doc["cost_unit"] == "usd"
    assert set(doc["routers"]) == {"model-0", "model-1", "best-single", "random", "oracle",
                                   "threshold:score=difficulty"}
    m = doc["routers"]["threshold:score=difficulty"]
    for key in ("accuracy", "accuracy_ci", "total_cost", "mean_cost", "tokens", "accuracy_per_1k_tokens",
                "cost_of_pass", "tep", "apgr", "cpt50", "cpt80", "aiq", "cost_ratio_at_best_accuracy", "curve"):
        assert key in m, key
    assert set(m["tokens"]) >= {"prompt", "completion", "reasoning", "total"}
    assert len(m["curve"]) == 21 and {"knob", "accuracy", "cost", "strong_pct"} <= set(m["curve"][0])


def test_cli_table_budget_and_report(replay_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _invoke(str(replay_file), "-r", "threshold:score=difficulty", "--budget", "model-1=300",
                     "--report", str(out), "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    assert "threshold:score=difficulty" in result.stdout and "oracle" in result.stdout
    assert "model-1=300" in result.stdout
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "synthetic" in html
    assert (out / "frontier-synthetic.png").stat().st_size > 10_000


def test_cli_candidates_and_budget_change_numbers(replay_file: Path) -> None:
    plain = json.loads(_invoke(str(replay_file), "--json", "--bootstrap", "0").stdout)
    capped = json.loads(_invoke(str(replay_file), "--json", "--bootstrap", "0", "--budget", "model-1=300").stdout)
    assert capped["routers"]["model-1"]["accuracy"] < plain["routers"]["model-1"]["accuracy"]
    assert capped["routers"]["model-1"]["truncation_rate"] > 0
    one = json.loads(_invoke(str(replay_file), "--json", "--bootstrap", "0", "--candidates", "model-0").stdout)
    assert one["candidates"] == ["model-0"] and "random" not in one["routers"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.jsonl"], "not found"),
        (["{file}", "--router", "nope"], "unknown router"),
        (["{file}", "--router", "threshold:score"], "not key=value"),
        (["{file}", "--budget", "model-1"], "CANDIDATE=TOKENS"),
        (["{file}", "--budget", "model-1=many"], "not an integer"),
        (["{file}", "--budget", "ghost=100"], "unknown candidate"),
        (["{file}", "--candidates", "model-0,ghost"], "unknown candidate"),
        (["{file}", "--baseline", "ghost"], "unknown candidate"),
        (["{file}", "--folds", "1"], "--folds"),
        (["{file}", "--router", "threshold:score=gold"], "score field"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(replay_file: Path, args: list[str], needle: str) -> None:
    result = _invoke(*[a.format(file=replay_file) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_cli_bad_line_and_skip_invalid(replay_file: Path) -> None:
    with replay_file.open("a") as fh:
        fh.write('{"id": "bad", "prompt": "p", "outcomes": {"model-0": {"score": 2}}}\n')
    result = _invoke(str(replay_file), "--json")
    assert result.exit_code == 2
    assert "synthetic.jsonl:201" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _invoke(str(replay_file), "--json", "--skip-invalid", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 200
    assert "skipped 1 invalid line" in result.stderr


def test_aiq_replicates_are_paired_across_routers() -> None:
    """Each router's AIQ bootstrap replicates resample the same queries: the random mix's replicates
    follow from the two candidates' (paired), an informative router's differ; none reach the JSON."""
    data = ReplayData.from_records(synthetic_records(400))
    result = evaluate(data, ["threshold:score=difficulty"], n_boot=300)
    r = result.routers
    good, rand = r["threshold:score=difficulty"].replicates["aiq"], r["random"].replicates["aiq"]
    assert good.shape == rand.shape == (300,)
    lo, hi = r["threshold:score=difficulty"].metrics["aiq_ci"]
    assert lo <= float(np.median(good)) <= hi
    # Paired: the difference is tighter than either interval would suggest if they were independent.
    diff = good - rand
    assert diff.std() < np.hypot(good.std(), rand.std())
    assert "replicates" not in r["random"].to_json()


def test_gain_share_test_of_the_learning_loop_bench() -> None:
    from triage.eval.bench import learning_loop as mod

    rng = np.random.default_rng(0)
    rand = 0.70 + rng.normal(0, 0.01, 1000)
    full = rand + 0.05 + rng.normal(0, 0.002, 1000)
    met = mod.gain_share_test(full - 0.001, rand, full)
    assert met["goal_verdict_on_test_rows"] == "met" and 0.9 < met["ci"][0] < met["ci"][1] < 1.0
    missed = mod.gain_share_test(rand + 0.01, rand, full)
    assert missed["goal_verdict_on_test_rows"] == "missed" and missed["ci"][1] < 0.5
    noisy = mod.gain_share_test(rand + 0.045 + rng.normal(0, 0.03, 1000), rand, full)
    assert noisy["goal_verdict_on_test_rows"] == "undecided"
    assert mod.gain_share_test(np.zeros(0), np.zeros(0), np.zeros(0)) == {}
