"""Graders: outcomes attached without a person (issue #15, "Outcomes").

* Each rule grader (exact, regex, numeric) on real GSM8K gold (``../shared/data/gsm8k``: the test
  split's ``#### N`` gold and four GPT-3 models' solutions with the paper's own correctness labels):
  the graders agree with the labels, and the gold's worked solution grades itself correct.
* Hostile input: a backtracking pattern on a long answer stops at its deadline (no outcome,
  ``regex_timeout``); multi-megabyte answers are graded in well under a second; a bad pattern or
  option is refused with one line.
* Request time: a real Router (policies/examples/local.yaml + a ``grader:`` block, SmolLM2) with a
  real SQLite ledger records ``metadata.gold`` and the answer and attaches an outcome with source
  ``grader:numeric`` whose score is the grader's verdict on the returned text; no gold, no outcome;
  a bad gold is refused before anything is called.
* ``triage ledger grade`` on a real SQLite and PostgreSQL ledger: attaches outcomes to records with
  gold and a stored answer, counts what it skipped, never grades a record twice.
* The judge: prompt version, tokens and cost recorded with the outcome (a judge upstream on loopback
  with a set price); an unparseable reply gives no outcome and is counted; the real local model
  (SmolLM2) runs through the same plumbing (it judges badly: only the mechanics are checked).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.support.ledger import make_record
from tests.support.sidecar import LOCAL_POLICY
from triage.errors import ConfigError
from triage.router.ledger import open_ledger
from triage.router.ledger.graders import GRADERS, GradeInput, build_grader
from triage.router.ledger.graders.judge import parse_verdict, prompt_version

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
CONFIGS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
N_ROWS = 300


@pytest.fixture(scope="module")
def gsm8k() -> list[dict[str, Any]]:
    """The first N_ROWS test questions: gold (the test split's worked answer) + the models' solutions."""
    test = [json.loads(x) for x in (GSM8K / "test.jsonl").read_text().splitlines()[:N_ROWS]]
    sols = [json.loads(x) for x in (GSM8K / "example_model_solutions.jsonl").read_text().splitlines()[:N_ROWS]]
    assert [t["question"] for t in test] == [s["question"] for s in sols]
    return [{"question": t["question"], "gold": t["answer"], **{c: s[c] for c in CONFIGS},
             "ground_truth": s["ground_truth"]} for t, s in zip(test, sols)]


def _agreement(grader: Any, rows: list[dict[str, Any]], answer_of: Any) -> float:
    agree = n = 0
    for row in rows:
        for c in CONFIGS:
            v = grader(GradeInput(answer=answer_of(row[c]["solution"]), gold=row["gold"]))
            assert v.score in (0.0, 1.0), v
            agree += (v.score == 1.0) == row[c]["is_correct"]
            n += 1
    return agree / n


# ---- rule graders on real GSM8K gold ----------------------------------------------------------

def test_registry_lists_the_graders_and_refuses_bad_configs() -> None:
    assert {"exact", "regex", "numeric", "judge"} <= set(GRADERS.names())
    with pytest.raises(ConfigError, match="unknown grader 'nope'"):
        build_grader({"type": "nope"})
    with pytest.raises(ConfigError, match="tolerance"):
        build_grader({"type": "numeric", "tolerance": -1})
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        build_grader({"type": "regex", "pattern": "(unclosed"})
    with pytest.raises(ConfigError, match="pattern"):
        build_grader({"type": "regex", "pattern": "a" * 1001})


def test_numeric_grader_agrees_with_the_gsm8k_labels(gsm8k: list[dict[str, Any]]) -> None:
    numeric = build_grader({"type": "numeric"})
    # the gold's own worked solution ("... #### 72") against the gold: always correct
    assert all(numeric(GradeInput(answer=r["gold"], gold=r["gold"])).score == 1.0 for r in gsm8k)
    assert all(numeric(GradeInput(answer=r["ground_truth"], gold=r["gold"])).score == 1.0 for r in gsm8k)
    # the models' solutions: the paper's labels are final-answer matches
    assert _agreement(numeric, gsm8k, lambda s: s) >= 0.99
    v = numeric(GradeInput(answer="She makes 9 * 2 = $<<9*2=18>>18 every day.\nA: 18", gold="...\n#### 18"))
    assert v.score == 1.0 and v.detail["answer_number"] == 18.0 and v.detail["grader"] == "numeric"
    assert numeric(GradeInput(answer="A: 19", gold="#### 18")).score == 0.0
    assert build_grader({"type": "numeric", "tolerance": 1})(GradeInput(answer="A: 19", gold="#### 18")).score == 1.0
    assert numeric(GradeInput(answer="I do not know", gold="#### 18")).score == 0.0
    assert numeric(GradeInput(answer="1,234.5 dollars", gold="$1,234.50")).score == 1.0
    no_gold = numeric(GradeInput(answer="A: 18", gold=None))
    assert no_gold.score is None and no_gold.reason == "no_gold"
    assert numeric(GradeInput(answer="A: 18", gold="Paris")).reason == "gold_not_numeric"


def test_exact_and_regex_graders_agree_with_the_gsm8k_labels(gsm8k: list[dict[str, Any]]) -> None:
    exact = build_grader({"type": "exact"})
    final_line = lambda s: s.strip().splitlines()[-1].removeprefix("A:").strip()  # noqa: E731
    assert _agreement(exact, gsm8k, final_line) >= 0.99
    assert exact(GradeInput(answer="  **Paris**.", gold="paris")).score == 1.0
    assert build_grader({"type": "exact", "case_sensitive": True})(GradeInput(answer="paris", gold="Paris")).score == 0.0
    regex = build_grader({"type": "regex", "pattern": r"A:\s*(?P<answer>-?[\d,.]+)"})
    assert _agreement(regex, gsm8k, lambda s: s) >= 0.99
    v = regex(GradeInput(answer="no final line here", gold="#### 3"))
    assert v.score == 0.0 and v.detail["matched"] is None


# ---- hostile input ----------------------------------------------------------------------------

def test_a_backtracking_pattern_stops_at_its_deadline() -> None:
    grader = build_grader({"type": "regex", "pattern": r"(\w+\s?)+$", "timeout_s": 0.1})
    t0 = time.perf_counter()
    v = grader(GradeInput(answer="a" * 20_000 + "!", gold="x"))
    took = time.perf_counter() - t0
    assert v.score is None and v.reason == "regex_timeout"
    assert took < 1.5, took


def test_huge_answers_are_graded_quickly() -> None:
    huge = "1" * 2_000_000 + " and the answer is 42"
    for spec in ({"type": "numeric"}, {"type": "exact"}, {"type": "regex", "pattern": r"answer is (\d+)"}):
        t0 = time.perf_counter()
        v = build_grader(spec)(GradeInput(answer=huge, gold="#### 42"))
        assert time.perf_counter() - t0 < 1.0, spec
        assert v.score == (0.0 if spec["type"] == "exact" else 1.0), (spec, v)
    # a run of digit groups that a naive number pattern would backtrack over
    t0 = time.perf_counter()
    build_grader({"type": "numeric"})(GradeInput(answer="1," * 500_000 + ".", gold="1"))
    assert time.perf_counter() - t0 < 1.0


# ---- the judge --------------------------------------------------------------------------------

class JudgeUpstream:
    """An OpenAI-compatible judge on loopback: CORRECT when the answer contains the reference's
    final number, INCORRECT otherwise, and a reply no parser accepts when the question says RAMBLE."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                outer.requests.append(req)
                user = req["messages"][-1]["content"]
                answer = user.split("Answer to grade:\n", 1)[1].split("\n\n", 1)[0]
                ref = user.split("#### ", 1)[1].split("\n", 1)[0] if "#### " in user else "?"
                text = ("I am not sure, it depends." if "RAMBLE" in user
                        else "VERDICT: CORRECT" if ref in answer else "VERDICT: INCORRECT")
                body = json.dumps({"id": "j", "object": "chat.completion", "created": 0, "model": "judge",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": 100, "completion_tokens": 5,
                                             "total_tokens": 105}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def judge_upstream():
    up = JudgeUpstream()
    yield up
    up.close()


PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 10.0}  # 100 + 5 tokens -> $0.00025


def test_judge_verdicts_carry_their_prompt_version_tokens_and_cost(judge_upstream: JudgeUpstream) -> None:
    judge = build_grader({"type": "judge", "model": "openai/judge", "api_base": judge_upstream.base,
                          "price": PRICE})
    q = [{"role": "user", "content": "Janet has 16 eggs..."}]
    right = judge(GradeInput(answer="so she makes 18", gold="... #### 18", question=q))
    wrong = judge(GradeInput(answer="so she makes 26", gold="... #### 18", question=q))
    ramble = judge(GradeInput(answer="18", gold="#### 18", question=[{"role": "user", "content": "RAMBLE"}]))
    assert (right.score, wrong.score, ramble.score, ramble.reason) == (1.0, 0.0, None, "unparseable")
    for v in (right, wrong, ramble):
        d = v.detail
        assert d["prompt_version"] == judge.prompt_version and d["prompt_version"].startswith("judge-")
        assert (d["judge_prompt_tokens"], d["judge_completion_tokens"]) == (100, 5)
        assert d["judge_cost_usd"] == pytest.approx(0.00025)
    sent = judge_upstream.requests[0]["messages"]
    assert "Reference answer:\n... #### 18" in sent[-1]["content"] and "Janet has 16 eggs" in sent[-1]["content"]
    # another prompt, another version
    other = build_grader({"type": "judge", "model": "openai/judge", "prompt": "Q {question} A {answer} {reference}"})
    assert other.prompt_version != judge.prompt_version == prompt_version(judge.options.system_prompt, judge.template)


def test_parse_verdict_is_strict() -> None:
    assert [parse_verdict(x) for x in ("VERDICT: CORRECT", "**Verdict:** incorrect.", "yes", "Score: 0.25",
                                       "VERDICT: INCORRECT\nVERDICT: CORRECT")] == [1.0, 0.0, 1.0, 0.25, 1.0]
    assert [parse_verdict(x) for x in ("", "maybe", "the verdict is unclear", "Score: 7", "correctness matters")] \
        == [None] * 5


# ---- request time: a real Router, the local model, a real ledger -----------------------------

def _policy_with(tmp_path: Path, grader: dict[str, Any]) -> Path:
    spec = yaml.safe_load(LOCAL_POLICY.read_text())
    spec["grader"] = grader
    for s in spec["strategies"].values():  # short answers keep the local model fast
        s["max_tokens"] = 24
        s["on_truncation"] = "accept"
    spec.pop("budgets", None)
    path = tmp_path / "graded.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_request_time_grading_through_a_real_router(tmp_path: Path) -> None:
    from triage import Router
    from triage.router.core.fields import UnsupportedFieldError

    ledger = tmp_path / "ledger.sqlite"
    numeric = build_grader({"type": "numeric"})
    with Router.from_file(_policy_with(tmp_path, {"type": "numeric"}), ledger=str(ledger), store_prompts=True) as router:
        q = [{"role": "user", "content": "What is 2 + 2? Answer with the number."}]
        graded = router.completion(messages=q, metadata={"gold": "4"})
        plain = router.completion(messages=q)
        with pytest.raises(UnsupportedFieldError, match="metadata.gold"):
            router.completion(messages=q, metadata={"gold": {"not": "text"}})
        with pytest.raises(UnsupportedFieldError, match="longer than"):
            router.completion(messages=q, metadata={"gold": "9" * 5000})
        assert router.grading.counts["graded"] == 1 and router.grading.counts["no_gold"] == 1
    text = graded.choices[0].message.content
    rid, rid_plain = graded._hidden_params["triage"]["request_id"], plain._hidden_params["triage"]["request_id"]
    with open_ledger(str(ledger)) as store:
        assert store.count() == 2  # the refused requests called nothing and recorded nothing
        rec = store.get(rid)
        assert rec.metadata["gold"] == "4" and rec.metadata["answer"] == text
        [outcome] = store.outcomes(rid)
        assert outcome.source == "grader:numeric"
        assert outcome.score == numeric(GradeInput(answer=text, gold="4")).score
        assert outcome.detail["grader"] == "numeric"
        assert store.outcomes(rid_plain) == []
        assert "gold" not in store.get(rid_plain).metadata


def test_answers_are_not_kept_without_store_prompts(tmp_path: Path) -> None:
    from triage import Router

    ledger = tmp_path / "ledger.sqlite"
    with Router.from_file(_policy_with(tmp_path, {"type": "exact"}), ledger=str(ledger)) as router:
        r = router.completion(messages=[{"role": "user", "content": "Say hi."}], metadata={"gold": "hi"})
    with open_ledger(str(ledger)) as store:
        rec = store.get(r._hidden_params["triage"]["request_id"])
        assert "answer" not in rec.metadata and rec.prompt is None and rec.metadata["gold"] == "hi"
        assert [o.source for o in store.outcomes(rec.request_id)] == ["grader:exact"]  # graded all the same


# ---- the CLI: `triage ledger grade` on real ledgers ------------------------------------------

def _seed(url: str, gsm8k: list[dict[str, Any]], n: int = 40) -> dict[str, bool]:
    """n records answered by the 175B fine-tuned model (gold + stored answer), plus records without
    gold, without an answer, a failed one and one already scored; returns the expected label per id."""
    expected = {}
    recs = []
    for i, row in enumerate(gsm8k[:n]):
        sol = row["175b_finetuning"]
        recs.append(make_record(i, prompt=[{"role": "user", "content": row["question"]}],
                                metadata={"gold": row["gold"], "answer": sol["solution"]}))
        expected[recs[-1].request_id] = sol["is_correct"]
    recs.append(make_record(n, metadata={"answer": "A: 3"}))  # no gold
    recs.append(make_record(n + 1, metadata={"gold": "#### 3"}))  # no stored answer
    recs.append(make_record(n + 2, metadata={"gold": "#### 3", "answer": "A: 3"}, error="boom"))
    recs.append(make_record(n + 3, metadata={"gold": "#### 3", "answer": "A: 3"}))
    with open_ledger(url) as store:
        store.write_records(recs)
        from triage.router.ledger.records import OutcomeRecord

        store.add_outcome(OutcomeRecord(request_id=recs[-1].request_id, score=0.0, source="user"))
    return expected


def _grade(*args: str) -> Any:
    from triage.router.cli.main import app

    return CliRunner().invoke(app, ["ledger", "grade", *args])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_cli_grades_records_with_gold_and_a_stored_answer(backend: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path, gsm8k: list[dict[str, Any]]) -> None:
    url = str(tmp_path / "ledger.sqlite") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    expected = _seed(url, gsm8k)
    res = _grade("--grader", "numeric", "--ledger", url, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["graded"] == len(expected) and out["grader"] == "grader:numeric"
    assert out["skipped"] == {"already_scored": 1, "failed_request": 1, "no_answer": 1, "no_gold": 1}
    with open_ledger(url) as store:
        for rid, ok in expected.items():
            [o] = store.outcomes(rid)
            assert o.source == "grader:numeric" and o.detail["grader_version"] == "1"
        agree = sum((store.outcomes(rid)[0].score == 1.0) == ok for rid, ok in expected.items())
        assert agree >= len(expected) - 1
    again = _grade("--grader", "regex", "--pattern", r"A:\s*(\S+)", "--ledger", url)
    assert again.exit_code == 0, again.output
    assert "graded 0 records with grader:regex" in again.output and "41 already scored" in again.output


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, gsm8k: list[dict[str, Any]]) -> None:
    url = str(tmp_path / "ledger.sqlite")
    _seed(url, gsm8k, n=2)
    cases = [(["--grader", "regex", "--pattern", "(x", "--ledger", url], "not a valid regular expression"),
             (["--grader", "regex", "--ledger", url], "pattern"),
             (["--grader", "numeric", "--option", "bogus=1", "--ledger", url], "bogus"),
             (["--grader", "numeric", "--option", "novalue", "--ledger", url], "KEY=VALUE"),
             (["--grader", "numeric", "--ledger", str(tmp_path / "missing.sqlite")], "no ledger at"),
             (["--grader", "numeric", "--ledger", url, "--since", "yesterday"], "--since")]
    for args, needle in cases:
        res = _grade(*args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, (args, res.output)


def test_cli_judge_records_cost_and_counts_unparseable(tmp_path: Path, judge_upstream: JudgeUpstream,
                                                      gsm8k: list[dict[str, Any]]) -> None:
    url = str(tmp_path / "ledger.sqlite")
    expected = _seed(url, gsm8k, n=6)
    with open_ledger(url) as store:  # one whose question makes the judge ramble
        store.write_records([make_record(99, prompt="RAMBLE", metadata={"gold": "#### 1", "answer": "1"})])
    res = _grade("--grader", "judge", "--model", "openai/judge", "--option", f"api_base={judge_upstream.base}",
                 "--option", json.dumps(PRICE).join(["price=", ""]), "--ledger", url, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["graded"] == 6 and out["skipped"]["unparseable"] == 1
    assert out["judge"]["prompt_tokens"] == 700 and out["judge"]["cost_usd"] == pytest.approx(7 * 0.00025)
    with open_ledger(url) as store:
        for rid, ok in expected.items():
            [o] = store.outcomes(rid)
            assert o.source == "grader:judge" and o.detail["judge_cost_usd"] == pytest.approx(0.00025)
            assert o.detail["prompt_version"] == out["judge"]["prompt_version"]
        assert store.outcomes("req-000099") == []
    fresh = str(tmp_path / "fresh.sqlite")  # every record above has its outcome now
    _seed(fresh, gsm8k, n=4)
    down = _grade("--grader", "judge", "--model", "openai/judge", "--option", "api_base=http://127.0.0.1:9/v1",
                  "--option", "timeout_s=2", "--ledger", fresh)
    assert down.exit_code == 2 and "failed 3 times and graded nothing" in down.output


def test_judge_plumbing_with_the_real_local_model(tmp_path: Path, gsm8k: list[dict[str, Any]]) -> None:
    """SmolLM2-135M as the judge: whatever it says is either a parsed outcome with its tokens and
    zero cost (a local model), or counted as unparseable - never a guess, never a crash."""
    url = str(tmp_path / "ledger.sqlite")
    _seed(url, gsm8k, n=3)
    res = _grade("--grader", "judge", "--model", "local/smollm2-135m", "--option", "max_tokens=8",
                 "--ledger", url, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["graded"] + out["skipped"].get("unparseable", 0) == 3
    assert out["judge"]["prompt_tokens"] > 100 and out["judge"]["completion_tokens"] > 0
    assert out["judge"]["cost_usd"] == 0.0
    with open_ledger(url) as store:
        for entry in store.iter_entries():
            if entry.outcome is not None and entry.outcome.source == "grader:judge":
                assert entry.outcome.detail["judge_model"] == "local/smollm2-135m"
                assert entry.outcome.detail["judge_cost_usd"] == 0.0


def test_sidecar_keeps_metadata_gold_for_the_ledger_and_refuses_a_bad_one() -> None:
    """The sidecar's body check (before routing): metadata.gold reaches the router (which records it
    and never forwards metadata upstream); a gold that is not text is a 400 naming metadata.gold."""
    from triage.router.core.calls import Step, build_kwargs
    from triage.policies.strategy import Strategy
    from triage.router.sidecar.chat import upstream_kwargs
    from triage.router.sidecar.errors import SidecarError
    from triage.router.sidecar.openai_schema import ChatCompletionRequest

    msgs = [{"role": "user", "content": "2+2?"}]
    ok = upstream_kwargs(ChatCompletionRequest(model="triage", messages=msgs,
                                               metadata={"gold": "4", "trace": "t-1"}), 30.0)
    assert ok["metadata"] == {"gold": "4"}
    forwarded = build_kwargs(Strategy(name="s", model="openai/x", api_base="http://127.0.0.1:9/v1"),
                             Step("s", "primary", 8), msgs, ok)
    assert "metadata" not in forwarded
    assert "metadata" not in upstream_kwargs(ChatCompletionRequest(model="triage", messages=msgs,
                                                                   metadata={"trace": "t-1"}), 30.0)
    with pytest.raises(SidecarError) as err:
        upstream_kwargs(ChatCompletionRequest(model="triage", messages=msgs, metadata={"gold": ["4"]}), 30.0)
    assert err.value.status == 400 and err.value.param == "metadata.gold"
