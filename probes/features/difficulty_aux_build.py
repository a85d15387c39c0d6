"""Building the auxiliary difficulty regressors and the question PCA (build time: scikit-learn).

The request path loads what this writes (:mod:`triage.probes.features.difficulty_aux`); it never trains.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from triage.probes.encoder.export import ensure_encoder, install_folder
from triage.probes.features.difficulty_aux import (
    AUX_CARD,
    AUX_FILE,
    AUX_NAME,
    PCA_CARD,
    PCA_FILE,
    PCA_MAX_COMPONENTS,
    PCA_NAME,
    TARGETS,
    default_aux_dir,
    default_pca_dir,
    solution_profile,
)


def _gsm8k_train_rows(train_file: Path | str | None) -> tuple[Path, list[dict[str, Any]]]:
    """The GSM8K train split (default: the shared data's) as (path, rows)."""
    if train_file is None:
        from triage.settings import get_settings

        train_file = get_settings().data_dir / "gsm8k" / "train.jsonl"
    train_file = Path(train_file)
    if not train_file.is_file():
        raise FileNotFoundError(f"GSM8K train split not found: {train_file}")
    rows = [json.loads(line) for line in train_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return train_file, rows


def _write_artifact(out: Path, file_name: str, data: bytes, card_name: str, card: dict[str, Any], *,
                    replace: bool) -> Path:
    """Write ``data`` and its card (with the file's sha256) into ``out``, atomically."""
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / file_name).write_bytes(data)
    card = {**card, "sha256": hashlib.sha256(data).hexdigest()}
    (tmp / card_name).write_text(json.dumps(card, indent=2))
    install_folder(tmp, out, replace=replace)
    return out


def train_aux_model(
    out_dir: Path | str,
    *,
    train_file: Path | str | None = None,
    encoder_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    seed: int = 0,
    replace: bool = True,
    variant: str = "int8",
) -> Path:
    """Fit the regressors on ``gsm8k/train.jsonl`` and write ``aux.onnx`` + ``aux.json`` to ``out_dir``."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from triage.probes.encoder.runtime import file_sha256
    from triage.probes.features.cache import FeatureCache
    from triage.probes.features.text_encoder import TextFeature

    if encoder_dir is None:  # the regressors read embeddings of the cache's exported encoder
        ensure_encoder()
    train_file, rows = _gsm8k_train_rows(train_file)
    questions = [r["question"] for r in rows]
    Y = np.asarray([solution_profile(r["answer"]) for r in rows], dtype=np.float64)
    mean, std = Y.mean(axis=0), Y.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    base = TextFeature(aux=False, variant=variant, encoder_dir=str(encoder_dir) if encoder_dir else None)
    X = FeatureCache(base, cache_dir).transform(questions)
    model = make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=(128,), alpha=1.0, max_iter=300, early_stopping=True, random_state=seed),
    ).fit(X, (Y - mean) / std)
    onx = to_onnx(model, initial_types=[("features", FloatTensorType([None, X.shape[1]]))],
                  target_opset={"": 17, "ai.onnx.ml": 3})
    card: dict[str, Any] = {
        "name": AUX_NAME,
        "targets": list(TARGETS),
        "input": f"text feature without aux (dim {X.shape[1]})",
        "input_dim": int(X.shape[1]),
        "target_mean": mean.tolist(),
        "target_std": std.tolist(),
        "training_data": {"path": str(train_file), "sha256": file_sha256(train_file), "rows": len(rows)},
        "encoder_sha256": base.encoder.file_hashes(),
        "model": "StandardScaler + MLPRegressor(128, alpha=1.0), outputs standardised targets",
    }
    return _write_artifact(Path(out_dir), AUX_FILE, onx.SerializeToString(), AUX_CARD, card, replace=replace)


def ensure_aux_model(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    path = default_aux_dir(cache_dir, variant)
    if not (path / AUX_CARD).is_file():
        train_aux_model(path, cache_dir=cache_dir, replace=False, variant=variant)
    return path


def fit_question_pca(
    out_dir: Path | str,
    *,
    train_file: Path | str | None = None,
    encoder_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    replace: bool = True,
    variant: str = "int8",
) -> Path:
    """Principal axes of the MiniLM embeddings of GSM8K *train* questions (unsupervised).

    A head trained on ~1,000 labelled queries overfits 384 embedding dimensions; the first few
    principal axes keep most of what separates question types at a fraction of the parameters
    (``text:pca=16``). Writes ``pca.npz`` (``mean`` (384,), ``components`` (64, 384), float32).
    """
    from triage.probes.encoder.runtime import file_sha256
    from triage.probes.features.cache import FeatureCache
    from triage.probes.features.text_encoder import MiniLMFeature

    if encoder_dir is None:  # the regressors read embeddings of the cache's exported encoder
        ensure_encoder()
    train_file, rows = _gsm8k_train_rows(train_file)
    encoder = MiniLMFeature(variant=variant, encoder_dir=str(encoder_dir) if encoder_dir else None)
    E = FeatureCache(encoder, cache_dir).transform([r["question"] for r in rows]).astype(np.float64)
    mean = E.mean(axis=0)
    _, singular, vt = np.linalg.svd(E - mean, full_matrices=False)
    k = min(PCA_MAX_COMPONENTS, vt.shape[0])
    buf = io.BytesIO()
    np.savez(buf, mean=mean.astype(np.float32), components=vt[:k].astype(np.float32))
    explained = (singular**2) / (singular**2).sum()
    card = {
        "name": PCA_NAME,
        "components": k,
        "explained_variance_ratio": explained[:k].round(6).tolist(),
        "training_data": {"path": str(train_file), "sha256": file_sha256(train_file), "rows": len(rows)},
        "encoder_sha256": encoder.encoder.file_hashes(),
    }
    return _write_artifact(Path(out_dir), PCA_FILE, buf.getvalue(), PCA_CARD, card, replace=replace)


def ensure_question_pca(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    path = default_pca_dir(cache_dir, variant)
    if not (path / PCA_CARD).is_file():
        fit_question_pca(path, cache_dir=cache_dir, replace=False, variant=variant)
    return path
