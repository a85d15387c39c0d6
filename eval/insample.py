"""Which evaluated rows a policy's probe was trained on.

Replay evaluation cross-fits the routers it trains, so no query is scored by a model that saw it. A
policy file, though, names a probe trained elsewhere: when that probe's training rows are among the
evaluated ones, the policy's figures are in-sample (the probe saw those queries' outcomes) and read
higher than the cross-fitted curves next to them. The probe card records its training rows
(:func:`triage.probes.card.training_rows_block`); this compares them with the evaluated rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from triage.probes.card import (
    ProbeArtifactError,
    read_card,
    text_digest,
    training_row_digests,
)

from triage.replay.matrix import ReplayData

__all__ = ["TrainedRows", "trained_rows"]


@dataclass
class TrainedRows:
    """A policy router's probe against the data: ``mask`` marks rows its probe was trained on."""

    spec: str
    probe: str  # probe version (or path when the card cannot be read)
    known: bool  # False: the card does not record its training rows
    mask: np.ndarray  # (n,) bool over the data's rows

    def describe(self, evaluated: np.ndarray) -> str:
        if not self.known:
            return (f"{self.spec}: probe {self.probe} records no training rows (trained before cards kept them): "
                    "whether its figures are in-sample is unknown")
        k = int(self.mask[evaluated].sum())
        return (f"{self.spec}: probe {self.probe} was trained on {k:,} of the {len(evaluated):,} evaluated queries: "
                "its figures are in-sample, not comparable with the cross-fitted rows (--exclude-trained drops them)")


def _probe_folder(router: object) -> str | None:
    from triage.policies.loader import resolve_probe_path

    policy = router.policy  # type: ignore[attr-defined]
    where = resolve_probe_path(policy, None if router.probe is not None else router.path)  # type: ignore[attr-defined]
    if where == "default":
        from triage.probes.runtime import default_probe_path

        return str(default_probe_path())
    return where


def trained_rows(specs: Sequence[str], data: ReplayData) -> list[TrainedRows]:
    """For every ``policy:`` router spec, the data rows its probe was trained on."""
    from triage.eval.routers import make_router
    from triage.eval.routers.policy import PolicyRouter

    out = []
    digests_of_rows: list[bytes] | None = None
    for spec in specs:
        router = make_router(spec)
        if not isinstance(router, PolicyRouter):
            continue
        folder = _probe_folder(router)
        try:
            card, _ = read_card(folder)
        except ProbeArtifactError:
            out.append(TrainedRows(spec, str(folder), False, np.zeros(data.n, dtype=bool)))
            continue
        seen = training_row_digests(card)
        if seen is None:
            out.append(TrainedRows(spec, card.probe_version, False, np.zeros(data.n, dtype=bool)))
            continue
        if digests_of_rows is None:
            digests_of_rows = [text_digest(t) for t in data.texts]
        mask = np.fromiter((d in seen for d in digests_of_rows), dtype=bool, count=data.n)
        out.append(TrainedRows(spec, card.probe_version, True, mask))
    return out
