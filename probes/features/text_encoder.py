"""Text features that work for any provider: the MiniLM sentence embedding (+ lexical statistics).

* ``minilm`` - the 384-dim L2-normalised mean-pooled embedding of the exported encoder
  (onnxruntime + tokenizers; see :mod:`triage.probes.encoder`).
* ``text``   - ``minilm`` followed by the ``lexical`` features and (``aux=True``, default) the
  predicted GSM8K solution profile of :mod:`triage.probes.features.difficulty_aux`: the default probe input.

The encoder file is identified by its sha256 (part of :meth:`identity`, so the feature cache and
probe cards never mix two encoders); where it lives is not (the training cache and a probe folder
hold byte-identical copies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from triage.probes.encoder.runtime import DEFAULT_VARIANT, ENCODER_CARD, TextEncoder, require_encoder
from triage.probes.features.base import Feature, register_feature
from triage.probes.features.difficulty_aux import (
    AUX_CARD,
    AUX_FILE,
    PCA_CARD,
    PCA_FILE,
    AuxRegressor,
    QuestionPCA,
    require_aux_model,
    require_question_pca,
)
from triage.probes.features.difficulty_aux import TARGETS as AUX_TARGETS
from triage.probes.features.lexical import LexicalFeature


@register_feature
class MiniLMFeature(Feature):
    """MiniLM-L6-v2 sentence embedding via onnxruntime (``variant``: ``int8-l2`` default, ``int8-l3``, ``int8``, ``fp32``; ``l0``: no layer, the fast probe's)."""

    name = "minilm"
    version = "1"

    def __init__(
        self,
        variant: str = DEFAULT_VARIANT,
        max_tokens: int = 128,
        intra_op_threads: int = 1,
        encoder_dir: str | None = None,
        workers: int = 2,
    ) -> None:
        self.variant = variant
        self.max_tokens = max_tokens
        self.intra_op_threads = intra_op_threads
        self.encoder_dir = encoder_dir
        self.workers = workers
        self._encoder: TextEncoder | None = None

    # where the files are and how many threads run them change speed, not values: not identity.
    _RUNTIME_ONLY = ("encoder_dir", "intra_op_threads", "workers")

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in super().get_params().items() if k not in self._RUNTIME_ONLY}

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            folder = Path(self.encoder_dir) if self.encoder_dir else require_encoder()
            self._encoder = TextEncoder(
                folder, variant=self.variant, max_tokens=self.max_tokens,
                intra_op_threads=self.intra_op_threads, workers=self.workers,
            )
        return self._encoder

    @property
    def dim(self) -> int:
        return 384

    def identity(self) -> dict[str, Any]:
        out = super().identity()
        out["encoder"] = {
            "name": self.encoder.card["name"],
            "source": self.encoder.card["source"],
            "sha256": self.encoder.file_hashes(),
        }
        return out

    def transform(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def artifact_files(self) -> dict[str, Path]:
        folder = self.encoder.model_dir
        return {name: folder / name for name in (self.encoder.model_file, "tokenizer.json", ENCODER_CARD)}

    @classmethod
    def from_artifact(cls, params: dict[str, Any], folder: Path) -> "MiniLMFeature":
        return cls(**{**params, "encoder_dir": str(folder)})


@register_feature
class TextFeature(MiniLMFeature):
    """MiniLM embedding + lexical statistics (+ the GSM8K solution-profile predictions with ``aux``).

    ``aux=True`` (default) appends the 12 outputs of :mod:`triage.probes.features.difficulty_aux`, a small
    regressor trained on GSM8K *train* solutions that reads the same embedding and lexical values,
    so the encoder still runs once per query. ``text:aux=false`` is the plain MiniLM + lexical input.

    ``pca=k`` (k > 0) replaces the 384 embedding values by their first k principal components over
    GSM8K *train* questions (unsupervised): fewer parameters for heads trained on ~1,000 queries.
    The aux regressors still read the full embedding.
    """

    name = "text"
    version = "1"

    def __init__(
        self,
        variant: str = DEFAULT_VARIANT,
        max_tokens: int = 128,
        aux: bool = True,
        pca: int = 0,
        intra_op_threads: int = 1,
        encoder_dir: str | None = None,
        aux_dir: str | None = None,
        pca_dir: str | None = None,
        workers: int = 2,
    ) -> None:
        super().__init__(variant, max_tokens, intra_op_threads, encoder_dir, workers)
        self.aux = aux
        self.pca = pca
        self.aux_dir = aux_dir
        self.pca_dir = pca_dir
        self._lexical = LexicalFeature()
        self._aux_model: AuxRegressor | None = None
        self._pca_model: QuestionPCA | None = None

    _RUNTIME_ONLY = ("encoder_dir", "intra_op_threads", "workers", "aux_dir", "pca_dir")

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if not self.pca:  # keep the identity (and cache keys) of pca-less features unchanged
            params.pop("pca", None)
        return params

    @property
    def pca_model(self) -> QuestionPCA:
        if self._pca_model is None:
            folder = Path(self.pca_dir) if self.pca_dir else require_question_pca(variant=self.variant)
            self._pca_model = QuestionPCA(folder, self.pca)
        return self._pca_model

    @property
    def aux_model(self) -> AuxRegressor:
        if self._aux_model is None:
            folder = Path(self.aux_dir) if self.aux_dir else require_aux_model(variant=self.variant)
            self._aux_model = AuxRegressor(folder)
        return self._aux_model

    @property
    def dim(self) -> int:
        return (self.pca or 384) + self._lexical.dim + (len(AUX_TARGETS) if self.aux else 0)

    def identity(self) -> dict[str, Any]:
        out = super().identity()
        out["lexical_version"] = self._lexical.version
        if self.aux:
            card = self.aux_model.card
            out["aux"] = {"name": card["name"], "sha256": card["sha256"], "training_data": card["training_data"]["sha256"]}
        if self.pca:
            card = self.pca_model.card
            out["pca"] = {"name": card["name"], "sha256": card["sha256"], "training_data": card["training_data"]["sha256"]}
        return out

    def transform(self, texts: list[str]) -> np.ndarray:
        emb = self.encoder.encode(texts)
        lexical = self._lexical.transform(texts)
        base = np.concatenate([emb, lexical], axis=1)
        parts = [self.pca_model.project(emb), lexical] if self.pca else [base]
        if self.aux:
            parts.append(self.aux_model.predict(base))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else base

    def artifact_files(self) -> dict[str, Path]:
        files = super().artifact_files()
        if self.aux:
            files.update({name: self.aux_model.folder / name for name in (AUX_FILE, AUX_CARD)})
        if self.pca:
            files.update({name: self.pca_model.folder / name for name in (PCA_FILE, PCA_CARD)})
        return files

    @classmethod
    def from_artifact(cls, params: dict[str, Any], folder: Path) -> "TextFeature":
        extra = {"aux_dir": str(folder)} if params.get("aux", True) else {}
        if params.get("pca"):
            extra["pca_dir"] = str(folder)
        return cls(**{**params, "encoder_dir": str(folder), **extra})
