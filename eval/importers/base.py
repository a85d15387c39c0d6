"""The importer contract: one abstract method and a registry (as in RouteLLM).

An importer turns one public dataset of logged model outcomes into :class:`ReplayRecord` objects.
Adding a source is one module in this package with a class decorated by :func:`register_importer`;
the plug-in discovery rule of :mod:`triage.registry` finds it (no list to edit).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from triage.eval.prices import PriceTable
from triage.registry import Registry
from triage.replay.schema import ReplayRecord


class Importer(ABC):
    """Base class. Subclasses set ``source`` (and ``datasets`` if PATH can hold several).

    Parameters go in ``__init__`` and are only stored there (scikit-learn style).
    """

    source: ClassVar[str]
    #: sub-datasets a folder may hold, selectable with ``dataset=`` / ``--dataset``
    datasets: ClassVar[tuple[str, ...]] = ()
    #: whether costs come from the price table (False: the data logs its own USD cost)
    uses_prices: ClassVar[bool] = True

    def __init__(self, dataset: str | None = None) -> None:
        self.dataset = dataset

    @abstractmethod
    def load(self, path: Path, *, prices: PriceTable) -> Iterator[ReplayRecord]:
        """Yield one record per query found under ``path`` (a dataset folder or file)."""

    def selected(self, available: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The sub-datasets to import: ``self.dataset`` if set (validated), else all ``available``."""
        choices = self.datasets if available is None else available
        if self.dataset is None:
            return choices
        if self.dataset not in self.datasets:
            known = ", ".join(self.datasets) if self.datasets else "none (this source has one dataset)"
            raise ValueError(f"unknown dataset {self.dataset!r} for source {self.source!r}; choose from: {known}")
        if self.dataset not in choices:
            raise FileNotFoundError(f"dataset {self.dataset!r} not found under the given path")
        return (self.dataset,)


#: Every importer of this package, by ``source`` name (the discovery rule of :mod:`triage.registry`).
IMPORTERS: Registry[type[Importer]] = Registry(
    "source", package="triage.eval.importers", key="source", error=KeyError
)


def register_importer(cls: type[Importer]) -> type[Importer]:
    """Class decorator: make an importer available by its ``source`` name."""
    return IMPORTERS.register(cls)


def available_importers() -> dict[str, type[Importer]]:
    return dict(IMPORTERS.items())


def make_importer(source: str, *, dataset: str | None = None) -> Importer:
    return IMPORTERS.get(source)(dataset=dataset)


def require_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path not found: {p}")
    return p
