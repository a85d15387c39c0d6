"""Model price tables: USD per million input/output tokens, with where each price comes from."""

from triage.eval.prices.prices import DEFAULT_PRICES_PATH, ModelPrice, PriceTable, load_prices

__all__ = ["DEFAULT_PRICES_PATH", "ModelPrice", "PriceTable", "load_prices"]
