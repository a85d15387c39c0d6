"""The replay router contract: one abstract method and a registry (as in RouteLLM).

A replay router turns a :class:`ReplayData` into a *sweep*: for each of K operating points
(a threshold, a willingness-to-pay), the candidate it would have called on each test query.
The evaluator turns a sweep into a cost-quality curve and picks the router's default point.

Learned routers are cross-fitted by the evaluator: ``fit`` only ever sees training rows and
``sweep`` is only asked about the rows of the held-out fold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from eval.replay.matrix import ReplayData


@dataclass
class RouterSweep:
    """Candidate choices at K operating points for the queries a router was asked about.

    ``choices[k, i]`` is the column of ``data.candidates`` chosen for query ``i`` at point ``k``;
    ``knobs[k]`` is the setting that produced it (a threshold, lambda, mixing rate...), and
    ``default`` indexes the point reported as the router's headline numbers.
    """

    choices: np.ndarray  # (K, n) int
    knobs: np.ndarray  # (K,) float
    default: int = 0

    def __post_init__(self) -> None:
        self.choices = np.atleast_2d(np.asarray(self.choices, dtype=np.int64))
        self.knobs = np.asarray(self.knobs, dtype=float).reshape(-1)
        if self.choices.shape[0] != self.knobs.shape[0]:
            raise ValueError("choices and knobs disagree on the number of operating points")


class ReplayRouter(ABC):
    """Base class. Subclasses set ``name`` and implement :meth:`sweep`.

    Parameters go in ``__init__`` and are only stored there (scikit-learn style); any work
    happens in :meth:`fit`.
    """

    name: ClassVar[str]
    #: learned routers are cross-fitted; fixed ones see every row at once.
    learned: ClassVar[bool] = False

    def fit(self, data: ReplayData, train: np.ndarray) -> "ReplayRouter":
        """Learn from rows ``train`` of ``data``. Fixed routers do nothing."""
        return self

    @abstractmethod
    def sweep(self, data: ReplayData, rows: np.ndarray) -> RouterSweep:
        """Choices for rows ``rows`` of ``data`` at each operating point."""


_REGISTRY: dict[str, type[ReplayRouter]] = {}


def register(cls: type[ReplayRouter]) -> type[ReplayRouter]:
    """Class decorator: make a router available by its ``name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_routers() -> dict[str, type[ReplayRouter]]:
    from eval import routers as _pkg  # noqa: F401  (importing the package registers built-ins)

    return dict(_REGISTRY)


def make_router(spec: str) -> ReplayRouter:
    """Build a router from ``name`` or ``name:key=value,key=value``."""
    name, _, arg_text = spec.partition(":")
    routers = available_routers()
    if name not in routers:
        raise KeyError(f"unknown router {name!r}; available: {', '.join(sorted(routers))}")
    kwargs: dict[str, object] = {}
    for pair in filter(None, arg_text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"router option {pair!r} in {spec!r} is not key=value")
        kwargs[key.strip()] = _parse_value(value.strip())
    return routers[name](**kwargs)


def _parse_value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
