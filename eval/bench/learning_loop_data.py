"""The learning loop's data (eval/bench/learning_loop.py), shared by the benches that compare against it
(bandit_information.py, calibration_ranking.py): which data sets, their train/test split, the
``--train``/``--test`` caps, and the cheap/strong pair."""

from __future__ import annotations

import numpy as np

from triage.replay.schema import ReplayRecord

#: The data sets ``load`` reads.
DATASETS = ("routerbench", "simpleqa")


def dataset_names(spec: str) -> list[str]:
    """``--datasets`` (comma-separated) as names ``load`` reads; ValueError (one line) otherwise."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown or not names:
        raise ValueError(f"unknown dataset {', '.join(unknown)}; choose from {', '.join(DATASETS)}" if unknown
                         else f"no dataset given; choose from {', '.join(DATASETS)}")
    return names


def load(name: str) -> tuple[list[ReplayRecord], list[ReplayRecord]]:
    """(train, test) records of a dataset, full information only."""
    if name not in DATASETS:  # anything else used to load SimpleQA under the other name
        raise ValueError(f"unknown dataset {name}; choose from {', '.join(DATASETS)}")
    from triage.eval.importers import import_source
    from triage.settings import get_settings

    root = get_settings().data_dir
    if name == "routerbench":
        recs = import_source("routerbench", root / "routerbench-subset")
        every = set().union(*(set(r.outcomes) for r in recs))
        recs = [r for r in recs if set(r.outcomes) == every]  # drops the split ARC duplicate rows
        train = [r for r in recs if r.split == "train"]
        # The file is grouped by task (ARC, then MBPP, then Winogrande...); traffic is not. Arrival
        # order is a seed-0 shuffle, so each round's traffic mixes tasks as the test split does.
        train = [train[i] for i in np.random.default_rng(0).permutation(len(train))]
        return train, [r for r in recs if r.split == "test"]
    recs = import_source("pricing-reversal", root / "pricing-reversal", dataset="simpleqa-test")
    every = set().union(*(set(r.outcomes) for r in recs))
    recs = [r for r in recs if set(r.outcomes) == every]  # claude-opus lacks 16 queries
    rng = np.random.default_rng(0)
    order = rng.permutation(len(recs))
    is_test = rng.random(len(recs)) < 0.3
    train = [recs[i].model_copy(update={"split": "train"}) for i in order if not is_test[i]]
    test = [recs[i].model_copy(update={"split": "test"}) for i in order if is_test[i]]
    return train, test


def capped(train: list[ReplayRecord], test: list[ReplayRecord], n_train: int,
           n_test: int) -> tuple[list[ReplayRecord], list[ReplayRecord]]:
    """``--train`` / ``--test`` caps for quick runs (0: all): the first ``n_train`` train rows in
    arrival order, and a seed-0 draw of ``n_test`` test rows in file order."""
    train = train[:n_train] if n_train > 0 else train
    if 0 < n_test < len(test):
        test = [test[i] for i in sorted(np.random.default_rng(0).choice(len(test), n_test, replace=False))]
    return train, test


def pick_pair(train: list[ReplayRecord]) -> tuple[str, str]:
    """(cheap, strong): the most accurate candidate on train, and the cheapest of the others."""
    cands = sorted(set.intersection(*(set(r.outcomes) for r in train)))
    acc = {c: np.mean([r.outcomes[c].score for r in train]) for c in cands}
    cost = {c: np.mean([r.outcomes[c].cost_usd or 0.0 for r in train]) for c in cands}
    strong = max(cands, key=lambda c: (acc[c], -cost[c]))
    cheap = min((c for c in cands if c != strong), key=lambda c: (cost[c], -acc[c]))
    return cheap, strong
