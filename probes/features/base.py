"""The feature plug-in contract: one abstract method and a registry.

A feature turns query texts into a fixed-width float32 matrix. It declares

* ``name``    - registry key, e.g. ``"text"``, ``"lexical"``, ``"lm"``;
* ``version`` - bump it whenever the numbers it produces change (cache keys and probe cards
  include it, so a stale cache or an old probe is never silently reused);
* ``dim``     - output width (a property: it may depend on the parameters);
* ``params``  - the constructor arguments; they are part of the cache key and of the probe card.

Parameters go in ``__init__`` and are only stored there (scikit-learn style); loading a model
happens lazily on the first :meth:`Feature.transform`.

Adding a feature is one file in this package (found by :mod:`triage.registry`'s discovery rule)::

    @register_feature
    class MyFeature(Feature):
        name = "mine"
        version = "1"

        def __init__(self, k: int = 4) -> None:
            self.k = k

        @property
        def dim(self) -> int:
            return self.k

        def transform(self, texts: list[str]) -> np.ndarray:
            ...  # (len(texts), self.dim) float32

This module imports numpy only; a feature that needs torch says so with ``requires_torch = True``
(the probe runtime then expects its values to be passed in as ``precomputed``).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from triage.registry import Registry


class FeatureError(ValueError):
    """A feature was asked for by an unknown name, with bad parameters, or returned a bad shape."""


#: What any feature reads of a query: its first ``TEXT_HEAD_CHARS`` and last ``TEXT_TAIL_CHARS``
#: characters (joined by one newline). A longer text costs the same as a 32 KiB one, so a 1 MB prompt
#: cannot hold the request path; texts up to the sum are read whole, so values do not change there.
TEXT_HEAD_CHARS = 16_384
TEXT_TAIL_CHARS = 16_384


def cap_text(text: str) -> str:
    """The part of ``text`` features read (see :data:`TEXT_HEAD_CHARS`); short texts unchanged."""
    if len(text) <= TEXT_HEAD_CHARS + TEXT_TAIL_CHARS:
        return text
    # The newline keeps a number or word cut at either end from merging with the other part.
    return text[:TEXT_HEAD_CHARS] + "\n" + text[-TEXT_TAIL_CHARS:]


class Feature(ABC):
    """Base class of query features. Subclasses set ``name``/``version`` and implement ``transform``."""

    name: ClassVar[str]
    version: ClassVar[str]
    #: True when computing the feature needs torch/transformers (a train-time or local-model path).
    requires_torch: ClassVar[bool] = False

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of columns :meth:`transform` returns."""

    @abstractmethod
    def transform(self, texts: list[str]) -> np.ndarray:
        """Features of ``texts`` as a ``(len(texts), dim)`` float32 array."""

    # -- parameters -------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as stored on the instance (JSON-serialisable values only)."""
        sig = inspect.signature(type(self).__init__)
        out: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = getattr(self, p.name, p.default)
        return out

    def identity(self) -> dict[str, Any]:
        """What makes two instances produce the same numbers: name, version, params, dim."""
        return {"name": self.name, "version": self.version, "params": self.get_params(), "dim": self.dim}

    # -- probe artifacts (optional hooks) ------------------------------------------------------

    def artifact_files(self) -> dict[str, Path]:
        """Files the feature needs at run time, by name; the exporter copies them into the probe
        folder (under ``features/<name>/``) and records their sha256 in the card. Default: none."""
        return {}

    @classmethod
    def from_artifact(cls, params: dict[str, Any], folder: Path) -> "Feature":
        """Rebuild the feature at run time from its card ``params`` and the folder holding the
        files of :meth:`artifact_files`. Default: ``cls(**params)``."""
        return cls(**params)

    def transform_checked(self, texts: list[str]) -> np.ndarray:
        """:meth:`transform` on the capped texts (:func:`cap_text`) plus a shape/dtype/finiteness check.

        The one entry point of the probe runtime and the feature cache, so every text feature
        (request path, SDK, replay, training) reads the same bounded text. Torch features are left
        whole: at request time the local model computes them from its own prefill of the prompt,
        which its context window bounds (a longer prompt is refused there).
        """
        texts = list(texts) if self.requires_torch else [cap_text(t) for t in texts]
        out = np.asarray(self.transform(texts), dtype=np.float32)
        if out.shape != (len(texts), self.dim):
            raise FeatureError(
                f"feature {self.name!r} v{self.version} returned shape {out.shape}, "
                f"expected ({len(texts)}, {self.dim})"
            )
        if not np.isfinite(out).all():
            raise FeatureError(f"feature {self.name!r} v{self.version} returned NaN or inf values")
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


#: Every feature of this package, found by the one plug-in discovery rule of
#: :mod:`triage.registry` (each module of the package is imported on first lookup; feature
#: modules keep torch/transformers imports inside functions, so that stays cheap).
FEATURES: Registry[type[Feature]] = Registry(
    "feature", package="triage.probes.features", error=FeatureError
)


def register_feature(cls: type[Feature]) -> type[Feature]:
    """Class decorator: make a feature available by its ``name``."""
    if not getattr(cls, "name", None) or not getattr(cls, "version", None):
        raise TypeError(f"{cls.__name__} must set class attributes 'name' and 'version'")
    return FEATURES.register(cls)


def available_features() -> dict[str, type[Feature]]:
    """All registered features (imports every feature module of the package)."""
    return dict(FEATURES.items())


def get_feature_class(name: str) -> type[Feature]:
    return FEATURES.get(name)


def make_feature(name: str, **params: Any) -> Feature:
    """Build a registered feature from its name and parameters."""
    cls = get_feature_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise FeatureError(f"bad parameters for feature {name!r}: {exc}") from None
