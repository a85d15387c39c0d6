"""The probe card: what a probe folder holds and what the runtime checks before using it.

``card.json`` lists the features (name, version, params, dim), the head file, the label set, the
label rule, calibration parameters (plain numbers), metrics with bootstrap intervals, the training
data fingerprint, the exact command that produced it, and the sha256 of every other file in the
folder. The card is the contract: :func:`triage.probes.runtime.load_probe` refuses a folder that does not
match it.
"""

from __future__ import annotations

import json
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
