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

__all__ = ["TrainedRows", "policy_trained_rows", "trained_rows"]


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


def _probe_folder(policy: object, policy_path: str | None) -> str:
    from triage.policies.loader import resolve_probe_path

    where = resolve_probe_path(policy, policy_path)  # type: ignore[arg-type]
    if where == "default":
        from triage.probes.runtime import default_probe_path

        return str(default_probe_path())
    return where


def _rows_of(spec: str, folder: str, texts: Sequence[str], digests: list[bytes] | None) -> tuple[TrainedRows, list[bytes] | None]:
    """``folder``'s probe against ``texts`` (digests computed once per data set and passed back)."""
    n = len(texts)
    try:
        card, _ = read_card(folder)
    except ProbeArtifactError:
        return TrainedRows(spec, folder, False, np.zeros(n, dtype=bool)), digests
    seen = training_row_digests(card)
    if seen is None:
        return TrainedRows(spec, card.probe_version, False, np.zeros(n, dtype=bool)), digests
    if digests is None:
        digests = [text_digest(t) for t in texts]
    # An empty text (a record stored without its prompt) names no query: it cannot be a training row.
    mask = np.fromiter((bool(t) and d in seen for t, d in zip(texts, digests, strict=True)), dtype=bool, count=n)
    return TrainedRows(spec, card.probe_version, True, mask), digests


def trained_rows(specs: Sequence[str], data: ReplayData) -> list[TrainedRows]:
    """For every ``policy:`` router spec, the data rows its probe was trained on."""
    from triage.eval.routers import make_router
    from triage.eval.routers.policy import PolicyRouter

    out = []
    digests: list[bytes] | None = None
    for spec in specs:
        router = make_router(spec)
        if not isinstance(router, PolicyRouter):
            continue
        folder = _probe_folder(router.policy, None if router.probe is not None else router.path)
        flag, digests = _rows_of(spec, folder, data.texts, digests)
        out.append(flag)
    return out


def policy_trained_rows(policy: object, policy_path: str, texts: Sequence[str]) -> TrainedRows:
    """The rows of ``texts`` (probe texts, one per logged row) that the probe ``policy`` names was
    trained on: off-policy figures on those rows are in-sample too (the probe saw their outcomes, and
    ``triage learn`` refits its written version on every logged query)."""
    return _rows_of(f"policy {policy_path}", _probe_folder(policy, policy_path), texts, None)[0]
