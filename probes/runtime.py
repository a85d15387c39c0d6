"""Load an exported probe and run it: onnxruntime + tokenizers + numpy only (the request path).

    from triage.probes.runtime import load_probe, ProbeArtifactError
    probe = load_probe(path_to_dir_or_card)
    probe.predict(["How many ...?"])            # -> list[ProbeOutput]
    probe.predict(texts, precomputed={"lm": H}) # features the caller already has (self-probe)

:func:`load_probe` checks, before running anything, that every file listed in the card exists and
has the recorded sha256, that each feature is known to this install with the same version, params
and dimension, and that the head's inputs/outputs match the card; any mismatch raises
:class:`ProbeArtifactError` with one clear line. Nothing here imports torch, scikit-learn,
transformers or pickle. Features that need torch (``requires_torch``, e.g. local-LM internals) are
never computed here: their values come in through ``precomputed``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from triage.probes.calibration import apply_all
from triage.probes.card import ProbeArtifactError, ProbeCard, read_card
from triage.probes.encoder.runtime import file_sha256, make_session
from triage.probes.features.base import Feature, FeatureError, get_feature_class
from triage.text import valid_unicode
from triage.probes.types import TIERS, ProbeOutput

__all__ = [
    "Probe",
    "ProbeArtifactError",
    "ProbeInputError",
    "default_probe_path",
    "require_default_probe",
    "load_probe",
]


class ProbeInputError(ValueError):
    """A call to :meth:`Probe.predict` with inputs the probe cannot use (e.g. a missing feature)."""


def _verify_files(card: ProbeCard, folder: Path) -> None:
    root = folder.resolve()
    for rel, expected in card.files.items():
        path = (folder / rel).resolve()
        if root not in path.parents:
            raise ProbeArtifactError(f"{folder}: card lists a file outside the probe folder: {rel!r}")
        if not path.is_file():
            raise ProbeArtifactError(f"{folder}: file {rel!r} listed in the card is missing")
        actual = file_sha256(path)
        if actual != expected:
            raise ProbeArtifactError(
                f"{folder}: file {rel!r} is corrupted or was replaced (sha256 {actual[:12]}..., "
                f"card says {expected[:12]}...)"
            )


def _build_feature(spec: Any, folder: Path, runtime_params: dict[str, int]) -> Feature | None:
    """The run-time feature object for a card entry; ``None`` for caller-supplied (torch) features."""
    if spec.requires_torch:
        return None
    try:
        cls = get_feature_class(spec.name)
    except FeatureError as exc:
        raise ProbeArtifactError(f"probe needs feature {spec.name!r}, unknown to this install ({exc})") from None
    if cls.version != spec.version:
        raise ProbeArtifactError(
            f"probe was trained with feature {spec.name!r} version {spec.version}; this install has version "
            f"{cls.version} - retrain the probe"
        )
    params = dict(spec.params)
    accepted = inspect.signature(cls.__init__).parameters
    params.update({k: v for k, v in runtime_params.items() if k in accepted})
    try:
        feature = cls.from_artifact(params, folder / spec.folder if spec.folder else folder)
        dim = feature.dim
    except (TypeError, ValueError, OSError) as exc:
        raise ProbeArtifactError(f"cannot rebuild feature {spec.name!r} from the card: {exc}") from None
    if dim != spec.dim:
        raise ProbeArtifactError(f"feature {spec.name!r}: card says dim {spec.dim}, this install computes {dim}")
    try:
        identity = feature.identity()
    except (ValueError, OSError, KeyError) as exc:
        raise ProbeArtifactError(f"feature {spec.name!r}: cannot read its files: {exc}") from None
    if spec.identity and _normalise(identity) != _normalise(spec.identity):
        raise ProbeArtifactError(
            f"feature {spec.name!r}: identity differs from the card (version, params or model files changed)"
        )
    return feature


def _normalise(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _clean_texts(texts: list[str]) -> list[str]:
    if not all(isinstance(t, str) for t in texts):
        raise ProbeInputError("probe inputs must be strings")
    return [valid_unicode(t) for t in texts]  # lone surrogates would fail tokenizers and caches


class Probe:
    """A loaded, verified probe. Thread-safe for concurrent :meth:`predict` calls."""

    def __init__(self, card: ProbeCard, folder: Path, features: list[Feature | None], session: Any) -> None:
        self.card = card
        self.folder = folder
        self._features = features
        self._session = session

    @property
    def version(self) -> str:
        return self.card.probe_version

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.card.features]

    @property
    def external_features(self) -> list[str]:
        """Features the caller must pass in ``precomputed`` (computed by a local model)."""
        return [f.name for f in self.card.features if f.requires_torch]

    def feature_matrix(self, texts: Sequence[str], precomputed: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        n = len(texts)
        blocks = []
        for spec, feature in zip(self.card.features, self._features, strict=True):
            if precomputed is not None and spec.name in precomputed:
                block = np.asarray(precomputed[spec.name], dtype=np.float32)
                if block.ndim == 1 and n == 1:
                    block = block.reshape(1, -1)
                if block.shape != (n, spec.dim):
                    raise ProbeInputError(
                        f"precomputed feature {spec.name!r} has shape {block.shape}, probe expects ({n}, {spec.dim})"
                    )
            elif feature is None:
                raise ProbeInputError(
                    f"probe {self.version} needs feature {spec.name!r} (computed by a local model): pass "
                    f"precomputed={{{spec.name!r}: array of shape ({n}, {spec.dim})}}"
                )
            else:
                block = feature.transform_checked(list(texts))
            blocks.append(block)
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

    def head_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated head outputs ``(success, tier)`` for a feature matrix."""
        success, tier = self._session.run(["success", "tier"], {"features": np.ascontiguousarray(X, np.float32)})
        return success, tier

    def predict_arrays(
        self, texts: Sequence[str], *, precomputed: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated ``(success (n, m), tier (n, 3))`` as arrays (batch use: routers, replay)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, len(TIERS)), np.float32)
        texts = _clean_texts(texts)
        success, tier = self.head_proba(self.feature_matrix(texts, precomputed))
        return apply_all(self.card.calibration, success, tier)

    def predict(
        self, texts: Sequence[str], *, precomputed: Mapping[str, np.ndarray] | None = None
    ) -> list[ProbeOutput]:
        success, tier = self.predict_arrays(texts, precomputed=precomputed)
        return self._outputs(list(texts), success, tier)

    def predict_with_features(
        self, texts: Sequence[str], *, precomputed: Mapping[str, np.ndarray] | None = None
    ) -> tuple[list[ProbeOutput], np.ndarray]:
        """:meth:`predict` and the feature matrix the head read (one row per text), computed once:
        what a ledger keeps so the head can be retrained without the prompts."""
        texts = list(texts)
        if not texts:
            return [], np.zeros((0, sum(f.dim for f in self.card.features)), np.float32)
        X = self.feature_matrix(_clean_texts(texts), precomputed)
        success, tier = apply_all(self.card.calibration, *self.head_proba(X))
        return self._outputs(texts, success, tier), X

    def _outputs(self, texts: list[str], success: np.ndarray, tier: np.ndarray) -> list[ProbeOutput]:
        labels = self.labels
        version = self.version
        return [
            ProbeOutput(
                tier_probs={t: float(tier[i, k]) for k, t in enumerate(TIERS)},
                success={name: float(success[i, j]) for j, name in enumerate(labels)},
                probe_version=version,
                extras={"prompt_chars": float(len(texts[i]))},
            )
            for i in range(len(texts))
        ]

    def predict_one(self, text: str, *, precomputed: Mapping[str, np.ndarray] | None = None) -> ProbeOutput:
        return self.predict([text], precomputed=precomputed)[0]

    def __repr__(self) -> str:
        return f"Probe(version={self.version!r}, features={self.feature_names}, labels={self.labels})"


