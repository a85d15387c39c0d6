"""The head contract: features in, per-label success and tier probabilities out.

A head is fitted at train time (scikit-learn or torch) and exported to ONNX with one input
``features`` (float32, batch x dim) and two outputs ``success`` (batch x m) and ``tier``
(batch x 3, rows sum to 1). The runtime only ever sees the ONNX file.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

ONNX_OPSET = 17
INPUT_NAME = "features"
OUTPUTS = ("success", "tier")


class Head(ABC):
    """Base class. Parameters in ``__init__`` only; ``fit`` does the work."""

    kind: ClassVar[str]

    @abstractmethod
    def fit(self, X: np.ndarray, success: np.ndarray, tier: np.ndarray) -> "Head":
        """``X`` (n, d) float32, ``success`` (n, m) 0/1, ``tier`` (n,) in 0..2."""

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated ``(success (n, m), tier (n, 3))`` probabilities, float32."""

    @abstractmethod
    def to_onnx(self) -> Any:
        """An ``onnx.ModelProto`` computing the same two outputs from ``features``."""

    def get_params(self) -> dict[str, Any]:
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}


_HEADS = {"logreg": "triage.probes.heads.logreg:LogRegHead", "mlp": "triage.probes.heads.mlp:MLPHead"}


def available_heads() -> list[str]:
    return sorted(_HEADS)


def make_head(kind: str, **params: Any) -> Head:
    if kind not in _HEADS:
        raise ValueError(f"unknown head {kind!r}; choose from: {', '.join(available_heads())}")
    module, _, cls = _HEADS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)(**params)
