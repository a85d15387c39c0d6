"""Auxiliary difficulty regressors learned from GSM8K *train* solutions: what runs at request time.

GSM8K's train split (7,473 questions) comes with worked solutions whose ``<<a*b=c>>`` calculator
annotations describe how much work a question takes. A small MLP learns to predict, from the
question text alone (MiniLM embedding + lexical features), a profile of that solution:
:data:`TARGETS`. At run time the text feature appends these 12 predictions (onnxruntime, ~20 us).

Only ``gsm8k/train.jsonl`` is read - never the test questions, never any model's outcome - so a
probe evaluated on the GSM8K test set sees no test information through these features.

Files (``<cache_dir>/aux/gsm8k-solutions/``): ``aux.onnx`` (StandardScaler + MLPRegressor via
skl2onnx) and ``aux.json`` (targets, their means/stds, training data sha256, sha256 of aux.onnx).
They are built by :mod:`triage.probes.features.difficulty_aux_build` (``triage probe build-default``);
the request path only loads them (:func:`require_aux_model`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np


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






def default_aux_dir(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    """Where the regressors for embeddings of encoder ``variant`` live (they read that embedding)."""
    if cache_dir is None:
        from triage.probes.features.cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "aux" / (AUX_NAME + _variant_suffix(variant))






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
            from triage.probes.encoder.runtime import make_session

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


def require_aux_model(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    """The regressors' folder; serving never trains them (a missing one names the command)."""
    path = default_aux_dir(cache_dir, variant)
    if not (path / AUX_CARD).is_file():
        raise ValueError(f"no auxiliary difficulty model at {path}: run `triage probe build-default` "
                         "(or `triage probe train`, which builds what its features need) first")
    return path


def require_question_pca(cache_dir: Path | str | None = None, variant: str = "int8") -> Path:
    """The question PCA's folder; serving never fits it (a missing one names the command)."""
    path = default_pca_dir(cache_dir, variant)
    if not (path / PCA_CARD).is_file():
        raise ValueError(f"no question PCA at {path}: run `triage probe build-default` "
                         "(or `triage probe train`, which builds what its features need) first")
    return path