def load_probe(path: Path | str, *, intra_op_threads: int | None = None, workers: int | None = None) -> Probe:
    """Load and verify the probe in folder ``path`` (or at card file ``path``).

    ``intra_op_threads`` (onnxruntime threads per encoder run, default 1) and ``workers`` (concurrent
    encoder runs for a batch, default 2) change speed only, never the numbers.
    """
    card, folder = read_card(path)
    _verify_files(card, folder)
    if card.head.file not in card.files:
        raise ProbeArtifactError(f"{folder}: head file {card.head.file!r} is not covered by the card's hashes")
    runtime_params = {k: v for k, v in (("intra_op_threads", intra_op_threads), ("workers", workers)) if v is not None}
    features = [_build_feature(spec, folder, runtime_params) for spec in card.features]
    try:
        session = make_session(folder / card.head.file, intra_op_threads=1)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise ProbeArtifactError(f"{folder}: head {card.head.file!r} is not a loadable ONNX model: {exc}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "features" or inputs[0].shape[-1] != card.input_dim:
        got = [(i.name, i.shape) for i in inputs]
        raise ProbeArtifactError(f"{folder}: head expects inputs {got}, card says features of dim {card.input_dim}")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if set(outputs) != {"success", "tier"}:
        raise ProbeArtifactError(f"{folder}: head outputs {sorted(outputs)}, expected ['success', 'tier']")
    if outputs["success"][-1] not in (len(card.labels), None) or isinstance(outputs["success"][-1], str):
        raise ProbeArtifactError(
            f"{folder}: head gives {outputs['success'][-1]} success columns, card has {len(card.labels)} labels"
        )
    return Probe(card, folder, features, session)


def default_probe_path(cache_dir: Path | str | None = None) -> Path:
    """Where ``triage probe build-default`` writes the default probe: ``<cache_dir>/probes/default``."""
    if cache_dir is None:
        from triage.probes.features.cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "probes" / "default"


def require_default_probe(cache_dir: Path | str | None = None) -> Path:
    """The default probe folder. Serving never trains: a missing one is a :class:`ProbeArtifactError`
    naming the command that builds it (``make demo`` and the test session run it too)."""
    path = default_probe_path(cache_dir)
    if not (path / "card.json").is_file():
        raise ProbeArtifactError(f"the default probe is not built ({path} has no card.json): "
                                 "run `triage probe build-default` first (about 3 minutes on 2 cores)")
    return path
