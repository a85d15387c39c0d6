"""The head contract: features in, per-label success and tier probabilities out.

A head is fitted at train time (scikit-learn or torch) and exported to ONNX with one input
``features`` (float32, batch x dim) and two outputs ``success`` (batch x m) and ``tier``
(batch x 3, rows sum to 1). The runtime only ever sees the ONNX file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from triage.registry import Registry

ONNX_OPSET = 17
INPUT_NAME = "features"
OUTPUTS = ("success", "tier")


class Head(ABC):
    """Base class. Subclasses set ``name`` (the registry key, e.g. ``"logreg"``) and are decorated
    with :func:`register_head`. Parameters in ``__init__`` only; ``fit`` does the work."""

    name: ClassVar[str]

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

    def describe(self) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """What the probe card records of a fitted head: its kind, its parameters and, for a head
        that chose among candidates (:mod:`triage.probes.heads.select`), how it chose."""
        return self.name, self.get_params(), None


#: Every head of this package, found by the plug-in discovery rule of :mod:`triage.registry`
#: (adding a head is one module here; heads import scikit-learn/torch inside their methods).
HEADS: Registry[type[Head]] = Registry("head", package="triage.probes.heads", error=ValueError)


def register_head(cls: type[Head]) -> type[Head]:
    """Class decorator: make a head available by its ``name``."""
    return HEADS.register(cls)


def available_heads() -> list[str]:
    return HEADS.names()


def make_head(name: str, **params: Any) -> Head:
    return HEADS.get(name)(**params)
