"""Importers: public logged-outcome datasets -> replay records (``triage replay import``).

One module per source, each registering an :class:`Importer` subclass under its source name;
a new module in this package is found by the plug-in discovery rule of :mod:`triage.registry`.
"""

from __future__ import annotations

from pathlib import Path

from triage.eval.importers.base import IMPORTERS, Importer, available_importers, make_importer, register_importer
from triage.eval.prices import PriceTable, load_prices
from triage.replay.schema import ReplayRecord

__all__ = [
    "IMPORTERS",
    "Importer",
    "available_importers",
    "import_source",
    "make_importer",
    "register_importer",
]


def import_source(
    source: str,
    path: str | Path,
    *,
    prices: PriceTable | str | Path | None = None,
    dataset: str | None = None,
) -> list[ReplayRecord]:
    """Import every record of ``source`` under ``path``.

    ``prices`` is a loaded table, a price file, or ``None`` for the shipped default table;
    ``dataset`` picks one sub-dataset where the source has several (e.g. ``aime-hybrid``).
    """
    table = prices if isinstance(prices, PriceTable) else load_prices(prices)
    return list(make_importer(source, dataset=dataset).load(Path(path), prices=table))
