"""The bandit-information bench: the logged exports it builds are what a uniformly random logger
with (or without) a cheap shadow writes, the logged-data trainer reads them as such, and the bench
runs end to end on a small slice of the shared RouterBench subset (real data, the real trainer,
the real evaluation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from triage.eval.bench.bandit_information import logged_rows, main
from triage.eval.bench.learning_loop_data import load, pick_pair
from triage.probes.bandit import make_logged_labels
from triage.probes.bandit_training import query_index


@pytest.mark.parametrize("shadow_cheap", [False, True])
def test_logged_rows_hold_one_drawn_outcome_per_query_and_the_shadows(shadow_cheap: bool) -> None:
    train, _ = load("routerbench")
    train = train[:200]
    cheap, strong = pick_pair(train)
    drawn_strong = np.random.default_rng(0).random(len(train)) < 0.5
    rows = logged_rows(train, cheap, strong, drawn_strong, shadow_cheap)
    shadows = int(drawn_strong.sum()) if shadow_cheap else 0
    assert len(rows) == len(train) + shadows
    primaries = [r for r in rows if not r.model_extra["logged"].get("shadow")]
    for rec, row, strong_first in zip(train, primaries, drawn_strong, strict=True):
        chosen = strong if strong_first else cheap
        assert row.id == rec.id and set(row.outcomes) == {chosen}  # the other outcome is not revealed
        assert row.outcomes[chosen].score == rec.outcomes[chosen].score
    labels = make_logged_labels(rows)
    assert labels.candidates == [cheap, strong]  # cost order: the cheap one first
    counts = np.bincount(labels.label, minlength=2)
    assert counts[1] == drawn_strong.sum() and counts[0] == (~drawn_strong).sum() + shadows
    # a shadow row is its primary's query (one fold in cross-fitting), and every query weighs the same
    # for a label: 2 for a label seen with probability 0.5, 1 for the cheap one under the shadow
    assert query_index(labels).max() + 1 == len(train)
    expected_cheap_weight = 1.0 if shadow_cheap else 2.0
    assert np.allclose(labels.weight[labels.label == 0], expected_cheap_weight)
    assert np.allclose(labels.weight[labels.label == 1], 2.0)


@pytest.mark.slow
def test_bench_runs_on_a_small_slice(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--datasets", "routerbench", "--train", "300", "--test", "200", "--draws", "2", "--no-write", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rb = doc["datasets"]["routerbench"]
    assert rb["train_rows"] == 300 and rb["test_rows"] == 200
    assert doc["code"]  # the commit behind the figures (or "unknown" outside a checkout)
    assert rb["aiq"]["full_information"] is not None and rb["aiq"]["random"] is not None
    for cond in ("paired_half", "unpaired", "unpaired_plus_cheap"):
        c = rb["conditions"][cond]
        assert len(c["per_draw"]) == 2 and c["undefined"] + sum(v is not None for v in c["per_draw"]) == 2
    diff = rb["unpaired_minus_paired_half"]["per_draw"]
    for a, b, d in zip(rb["conditions"]["unpaired"]["per_draw"], rb["conditions"]["paired_half"]["per_draw"], diff,
                       strict=True):
        assert d is None or d == pytest.approx(a - b, abs=2e-4)


def test_too_few_draws_and_unknown_datasets_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--draws", "1", "--no-write"])
    assert exc.value.code == 2 and "--draws must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--datasets", "gsm8k", "--no-write"])
    assert exc.value.code == 2 and "unknown dataset gsm8k" in capsys.readouterr().err
