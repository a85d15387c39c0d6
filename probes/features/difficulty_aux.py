"""Auxiliary difficulty regressors learned from GSM8K *train* solutions (train time).

GSM8K's train split (7,473 questions) comes with worked solutions whose ``<<a*b=c>>`` calculator
annotations describe how much work a question takes. A small MLP learns to predict, from the
question text alone (MiniLM embedding + lexical features), a profile of that solution:
:data:`TARGETS`. At run time the text feature appends these 12 predictions (onnxruntime, ~20 us).

Only ``gsm8k/train.jsonl`` is read - never the test questions, never any model's outcome - so a
probe evaluated on the GSM8K test set sees no test information through these features.

Files (``<cache_dir>/aux/gsm8k-solutions/``): ``aux.onnx`` (StandardScaler + MLPRegressor via
skl2onnx) and ``aux.json`` (targets, their means/stds, training data sha256, sha256 of aux.onnx).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from probes.encoder.export import install_folder

AUX_NAME = "gsm8k-solutions"
AUX_FILE = "aux.onnx"
AUX_CARD = "aux.json"

TARGETS: tuple[str, ...] = (
    "calc_steps",
    "log10_answer",
    "solution_lines",
    "log_solution_words",
    "n_add",
    "n_sub",
    "n_mul",
    "n_div",
    "n_non_integer_results",
    "log10_max_intermediate",
    "n_distinct_operands",
    "answer_non_integer",
)

_CALC = re.compile(r"<<([^=>]*)=([^>]*)>>")


def _num(text: str) -> float:
    try:
        v = float(text.replace(",", "").replace("$", "").rstrip("%").strip())
    except ValueError:
        return 0.0
    return v if math.isfinite(v) else 0.0


def solution_profile(answer: str) -> list[float]:
    """The :data:`TARGETS` of one GSM8K gold solution."""
    calcs = _CALC.findall(answer)
    exprs = "".join(c[0] for c in calcs)
    results = [_num(c[1]) for c in calcs]
    final = _num(answer.split("####")[-1])
    return [
        float(len(calcs)),
        math.log10(1 + abs(final)),
        float(len(answer.split("\n")) - 1),
        math.log(max(len(answer.split()), 1)),
        float(exprs.count("+")),
        float(exprs.count("-")),
        float(exprs.count("*")),
        float(exprs.count("/")),
        float(sum(1 for v in results if v != int(v))),
        math.log10(1 + max((abs(v) for v in results), default=0.0)),
        float(len(set(re.findall(r"\d+\.?\d*", " ".join(c[0] for c in calcs))))),
        float(final != int(final)),
    ]


def _variant_suffix(variant: str) -> str:
    # "int8" keeps the folder names of the first release so existing caches stay valid.
    return "" if variant == "int8" else f"-{variant}"


def _gsm8k_train_rows(train_file: Path | str | None) -> tuple[Path, list[dict[str, Any]]]:
    """The GSM8K train split (default: the shared data's) as (path, rows)."""
    if train_file is None:
        from router.settings import get_settings

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


def default_aux_dir(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    """Where the regressors for embeddings of encoder ``variant`` live (they read that embedding)."""
    if cache_dir is None:
        from probes.features.cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "aux" / (AUX_NAME + _variant_suffix(variant))


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

    from probes.encoder.runtime import file_sha256
    from probes.features.cache import FeatureCache
    from probes.features.text_encoder import TextFeature

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


class AuxRegressor:
    """Runs ``aux.onnx`` (request path: onnxruntime only)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._session: Any = None
        self._card: dict[str, Any] | None = None

    @property
    def card(self) -> dict[str, Any]:
        if self._card is None:
            path = self.folder / AUX_CARD
            if not path.is_file():
                raise ValueError(f"no auxiliary difficulty model at {self.folder} ({AUX_CARD} missing)")
            self._card = json.loads(path.read_text())
        return self._card

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self._session is None:
            from probes.encoder.runtime import make_session

            self._session = make_session(self.folder / AUX_FILE, intra_op_threads=1)
        (out,) = self._session.run(None, {"features": np.ascontiguousarray(X, dtype=np.float32)})
        return np.asarray(out, dtype=np.float32).reshape(X.shape[0], len(TARGETS))


# -- a low-dimensional view of the embedding ---------------------------------------------------

PCA_NAME = "gsm8k-questions-pca"
PCA_FILE = "pca.npz"
PCA_CARD = "pca.json"
PCA_MAX_COMPONENTS = 64


def default_pca_dir(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    return default_aux_dir(cache_dir).parent / (PCA_NAME + _variant_suffix(variant))


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
    from probes.encoder.runtime import file_sha256
    from probes.features.cache import FeatureCache
    from probes.features.text_encoder import MiniLMFeature

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


class QuestionPCA:
    """Projects embeddings on the first ``k`` principal axes (numpy only)."""

    def __init__(self, folder: Path | str, k: int) -> None:
        self.folder = Path(folder)
        self.k = k
        self._mean: np.ndarray | None = None
        self._components: np.ndarray | None = None
        self._card: dict[str, Any] | None = None

    @property
    def card(self) -> dict[str, Any]:
        if self._card is None:
            path = self.folder / PCA_CARD
            if not path.is_file():
                raise ValueError(f"no question PCA at {self.folder} ({PCA_CARD} missing)")
            self._card = json.loads(path.read_text())
        return self._card

    def project(self, E: np.ndarray) -> np.ndarray:
        if self._components is None:
            if not 0 < self.k <= int(self.card["components"]):
                raise ValueError(f"pca={self.k}: choose 1..{self.card['components']}")
            with np.load(self.folder / PCA_FILE, allow_pickle=False) as z:
                self._mean = z["mean"]
                self._components = np.ascontiguousarray(z["components"][: self.k].T)
        return ((E - self._mean) @ self._components).astype(np.float32)
