"""LM cascades on output uncertainty: the ``cascade-uncertainty`` replay router, the evaluator's
cascade cost (``RouterSweep.paid_first``), the equal-cost comparison, the replay-set builder on a
real local generation, and the committed GSM8K local-pair replay file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from triage.eval.cascade_compare import accuracy_at_cost, compare
from triage.eval.cascade_data import (
    TOKEN_FIELDS,
    _done_ids,
    answer_start,
    build_record,
    last_result_agrees,
    local_cost,
    outcome_tokens,
)
from triage.eval.evaluation import evaluate
from triage.eval.evaluation.outcomes import OutcomeTable, RoutedOutcomes
from triage.eval.metrics.cost import cost_axis
from triage.eval.routers import make_router
from triage.eval.routers.base import RouterSweep

from triage.replay.io import read_replay
from triage.replay.matrix import ReplayData
from triage.replay.schema import Outcome, ReplayRecord
from triage.token_router.gsm8k import (
    Problem,
    extract_answer,
    load_problems,
    same_answer,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "eval" / "data" / "gsm8k_local_pair.jsonl"


def _tokens(n: int, entropy: float, logprob: float) -> dict[str, list[float]]:
    return {"token_logprobs": [logprob] * n, "token_entropies": [entropy] * n,
            "token_top1_logprobs": [max(logprob, -0.05)] * n}


def synthetic(n: int = 120, seed: int = 0, *, informative: bool = True) -> ReplayData:
    """Small fails on ~40% of queries; with ``informative`` its answers are then uncertain (high
    entropy, low log-probs) and otherwise confident; the large model is always right."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        fails = rng.random() < 0.4
        unsure = fails if informative else rng.random() < 0.4
        ent = rng.uniform(1.5, 2.5) if unsure else rng.uniform(0.0, 0.4)
        lp = -rng.uniform(1.0, 2.0) if unsure else -rng.uniform(0.0, 0.1)
        small = Outcome(score=0.0 if fails else 1.0, cost_usd=1.0, prompt_tokens=10, completion_tokens=20,
                        **_tokens(20, ent, lp), answer_start=None, last_result_agrees=None)
        large = Outcome(score=1.0, cost_usd=3.0, prompt_tokens=10, completion_tokens=20)
        records.append(ReplayRecord(id=f"q{i}", prompt=f"question {i:04d}",  # one length: no query signal
                                    outcomes={"small": small, "large": large}))
    return ReplayData.from_records(records, name="synthetic")


# -- the router ---------------------------------------------------------------------------------

@pytest.mark.parametrize("signals", ["first_k", "answer", "both"])
def test_router_escalates_the_uncertain_answers(signals: str) -> None:
    data = synthetic()
    train, test = np.arange(0, 80), np.arange(80, 120)
    router = make_router(f"cascade-uncertainty:signals={signals}").fit(data, train)
    sweep = router.sweep(data, test)
    small, large = data.candidate_index("small"), data.candidate_index("large")
    assert sweep.paid_first == small and sweep.knob_name == "escalation_share"
    fails = data.score[test, small] == 0
    share = fails.mean()
    k = int(np.argmin(np.abs(sweep.knobs - share)))
    escalated = sweep.choices[k] == large
    # at the failure rate's share the escalated queries are (almost exactly) the failing ones
    assert (escalated == fails).mean() >= 0.95
    assert (sweep.choices[0] == small).all() and (sweep.choices[-1] == large).all()


def test_router_fit_reads_training_rows_only() -> None:
    data = synthetic()
    train, test = np.arange(0, 80), np.arange(80, 120)
    # the held-out rows' labels and token arrays scrambled: the fitted model must not change
    scrambled = synthetic()
    for i in test:
        rec = scrambled.records[i]
        rec.outcomes["small"].score = 1.0 - rec.outcomes["small"].score
        extra = rec.outcomes["small"].model_extra
        extra["token_entropies"] = [9.0] * len(extra["token_entropies"])
    scrambled = ReplayData.from_records(scrambled.records)
    a = make_router("cascade-uncertainty").fit(data, train).p_fail(data, test)
    b = make_router("cascade-uncertainty").fit(scrambled, train).p_fail(data, test)
    np.testing.assert_allclose(a, b)
    # ...while the training rows' labels do change it
    flipped = synthetic()
    for i in train[:20]:
        flipped.records[i].outcomes["small"].score = 1.0 - flipped.records[i].outcomes["small"].score
    c = make_router("cascade-uncertainty").fit(ReplayData.from_records(flipped.records), train).p_fail(data, test)
    assert not np.allclose(a, c)


