"""Loading and using a price table (YAML or JSON): ``model -> input/output USD per 1M tokens``.

The shipped table, ``default_prices.yaml``, covers every model in ``../shared/data``; each entry
says where its numbers come from (``sources``) and whether they are an approximation.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from triage.policies.loader import load_yaml
from triage.errors import ConfigError

DEFAULT_PRICES_PATH = Path(__file__).with_name("default_prices.yaml")


class ModelPrice(BaseModel):
    """List price of one model, USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0.0, description="USD per 1M prompt (input) tokens.")
    output: float = Field(ge=0.0, description="USD per 1M completion tokens, reasoning tokens included.")
    sources: list[str] = Field(min_length=1, description="Where the prices come from.")
    approximate: bool = Field(default=False, description="True when no list price existed for this exact model.")
    note: str | None = None

    @field_validator("sources", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def cost(self, prompt_tokens: int | float, completion_tokens: int | float) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class PriceTable(BaseModel):
    """A price table file: ``currency``, ``unit`` and ``models``."""

    model_config = ConfigDict(extra="forbid")

    currency: Literal["USD"] = "USD"
    unit: Literal["per_million_tokens"] = "per_million_tokens"
    description: str | None = None
    models: dict[str, ModelPrice] = Field(min_length=1)
    _source_path: str | None = PrivateAttr(default=None)

    def price(self, model: str) -> ModelPrice:
        try:
            return self.models[model]
        except KeyError:
            where = f" in {self._source_path}" if self._source_path else ""
            raise ConfigError(
                f"no price for model {model!r}{where}; the table has: {', '.join(sorted(self.models))}"
            ) from None

    def cost(self, model: str, prompt_tokens: int | float, completion_tokens: int | float) -> float:
        """USD for one call of ``model``."""
        return self.price(model).cost(prompt_tokens, completion_tokens)


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read a price table; ``None`` gives the shipped default. Bad files raise :class:`ConfigError`."""
    p = Path(path) if path is not None else DEFAULT_PRICES_PATH
    return _load(p.resolve())


@lru_cache(maxsize=8)
def _load(p: Path) -> PriceTable:
    # Cached per resolved path: tables are immutable pydantic models and the default is read often.
    if not p.is_file():
        raise ConfigError(f"price file not found: {p}")
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"))  # JSON is valid YAML; duplicate keys refused
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"price file {p}{where}: not valid YAML/JSON ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"price file {p}: expected a mapping with a 'models' key, got {type(raw).__name__}")
    try:
        table = PriceTable.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"price file {p}: field '{field}': {first['msg']}") from None
    table._source_path = str(p)
    return table
