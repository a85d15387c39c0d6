"""Which rows are evaluated, and how learned routers are cross-fitted on the others.

* ``split``: the dataset carries train/test splits. Learned routers fit on the train rows;
  every router (learned or not) is scored on the same test rows, so numbers compare.
* ``kfold``: no splits. Every row is evaluated; a learned router is fitted k times, each time
  on k-1 folds, and scores only the held-out fold. No query is ever scored by a router that
  trained on it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from triage.replay.matrix import ReplayData
from triage.eval.routers.base import ReplayRouter, RouterSweep

ProtocolKind = Literal["split", "kfold"]

__all__ = ["Protocol", "make_protocol", "run_router"]


@dataclass
class Protocol:
    """Rows to score and, for learned routers, the (train rows, test rows) folds."""

    kind: ProtocolKind
    eval_rows: np.ndarray
    n_folds: int
    seed: int = 0
    split_rows: tuple[np.ndarray, np.ndarray] | None = None  # (train, test) for kind == "split"
    n_unsplit_ignored: int = 0
    _folds: list[tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train rows, test rows) pairs; test rows partition the evaluated rows. Built on first use."""
        if self._folds is None:
            if self.split_rows is not None:
                self._folds = [self.split_rows]
            else:
                n = len(self.eval_rows)
                perm = np.random.default_rng(self.seed).permutation(n)
                parts = [np.sort(p) for p in np.array_split(perm, self.n_folds)]
                self._folds = [
                    (np.sort(np.concatenate([parts[i] for i in range(self.n_folds) if i != k])), parts[k])
                    for k in range(self.n_folds)
                ]
        return self._folds

    def describe(self) -> dict:
        out: dict = {"kind": self.kind, "n_eval": int(len(self.eval_rows))}
        if self.split_rows is not None:
            out["n_train"] = int(len(self.split_rows[0]))
            out["n_unsplit_ignored"] = self.n_unsplit_ignored
        else:
            out["folds"] = self.n_folds
        return out


def make_protocol(data: ReplayData, *, folds: int = 5, seed: int = 0,
                  kind: Literal["auto", "split", "kfold"] = "auto") -> Protocol:
    """The evaluation protocol for ``data`` (``auto``: ``split`` when both splits are present)."""
    splits = np.array([s or "" for s in data.splits], dtype=object) if data.splits else np.full(data.n, "", dtype=object)
    train = np.flatnonzero(splits == "train")
    test = np.flatnonzero(splits == "test")
    if kind == "auto":
        kind = "split" if len(train) and len(test) else "kfold"
    if kind == "split":
        if not (len(train) and len(test)):
            raise ValueError("split protocol needs rows with split 'train' and rows with split 'test'")
        return Protocol("split", test, 1, seed, split_rows=(train, test),
                        n_unsplit_ignored=int(data.n - len(train) - len(test)))
    if kind != "kfold":
        raise ValueError(f"unknown protocol {kind!r}; use auto, split or kfold")
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if data.n < folds:
        raise ValueError(f"{data.n} complete queries are too few for {folds} folds")
    return Protocol("kfold", np.arange(data.n), folds, seed)


def run_router(router: ReplayRouter, data: ReplayData, protocol: Protocol) -> RouterSweep:
    """The router's sweep over ``protocol.eval_rows`` (in that order), cross-fitted if learned."""
    if not router.learned:
        return router.fit(data, protocol.eval_rows).sweep(data, protocol.eval_rows)
    position = np.full(data.n, -1, dtype=np.int64)
    position[protocol.eval_rows] = np.arange(len(protocol.eval_rows))
    n_eval = len(protocol.eval_rows)
    choices = probs = knobs = None
    default, knob_name, paid_first = 0, "knob", None
    caps: np.ndarray | None = None  # per-query token caps, pooled like the choices (inf: none)
    for train, test in protocol.folds:
        fitted = copy.deepcopy(router).fit(data, train)  # a fresh, unfitted copy per fold
        sweep = fitted.sweep(data, test)
        if sweep.choices.shape[1] != len(test):
            raise ValueError(f"router {router.name!r} returned {sweep.choices.shape[1]} choices for {len(test)} rows")
        pos = position[test]
        if knobs is None:
            knobs, default, knob_name, paid_first = sweep.knobs, sweep.default, sweep.knob_name, sweep.paid_first
            choices = np.zeros((len(knobs), n_eval), dtype=np.int64)
            if sweep.probs is not None:
                probs = np.zeros((len(knobs), n_eval, data.m))
        elif sweep.knobs.shape != knobs.shape or not np.allclose(sweep.knobs, knobs):
            raise ValueError(f"router {router.name!r} returned different operating points on different folds")
        if (sweep.probs is None) != (probs is None):
            raise ValueError(f"router {router.name!r} mixes hard and randomised choices across folds")
        if sweep.paid_first != paid_first:
            raise ValueError(f"router {router.name!r} cascades from different candidates on different folds")
        choices[:, pos] = sweep.choices
        if sweep.caps is not None:
            caps = np.full((len(knobs), n_eval), np.inf) if caps is None else caps
            caps[:, pos] = sweep.caps
        if probs is not None:
            probs[:, pos, :] = np.broadcast_to(sweep.probs, (len(knobs), len(test), data.m))
    assert knobs is not None
    return RouterSweep(choices=choices, knobs=knobs, default=default, probs=probs, knob_name=knob_name,
                       paid_first=paid_first, caps=caps)
