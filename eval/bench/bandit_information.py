"""Benchmark: what one outcome per query can teach a router, whatever the learner (issue #15).

The learning loop (``learning_loop.py``) compares a bandit-trained router with the full-information
router: the same probe trained on every train query with *both* strategies' outcomes. Logged
traffic without a shadow holds one outcome per query. This bench asks how far that kind of data
alone gets the same pipeline, with no exploration policy, propensity weights or calibration in the
way, so that a gap in the learning loop can be put on the data or on the machinery.

Per data set (the learning loop's split and cheap/strong pair, ``learning_loop_data.load``/``pick_pair``),
``--draws`` random draws of label sets, each of about one label per train query (the same count):

* ``paired_half``: both outcomes of a random half of the train queries (``probe-text``);
* ``unpaired``: one outcome of every train query, the strategy drawn uniformly at random (a logged
  export with propensity 0.5; ``triage probe train``'s logged-data pipeline, ``--weighting none``,
  which uniform logging leaves unbiased);
* ``unpaired_plus_cheap``: ``unpaired`` plus the cheap strategy's outcome of every query where the
  strong one was drawn (a shadow row) - what a policy that shadows the cheap strategy beside every
  strong call logs.

Each is scored as the learning loop's matched comparator (c) is: the head's P(success) ranks the
test queries (``probe-text``; ``probe:path=DIR,scores=head``), and its AIQ gain over random is divided
by the full-information router's (``probe-text`` on every train query, both outcomes). Features,
head and C are the learning loop's. ``unpaired`` minus ``paired_half`` is paired by draw: the price of
seeing one outcome per query instead of both on half as many queries. Where the bandit-trained
router's share sits near ``unpaired``'s, its gap to the full-information router is the data's, not
the learner's.

    python eval/bench/bandit_information.py --json [--draws 20] [--datasets simpleqa,routerbench]
    # ~5 min on 2 cores with warm feature caches (each draw ~6 s)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from triage.eval.bench import provenance
from triage.eval.bench.learning_loop_data import capped, dataset_names, load, pick_pair
from triage.eval.bench.learning_loop_scoring import (FEATURES, full_information_spec, gain_share, matched_config,
                                                     router_figures)
from triage.eval.bench.probe_alternatives import write_result
from triage.replay.schema import ReplayRecord

RESULTS = Path(__file__).parent / "results" / "bandit_information.json"
C = "0.02"  # the learning loop's default
CONDITIONS = ("paired_half", "unpaired", "unpaired_plus_cheap")


def logged_rows(train: list[ReplayRecord], cheap: str, strong: str, drawn_strong: np.ndarray,
                shadow_cheap: bool) -> list[ReplayRecord]:
    """A logged export of uniform-random logging: one outcome per query (``drawn_strong`` says which,
    propensity 0.5), and with ``shadow_cheap`` a shadow row of the cheap outcome beside every strong one."""
    rows = []
    for rec, strong_first in zip(train, drawn_strong, strict=True):
        base = rec.model_dump()
        chosen = strong if strong_first else cheap
        rows.append(ReplayRecord.model_validate({
            **base, "split": "train", "outcomes": {chosen: base["outcomes"][chosen]},
            "logged": {"strategy": chosen, "candidate": chosen, "propensity": 0.5,
                       # with the shadow, the cheap outcome is seen on every query
                       "observed_propensity": 1.0 if shadow_cheap and chosen == cheap else 0.5}}))
        if shadow_cheap and strong_first:
            rows.append(ReplayRecord.model_validate({
                **base, "id": f"{rec.id}#shadow", "split": "train", "outcomes": {cheap: base["outcomes"][cheap]},
                "logged": {"strategy": cheap, "candidate": cheap, "propensity": 0.5, "observed_propensity": 1.0,
                           "shadow": True, "shadow_of": rec.id}}))
    return rows


def logged_probe(rows: list[ReplayRecord], out: Path, seed: int) -> Path:
    """The logged-data pipeline of ``triage probe train`` on an export (head fitted per label on the
    rows that saw it, unweighted), written where ``probe:path=`` reads it."""
    from triage.probes.bandit import make_logged_labels
    from triage.probes.bandit_training import train_logged_probe
    from triage.probes.export import export_probe

    feats, config = matched_config(C, seed, n_boot=0)
    trained = train_logged_probe(make_logged_labels(rows), config, features=feats, weighting="none")
    export_probe(trained, out, command="eval/bench/bandit_information.py", plot=False)
    return out


def run_dataset(name: str, draws: int, work: Path, n_train: int = 0, n_test: int = 0) -> dict[str, Any]:
    from triage.replay import ReplayData

    t0 = time.perf_counter()
    train, test = capped(*load(name), n_train, n_test)  # the learning loop's caps, so the same rows
    cheap, strong = pick_pair(train)
    test_rows = [r.model_copy(update={"split": "test"}) for r in test]
    train_rows = [r.model_copy(update={"split": "train"}) for r in train]
    fi_spec = full_information_spec(C)
    figs, _ = router_figures(ReplayData.from_records(train_rows + test_rows, candidates=[cheap, strong],
                                                     name=f"{name}-full"), [fi_spec], n_boot=0)
    random_aiq, full_aiq = figs["random"]["aiq"], figs[fi_spec]["aiq"]
    per_draw: dict[str, list[float | None]] = {c: [] for c in CONDITIONS}
    for d in range(draws):
        rng = np.random.default_rng(d)
        half = np.sort(rng.choice(len(train), len(train) // 2, replace=False))
        drawn_strong = rng.random(len(train)) < 0.5
        probes = {c: logged_probe(logged_rows(train, cheap, strong, drawn_strong, c == "unpaired_plus_cheap"),
                                  work / f"{name}-{c}-{d}", seed=d)
                  for c in ("unpaired", "unpaired_plus_cheap")}
        specs = {"paired_half": fi_spec, **{c: f"probe:path={p},scores=head" for c, p in probes.items()}}
        data = ReplayData.from_records([train_rows[i] for i in half] + test_rows, candidates=[cheap, strong],
                                       name=f"{name}-draw{d}")
        figs, _ = router_figures(data, list(specs.values()), n_boot=0)
        for c, spec in specs.items():
            per_draw[c].append(gain_share(figs[spec]["aiq"], random_aiq, full_aiq))
        print(f"[{name}] draw {d}: " + ", ".join(f"{c} {v[-1]:.3f}" for c, v in per_draw.items() if v[-1] is not None)
              + f" ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    out: dict[str, Any] = {"pair": {"cheap": cheap, "strong": strong}, "train_rows": len(train),
                           "test_rows": len(test), "aiq": {"random": random_aiq, "full_information": full_aiq},
                           "conditions": {c: summarise(v) for c, v in per_draw.items()}}
    out["unpaired_minus_paired_half"] = summarise(
        [None if a is None or b is None else a - b for a, b in zip(per_draw["unpaired"], per_draw["paired_half"],
                                                                   strict=True)])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def summarise(values: list[float | None]) -> dict[str, Any]:
    """Mean and standard error over draws (a draw where the share is undefined is left out and counted)."""
    known = np.array([v for v in values if v is not None], dtype=float)
    return {"per_draw": [None if v is None else round(v, 4) for v in values],
            "mean": round(float(known.mean()), 4) if known.size else None,
            "se": round(float(known.std(ddof=1) / np.sqrt(known.size)), 4) if known.size > 1 else None,
            "undefined": len(values) - int(known.size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="simpleqa,routerbench")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--train", type=int, default=0, help="Cap the train queries (0: all; quick runs).")
    ap.add_argument("--test", type=int, default=0, help="Cap the test queries (0: all; quick runs).")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print the result only (tests, quick looks)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.draws < 2:
        ap.error("--draws must be at least 2 (a standard error needs two)")
    try:
        names = dataset_names(args.datasets)
    except ValueError as exc:
        ap.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="bandit-information-") as tmp:
        result = {"benchmark": "bandit_information", "features": FEATURES, "C": C, "draws": args.draws,
                  "train": args.train, "test": args.test,
                  "code": provenance.code_version(),  # the commit behind the figures
                  "datasets": {n: run_dataset(n, args.draws, Path(tmp), args.train, args.test) for n in names}}
    if args.no_write:
        import json

        print(json.dumps(result) if args.json else json.dumps(result, indent=1))
        return 0
    return write_result(args.out, result, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
