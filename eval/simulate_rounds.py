"""The simulator in rounds: traffic, then `triage learn --apply`, then the next traffic (issue #15).

``triage replay simulate DATA --policy P --ledger URL --rounds K`` and the learning-loop bench
(``eval/bench/learning_loop.py``) run this one loop. The traffic, in the simulator's order (time
order when every record has a ``time``, else file order), is cut into K consecutive parts of about
equal size. Each part is routed by the policy file as it stands - the version the previous round
applied - into the ledger (:func:`triage.eval.simulate.simulate`: only the chosen outcome, and a
``shadow:`` block's, is revealed), and then :func:`triage.eval.learn.learn` runs with ``apply=True``
on the whole ledger so far, so the next part is routed by the version it wrote.

A refused learning step (too few explored rows, missing support, a degenerate calibration) is a
result, not an error: early rounds often have too little data. The round keeps the refusal, the next
of the round's learn configurations is tried (the bench falls back from a target accuracy to tier
shares), and when every one is refused the policy file stays as it was for the next round.

Seeds: round ``r`` (from 0) uses ``seed + r`` for the simulator's request ids (``sim<seed+r>:<id>``)
and for the learning step's folds and bootstrap, so a run is reproducible and no two rounds' ids clash.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from triage.errors import ConfigError, TriageError
from triage.eval.learn import LearnConfig, LearnResult, learn
from triage.eval.simulate import SimulationResult, in_order, simulate
from triage.logging import get_logger
from triage.policies.exploration import Exploration
from triage.replay.schema import ReplayRecord

log = get_logger("triage.eval.simulate_rounds")

#: Round index (from 0) -> the learn configurations to try in turn (``apply`` is forced on).
LearnConfigs = Callable[[int], Sequence[LearnConfig]]


@dataclass
class RoundResult:
    """One round: its traffic's simulation and what learning after it gave."""

    round: int  # from 1
    of: int  # the number of rounds (round_bounds': never more than the queries)
    start: int  # [start, stop) of the ordered traffic
    stop: int
    simulation: SimulationResult
    learned: LearnResult | None = None  # None: every configuration was refused
    refused: list[str] = field(default_factory=list)  # one line per refused configuration, in order

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"round": self.round, "of": self.of, "traffic": [self.start, self.stop],
                               "simulation": self.simulation.to_json(), "refused": list(self.refused)}
        sim = doc["simulation"]
        sim.pop("request_ids", None)
        if self.learned is not None:
            res = self.learned
            doc["learned"] = {"version": res.new_version, "policy": str(res.policy), "probe": str(res.probe),
                              "rows": res.rows, "objective": res.calibration.get("objective"),
                              "verdict": res.verdict, "improved": res.improved}
        return doc


def round_bounds(n: int, rounds: int, round_size: int = 0) -> list[tuple[int, int]]:
    """[start, stop) of each round: ``rounds`` parts of about equal size, or (``rounds`` 0) parts of
    about ``round_size`` rows. Never an empty part: at most ``n`` rounds."""
    if n < 1:
        raise ConfigError("no records to simulate")
    if rounds < 0 or (rounds == 0 and round_size < 1):
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    k = min(n, rounds if rounds > 0 else max(1, round(n / round_size)))
    cuts = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(cuts)]


def simulate_rounds(records: Sequence[ReplayRecord], policy_path: str | Path, ledger: str, *,
                    configs: LearnConfigs, rounds: int = 0, round_size: int = 0,
                    seed: int = 0, probe: Any = None,
                    exploration: Exploration | None | Literal["policy"] = "policy") -> Iterator[RoundResult]:
    """Yield each round as it ends (its traffic simulated, then learned from; see the module doc).

    ``configs(r)`` gives round ``r``'s learn configurations (their ``ledger`` and ``policy`` must
    be ``ledger`` and ``policy_path``); ``probe`` and ``exploration`` are handed to the simulator
    every round (an ``exploration`` override routes every round; the versions written keep the
    file's own block).
    """
    rows = in_order(records)
    bounds = round_bounds(len(rows), rounds, round_size)
    for r, (start, stop) in enumerate(bounds):
        sim = simulate(rows[start:stop], policy_path, ledger, seed=seed + r, probe=probe, exploration=exploration)
        out = RoundResult(round=r + 1, of=len(bounds), start=start, stop=stop, simulation=sim)
        for cfg in configs(r):
            if cfg.ledger != ledger or Path(cfg.policy) != Path(policy_path):
                raise ConfigError("a round's learn configuration must learn from the simulated ledger and policy")
            try:
                out.learned = learn(replace(cfg, apply=True))
                break
            except (TriageError, ValueError) as exc:  # a refusal is a result: keep it, try the next
                out.refused.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        log.debug("round_learned" if out.learned else "round_refused", round=out.round, queries=sim.queries,
                 version=out.learned.new_version if out.learned else None, refused=len(out.refused))
        yield out
