"""The doubly-robust ranking value `triage learn` chooses per-label fit weightings by
(probes.bandit_training: dr_outcomes, ranking_value) - synthetic logged data, known answers."""

from __future__ import annotations

import numpy as np
import pytest
from triage.probes.bandit import LoggedLabels
from triage.probes.bandit_training import describe_weighting, dr_outcomes, ranking_value
from triage.probes.labels import LabelRule


def _labels(label: np.ndarray, success: np.ndarray, propensity: np.ndarray, queries: list[str] | None = None) -> LoggedLabels:
    n = len(label)
    return LoggedLabels(candidates=["cheap", "strong"], label=label.astype(np.int64), success=success.astype(np.int8),
                        propensity=propensity, weight=1.0 / propensity, ids=[f"r{i}" for i in range(n)],
                        texts=[""] * n, splits=[None] * n, mean_cost=[1.0, 10.0], rule=LabelRule(), max_weight=1e9,
                        queries=queries)


def _trapezoid_area(gain: np.ndarray, outcomes: np.ndarray) -> float:
    """The accuracy curve as the share sent to label 1 grows (best gain first), by the trapezoid rule,
    less the all-on-label-0 accuracy."""
    d = (outcomes[:, 1] - outcomes[:, 0])[np.argsort(-gain, kind="stable")]
    acc = np.concatenate([[0.0], np.cumsum(d)]) / len(d)
    return float(((acc[:-1] + acc[1:]) / 2).mean())


def test_ranking_value_is_the_area_under_the_accuracy_curve() -> None:
    rng = np.random.default_rng(0)
    outcomes = rng.random((50, 2))
    for gain in (rng.random(50), outcomes[:, 1] - outcomes[:, 0], outcomes[:, 0] - outcomes[:, 1]):
        assert ranking_value(gain, outcomes) == pytest.approx(_trapezoid_area(gain, outcomes))
    d = outcomes[:, 1] - outcomes[:, 0]
    best, worst = ranking_value(d, outcomes), ranking_value(-d, outcomes)
    assert best > ranking_value(rng.random(50), outcomes) > worst
    assert best + worst == pytest.approx(d.mean())  # either order reaches the all-on-label-1 accuracy
    assert ranking_value(np.zeros(0), np.zeros((0, 2))) == 0.0


def test_dr_outcomes_are_unbiased_under_a_wrong_reward_model_and_group_shadow_rows() -> None:
    """Each query's label is logged with a known propensity that depends on the query; averaged over
    logging draws, the DR outcome of every (query, label) is its true success rate although the reward
    model is a constant 0.5. A shadow row (the query's other label, observed too) counts on its query."""
    rng = np.random.default_rng(1)
    n, draws = 40, 4000
    truth = rng.random((n, 2))
    p_strong = rng.uniform(0.1, 0.9, n)
    total = np.zeros((n, 2))
    for _ in range(draws):
        label = (rng.random(n) < p_strong).astype(int)
        prop = np.where(label == 1, p_strong, 1 - p_strong)
        success = rng.random(n) < truth[np.arange(n), label]
        group, g = dr_outcomes(_labels(label, success, prop), np.full((n, 2), 0.5))
        assert group.tolist() == list(range(n))
        total += g
    assert np.abs(total / draws - truth).max() < 0.06

    # a first call on "strong" and its shadow call on "cheap" (observed with propensity 1): one query
    labels = _labels(np.array([1, 0, 0]), np.array([1, 0, 1]), np.array([0.5, 1.0, 0.8]), queries=["q", "q", "z"])
    group, g = dr_outcomes(labels, np.full((3, 2), 0.25))
    assert group.tolist() == [0, 0, 1] and g.shape == (2, 2)
    assert g[0].tolist() == pytest.approx([0.25 + 1.0 * (0 - 0.25), 0.25 + 2.0 * (1 - 0.25)])
    assert g[1].tolist() == pytest.approx([0.25 + 1.25 * (1 - 0.25), 0.25])


def test_the_weighting_line_says_each_labels_fit_and_what_chose_it() -> None:
    """`triage probe train`'s line on logged data: each label's fit, then the values that chose them
    (ranking values for a pair, per-label log losses otherwise); without a choice, the fits alone.
    Hand-written card blocks stand in for trained probes: the function only formats the block, and the
    CLI tests (tests/test_bandit_training.py, the README walkthrough) check it on real ones."""
    fits = {"cheap": {"chosen": "ips", "ips_weighted_log_loss": {"ips": 0.51, "none": 0.62}},
            "strong": {"chosen": "none", "ips_weighted_log_loss": {"ips": 0.5, "none": 0.4}}}
    pair = describe_weighting({"weighting": fits, "weighting_selection": {
        "queries": 1234, "chosen": "ips/none", "values": {"ips/ips": 0.01, "ips/none": 0.02, "none/ips": 0.0,
                                                          "none/none": 0.015}}})
    assert pair.startswith("weighting per label: cheap ips, strong none; ") and "1,234 logged queries" in pair
    assert "(weighting of cheap then strong): ips/ips 0.0100, ips/none 0.0200 (chosen), none/ips 0.0000, none/none 0.0150" in pair
    three = describe_weighting({"weighting": {**fits, "third": fits["cheap"]}})
    assert "cheap ips, strong none, third ips; chosen per label by the lower IPS-weighted" in three
    assert "strong ips 0.5000, none 0.4000" in three and "(chosen)" not in three
    one = describe_weighting({"weighting": {c: {"chosen": "ips", "ips_weighted_log_loss": {"ips": 0.5}} for c in fits}})
    assert one == "weighting per label: cheap ips, strong ips"
