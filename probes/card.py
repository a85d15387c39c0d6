"""The probe card: what a probe folder holds and what the runtime checks before using it.

``card.json`` lists the features (name, version, params, dim), the head file, the label set, the
label rule, calibration parameters (plain numbers), metrics with bootstrap intervals, the training
data fingerprint, the exact command that produced it, and the sha256 of every other file in the
folder. The card is the contract: :func:`triage.probes.runtime.load_probe` refuses a folder that does not
match it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triage.probes.types import TIERS

CARD_FILE = "card.json"
CARD_SCHEMA_VERSION = 1


class ProbeArtifactError(ValueError):
    """A probe folder or card that is missing, corrupted, or does not match this install."""


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    params: dict[str, Any] = Field(default_factory=dict)
    dim: int = Field(gt=0)
    requires_torch: bool = False
    folder: str | None = Field(default=None, description="Folder (relative) holding the feature's files.")
    identity: dict[str, Any] = Field(default_factory=dict, description="Feature identity at training time.")


class HeadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    file: str
    params: dict[str, Any] = Field(default_factory=dict)
    input_dim: int = Field(gt=0)
    opset: int
    outputs: list[str] = Field(default_factory=lambda: ["success", "tier"])
    selection: dict[str, Any] | None = Field(
        default=None, description="How the head and its parameters were chosen (inner cross-validation), if they were.")


class ProbeCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = CARD_SCHEMA_VERSION
    probe_version: str
    created_at: str
    command: str
    features: list[FeatureSpec] = Field(min_length=1)
    head: HeadSpec
    labels: list[str] = Field(min_length=1, description="Success labels (candidates), cheapest first.")
    tiers: list[str] = Field(default_factory=lambda: list(TIERS))
    label_rule: dict[str, Any]
    thresholds: dict[str, float] = Field(default_factory=dict)
    label_costs: dict[str, float | None] = Field(default_factory=dict)
    calibration: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_data: dict[str, Any] = Field(default_factory=dict)
    latency: dict[str, Any] = Field(
        default_factory=dict, description="Decision latency (p50/p95 ms per query) measured at export.")
    libraries: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="sha256 of every file of the probe folder but the card.")

    @property
    def input_dim(self) -> int:
        return sum(f.dim for f in self.features)


def read_card(path: Path | str) -> tuple[ProbeCard, Path]:
    """Parse ``card.json`` (or the folder holding it). Returns the card and the probe folder."""
    p = Path(path)
    card_path = p / CARD_FILE if p.is_dir() else p
    if not card_path.is_file():
        raise ProbeArtifactError(f"no probe card at {card_path}")
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProbeArtifactError(f"{card_path}: not a valid JSON probe card ({exc})") from None
    if not isinstance(raw, dict):
        raise ProbeArtifactError(f"{card_path}: a probe card is a JSON object")
    if raw.get("schema_version") != CARD_SCHEMA_VERSION:
        raise ProbeArtifactError(
            f"{card_path}: card schema_version {raw.get('schema_version')!r}, this install reads {CARD_SCHEMA_VERSION}"
        )
    try:
        card = ProbeCard.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ProbeArtifactError(f"{card_path}: field '{where}': {first['msg']}") from None
    if card.tiers != list(TIERS):
        raise ProbeArtifactError(f"{card_path}: tiers {card.tiers} differ from {list(TIERS)}")
    if len(card.calibration.get("success", [])) != len(card.labels):
        raise ProbeArtifactError(f"{card_path}: calibration has {len(card.calibration.get('success', []))} "
                                 f"success entries for {len(card.labels)} labels")
    if card.head.input_dim != card.input_dim:
        raise ProbeArtifactError(
            f"{card_path}: head input_dim {card.head.input_dim} != sum of feature dims {card.input_dim}"
        )
    return card, card_path.parent


def write_card(card: ProbeCard, folder: Path | str) -> Path:
    out = Path(folder) / CARD_FILE
    out.write_text(json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out


# -- training rows: which queries a probe has seen ------------------------------------------------
# Replay evaluation must not print a probe's figures on rows it was trained on as if they were held
# out. The card keeps a compact set of the training rows: a 6-byte sha256 prefix of each row's probe
# text (the text is what the probe learned from; ids differ between a dataset and a ledger export of
# the same queries). 6 bytes keep 15k rows at ~120 kB of base64 while two different texts collide
# with probability 2^-48 (a chance of about 1e-6 between two 15k-row sets).
ROW_DIGEST_BYTES = 6


def text_digest(text: str) -> bytes:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).digest()[:ROW_DIGEST_BYTES]


def training_rows_block(texts: Sequence[str]) -> dict[str, Any]:
    """The card's ``training_data["rows"]``: the digests of the training texts (the training code
    calls this with the texts it fitted on)."""
    import base64

    digests = sorted({text_digest(t) for t in texts})
    return {"key": f"sha256[:{ROW_DIGEST_BYTES}] of the probe text", "count": len(digests),
            "digests": base64.b64encode(b"".join(digests)).decode("ascii")}


def training_row_digests(card: ProbeCard) -> set[bytes] | None:
    """The digests of the texts ``card``'s probe was trained on; None when the card does not record them
    (probes trained before cards kept their rows)."""
    import base64
    import binascii

    block = card.training_data.get("rows")
    if not isinstance(block, dict) or not isinstance(block.get("digests"), str):
        return None
    try:
        raw = base64.b64decode(block["digests"], validate=True)
    except (binascii.Error, ValueError):
        raise ProbeArtifactError("probe card: training_data.rows.digests is not base64") from None
    if len(raw) % ROW_DIGEST_BYTES:
        raise ProbeArtifactError("probe card: training_data.rows.digests has a partial digest")
    return {raw[i:i + ROW_DIGEST_BYTES] for i in range(0, len(raw), ROW_DIGEST_BYTES)}