def test_router_without_signal_is_no_better_than_chance() -> None:
    data = synthetic(n=400, informative=False)
    res = evaluate(data, ["cascade-uncertainty"], folds=5, n_boot=0)
    apgr = res.routers["cascade-uncertainty"].metrics["apgr"]
    assert abs(apgr - 0.5) < 0.12  # a random escalation order gives 0.5


def test_router_refuses_data_without_token_arrays() -> None:
    records = [ReplayRecord(id=f"q{i}", prompt="p", outcomes={"a": Outcome(score=1.0), "b": Outcome(score=0.0)})
               for i in range(6)]
    with pytest.raises(ValueError, match="token arrays"):
        make_router("cascade-uncertainty").fit(ReplayData.from_records(records), np.arange(4))
    with pytest.raises(ValueError, match="signals"):
        make_router("cascade-uncertainty:signals=nope").fit(synthetic(), np.arange(50))


# -- the evaluator: a cascade pays both calls when it escalates ---------------------------------

def test_escalated_queries_pay_small_plus_large() -> None:
    data = synthetic(n=10)
    rows = np.arange(10)
    table = OutcomeTable.build(data, cost_axis(data), rows)
    choices = np.array([[0] * 10, [0] * 5 + [1] * 5])  # point 1: the last five escalated
    plain = RoutedOutcomes.of(table, RouterSweep(choices=choices, knobs=[0.0, 0.5]))
    cascade = RoutedOutcomes.of(table, RouterSweep(choices=choices, knobs=[0.0, 0.5], paid_first=0))
    assert plain.curve["cost"][1].tolist() == [1.0] * 5 + [3.0] * 5
    assert cascade.curve["cost"][1].tolist() == [1.0] * 5 + [4.0] * 5
    np.testing.assert_array_equal(cascade.curve["score"], plain.curve["score"])  # the final answer's
    res = evaluate(data, ["cascade-uncertainty"], folds=2, n_boot=0)
    curve = res.routers["cascade-uncertainty"].curve
    assert curve[-1]["cost"] == pytest.approx(4.0) and curve[0]["cost"] == pytest.approx(1.0)
    assert curve[-1]["mean_tokens"] == pytest.approx(60.0)  # (10 + 20) twice


def test_equal_cost_comparison() -> None:
    data = synthetic(n=200)
    res = compare(data, query_only="threshold:score=prompt_chars", n_boot=200)
    assert res["small"] == "small" and len(res["points"]) == 21
    mid = [p for p in res["points"] if 0.25 <= p["escalation_share"] <= 0.45]
    # uncertainty finds the failures; every prompt has one length, so the query-only router can only
    # mix the two models: at equal cost the cascade is ahead, with intervals above 0
    assert all(p["difference"] > 0.08 and p["difference_ci"][0] > 0 for p in mid)
    assert res["mean_difference_within_query_only_cost_range"] > 0 and res["mean_difference_ci"][0] > 0
    assert res["small_failure_auroc"]["cascade"]["auroc"] > 0.95
    assert res["small_failure_auroc"]["query_only"]["auroc"] == pytest.approx(0.5)
    assert accuracy_at_cost(np.array([1.0, 3.0]), np.array([0.2, 0.6]), 2.0) == pytest.approx(0.4)
    assert accuracy_at_cost(np.array([1.0, 3.0]), np.array([0.2, 0.6]), 5.0) == pytest.approx(0.6)
    assert math.isnan(accuracy_at_cost(np.array([1.0, 3.0]), np.array([0.2, 0.6]), 0.5))


# -- the record builder ---------------------------------------------------------------------------

