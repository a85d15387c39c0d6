"""What the probe reads: the last user turn (triage.probe_input), and the agent-stack invariance
it buys - a long system prompt or unrelated earlier turns do not change a question's tier."""

from __future__ import annotations

import pytest

from triage.probe_input import probe_input
from triage.replay import ReplayRecord
from triage.router.core.messages import probe_text


def test_the_last_user_turn_is_read_and_nothing_else():
    chat = [
        {"role": "system", "content": "You are a very long system prompt about logistics."},
        {"role": "user", "content": "Prove that there are infinitely many primes."},
        {"role": "assistant", "content": "Suppose finitely many..."},
        {"role": "user", "content": [{"type": "text", "text": "thanks,"}, {"type": "text", "text": "just say ok"}]},
    ]
    assert probe_input(chat) == "thanks,\njust say ok"
    # tool results and assistant turns after the question do not replace it
    agent = [*chat[:2], {"role": "assistant", "content": None, "tool_calls": []},
             {"role": "tool", "tool_call_id": "1", "content": "result: 42"}]
    assert probe_input(agent) == "Prove that there are infinitely many primes."
    # an image-only last turn: the last user turn with text
    image = [*chat[:2], {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert probe_input(image) == "Prove that there are infinitely many primes."
    # no user turn at all: every non-empty message (completion-style prompts)
    assert probe_input([{"role": "system", "content": "Summarise:"}, {"role": "assistant", "content": ""},
                        {"role": "developer", "content": "text"}]) == "Summarise:\ntext"
    assert probe_input([{"role": "user", "content": "   "}]) == ""


def test_sdk_and_replay_read_the_same_text():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Q?"}]},
            {"role": "assistant", "content": ""}, {"role": "user", "content": "More"}]
    rec = ReplayRecord(id="x", prompt=chat, outcomes={"m": {"score": 1.0}})
    assert probe_text(chat) == rec.prompt_text() == "More"


@pytest.fixture(scope="module")
def router():
    from triage.router.core import Router

    return Router.from_file()  # policies/examples/local.yaml with the (session) default probe


@pytest.fixture(scope="module")
def questions():
    from triage.eval.bench.probe_invariance import _questions

    return _questions(50)


@pytest.mark.parametrize("dataset", ["gsm8k", "routerbench"])
def test_a_system_prompt_or_prior_turns_do_not_change_the_tier(router, questions, dataset):
    from triage.eval.probe_invariance import CONTEXTS, tier_invariance

    result = tier_invariance(router, questions[dataset])
    assert result.n == 50 and set(result.changed) == set(CONTEXTS)
    assert all(rate <= 0.05 for rate in result.change_rate.values()), result.summary()


def test_the_probe_sees_a_different_question_as_different(router):
    """The invariance is not a probe that ignores its input: other questions, other outputs."""
    from triage.eval.probe_invariance import in_context

    easy = router.route_detailed(in_context("What is 2 + 2?", "system_prompt")).probe_output
    hard = router.route_detailed(in_context(
        "Let f be a continuous function on [0, 1] with f(0) = f(1). Prove that for every positive integer n "
        "there is x with f(x) = f(x + 1/n).", "system_prompt")).probe_output
    assert easy.tier_probs != hard.tier_probs
