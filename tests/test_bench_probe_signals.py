"""Pieces of the probe-signals benchmark that its findings rest on: the confirmation rows are exactly
the rows a subsample block did not read, and a blend averages its two heads' P(success).

Real data (RouteLLM GSM8K from ../shared/data) and real cached features; no LM prefill.
"""

from __future__ import annotations

import numpy as np
from triage.eval.bench.probe_signals_extra import SignalRouter, load_dataset


def test_confirmation_rows_are_the_rows_the_subsample_left_out() -> None:
    sub, note = load_dataset("gsm8k", 300)
    rest, rest_note = load_dataset("gsm8k", None, skip_first=300)
    full, _ = load_dataset("gsm8k", None)
    assert sub.n == 300 and rest.n == full.n - 300
    assert not set(sub.ids) & set(rest.ids)
    assert set(sub.ids) | set(rest.ids) == set(full.ids)
    assert "after its first 300" in rest_note and "after" not in note
    capped, _ = load_dataset("gsm8k", 100, skip_first=300)  # the next 100 of the same order
    assert capped.n == 100 and set(capped.ids) <= set(rest.ids)


def test_a_blend_averages_its_two_heads() -> None:
    data, _ = load_dataset("gsm8k", 240)
    rows = np.arange(data.n)
    train, test = rows[:180], rows[180:]
    blend = SignalRouter("lexical", extras="blend:text:aux=false").fit(data, train)
    lexical = SignalRouter("lexical").fit(data, train)
    text = SignalRouter("text:aux=false").fit(data, train)
    got = blend.predict_success(data, test)
    want = (lexical.predict_success(data, test) + text.predict_success(data, test)) / 2.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert not np.allclose(got, lexical.predict_success(data, test))  # the second head counts
    # the blend's own head reads only its own features: no extra columns appended
    assert blend.X_.shape[1] == lexical.X_.shape[1]