def test_answer_signals() -> None:
    assert answer_start(["x = 3", "\nThe ", "answer", " is", " 3."]) == 2
    assert answer_start(["The answ", "er is 3", ". The answer is", " 4"]) == 2  # the last marker
    assert answer_start(["no", " marker"]) is None
    assert last_result_agrees("2 + 1 = 3\nThe answer is 3.", 3.0) is True
    assert last_result_agrees("2 + 1 = 3\nThe answer is 4.", 4.0) is False
    assert last_result_agrees("2 + 1 = 3", 3.0) is None  # nothing stated: the fallback agrees with itself
    assert last_result_agrees("\\[ 5 - 2 = 3 \\]\n\\boxed{3}", 3.0) is True


def test_record_from_a_real_local_generation(tmp_path: Path) -> None:
    from triage.eval.cascade_data import messages_for, system_prompt
    from triage.probes.features.output_uncertainty import (
        tokens_from_local,
        uncertainty_stats,
    )

    from triage.lm import get_local_lm
    from triage.settings import get_settings

    problem = load_problems(get_settings().data_dir / "gsm8k" / "test.jsonl", 0, 1)[0]
    lm = get_local_lm("smollm2-135m", engine="onnx")
    msgs = messages_for(system_prompt(), problem.question)
    short = lm.generate(msgs, max_tokens=24, temperature=0.0)
    longer = lm.generate(msgs, max_tokens=32, temperature=0.0)
    record = build_record(problem, ("a", short), ("b", longer), params_b={"a": 0.1, "b": 0.3})
    path = tmp_path / "r.jsonl"
    path.write_text(record.model_dump_json() + "\n", encoding="utf-8")
    back = read_replay(path)[0]
    small = back.outcomes["a"]
    extra = small.model_extra
    assert len(extra["token_logprobs"]) == len(short.tokens) > 0
    assert extra["token_logprobs"] == [round(t.logprob, 3) for t in short.tokens]
    assert small.completion_tokens == short.completion_tokens and small.truncated == short.truncated
    assert small.cost_usd == pytest.approx(local_cost(0.1, short.prompt_tokens, short.completion_tokens))
    assert back.outcomes["b"].cost_usd > small.cost_usd
    assert not any(f in (back.outcomes["b"].model_extra or {}) for f in TOKEN_FIELDS)
    assert small.score == (1.0 if same_answer(extract_answer(short.text), problem.answer) else 0.0)
    np.testing.assert_allclose(uncertainty_stats(outcome_tokens(small), 16),
                               uncertainty_stats(tokens_from_local(short.tokens), 16), atol=2e-3)
    assert back.gold == "18" and back.id == "gsm8k-test/0"


def test_resume_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = ReplayRecord(id="gsm8k-test/0", prompt="p", outcomes={"a": Outcome(score=1.0)}).model_dump_json()
    path.write_text(good + "\n" + good[:17], encoding="utf-8")
    assert _done_ids(path) == {"gsm8k-test/0"}
    assert path.read_text(encoding="utf-8") == good + "\n"


# -- the committed replay set ---------------------------------------------------------------------

def test_committed_replay_file() -> None:
    records = read_replay(COMMITTED)
    manifest = json.loads(COMMITTED.with_suffix(".json").read_text(encoding="utf-8"))
    assert len(records) == manifest["questions"] >= 30
    assert set(manifest["models"]) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert all(len(m["sha256"]) == 64 for m in manifest["models"].values())
    assert manifest["max_new_tokens"] == 192 and manifest["prompt"].endswith("'The answer is N.'")
    problems = {f"gsm8k-test/{p.index}": p for p in load_problems(
        ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl", 0, len(records) + 5)}
    for r in records:
        p: Problem = problems[r.id]
        assert r.gold is not None and float(r.gold) == p.answer
        for o in r.outcomes.values():
            extra = o.model_extra
            assert o.score == (1.0 if same_answer(extract_answer(extra["text"]), p.answer) else 0.0)
            assert o.cost_usd > 0 and o.completion_tokens <= 192 + 1
        small = r.outcomes["qwen2.5-coder-0.5b"]
        n_tok = len(outcome_tokens(small))
        assert n_tok in (small.completion_tokens, small.completion_tokens - 1)  # end-of-turn not stored
    data = ReplayData.from_records(records)
    res = evaluate(data, ["cascade-uncertainty"], folds=5, n_boot=0)
    curve = res.routers["cascade-uncertainty"].curve
    costs = data.cost.mean(axis=0)
    assert curve[-1]["cost"] == pytest.approx(costs.sum())  # everything escalated: both paid
