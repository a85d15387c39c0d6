"""The strategy-kind contract (:class:`StrategyKind`), its registry and the model -> kind rule.

A kind module registers one instance::

    # triage/policies/kinds/mine.py  -- a new kind is this one file (plus its test)
    @KINDS.register
    class MyKind(StrategyKind):
        name = "mine"
        prefix = "mine/"
        provider_name = "mine"          # litellm's provider; model strings are "mine/<x>"
        is_local = True                 # no API key, priced at zero

        def make_provider(self):        # heavy imports stay inside (discovery imports this module)
            from triage.policies.kinds.providers.base import OneShotProvider
            ...

Hooks take the model string and the kind's validated options (never a Strategy: this module sits
below :mod:`triage.policies.strategy`, which asks it about every strategy).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from triage.registry import Registry

#: Price rule result: USD per prompt token, per completion token, and the source's name.
PerToken = tuple[float, float, str]


class StrategyKind:
    """What one kind of model string means. Subclass, set the class attributes, override hooks."""

    name: ClassVar[str] = ""
    #: The model prefix it claims; None only for the default kind (plain litellm model strings).
    prefix: ClassVar[str | None] = None
    #: Runs on this machine: no API key is sent, reasoning_effort always passes, price zero.
    is_local: ClassVar[bool] = False
    #: The key of its options in a strategy (``token_routing:``) and their model; None: no options.
    options_field: ClassVar[str | None] = None
    options_model: ClassVar[type[BaseModel] | None] = None
    #: The litellm custom provider it registers (see :meth:`make_provider`); None: litellm's own.
    provider_name: ClassVar[str | None] = None
    #: The form its model strings take, for error messages.
    syntax: ClassVar[str] = ""

    # -- policy files ---------------------------------------------------------------------------

    def claims(self, model: str) -> bool:
        return self.prefix is not None and model.startswith(self.prefix)

    def validate(self, model: str, options: BaseModel | None) -> None:
        """Raise ValueError (a readable message) when ``model``/``options`` cannot work."""

    def local_models(self, model: str) -> list[str]:
        """Local models (``triage.lm`` names) a strategy of this kind runs; the probe may share them."""
        return []

    def price(self, model: str) -> PerToken | None:
        """Per-token price, or None for litellm's cost map (a strategy's ``price`` wins over both)."""
        return (0.0, 0.0, "local") if self.is_local else None

    # -- calls ----------------------------------------------------------------------------------

    def register(self) -> Any:
        """Register the kind's litellm provider (idempotent); returns its handler, or None."""
        if self.provider_name is None:
            return None
        from triage.policies.kinds.providers.base import register_provider

        return register_provider(self.provider_name, self.make_provider)

    def make_provider(self) -> Any:
        """A new handler for :attr:`provider_name` (a ``litellm.CustomLLM``)."""
        raise NotImplementedError(f"strategy kind {self.name!r} names provider {self.provider_name!r} "
                                  "but does not make one")

    def call_kwargs(self, model: str, options: BaseModel | None) -> dict[str, Any]:
        """litellm keyword arguments the kind adds to every call."""
        return {}

    def attempt_extra(self, hidden: dict[str, Any]) -> dict[str, Any]:
        """Per-attempt metadata from a response's ``_hidden_params`` (or, streamed, the chunks'
        ``provider_specific_fields``): merged into the attempt's ``extra``."""
        return {}

    def ledger_metadata(self, extras: list[dict[str, Any]]) -> dict[str, Any]:
        """Ledger-record metadata folded from the ``extra`` of this kind's attempts."""
        return {}

    def startup_problem(self, model: str, *, installed: bool = False) -> str | None:
        """Why ``model`` cannot be called (checked when a Router is built), or None."""
        return None

    # -- helpers --------------------------------------------------------------------------------

    def parse_options(self, raw: Any) -> BaseModel | None:
        """The validated options (pydantic ValidationError for bad ones); None when unset."""
        if self.options_model is None or raw is None:
            return None
        return self.options_model.model_validate(raw)

    def __repr__(self) -> str:
        return f"<strategy kind {self.name!r}>"


class _KindRegistry(Registry[StrategyKind]):
    """``@KINDS.register`` takes the class and registers one instance of it."""

    def register(self, *args: Any) -> Any:  # type: ignore[override]
        if len(args) == 1 and isinstance(args[0], type):
            super().register(args[0]())
            return args[0]
        if len(args) == 1 and isinstance(args[0], StrategyKind):
            return super().register(args[0])
        raise TypeError("register a StrategyKind subclass (@KINDS.register) or instance")


# "providers" holds the built-in kinds' litellm providers: not plug-ins.
KINDS: Registry[StrategyKind] = _KindRegistry("strategy kind", package="triage.policies.kinds", skip=("providers",))


def kind_of(model: str) -> StrategyKind:
    """The kind that claims ``model``: the longest matching prefix, else the default kind."""
    claimed = [k for _, k in KINDS.items() if k.claims(model)]
    if claimed:
        return max(claimed, key=lambda k: len(k.prefix or ""))
    return KINDS.get(DEFAULT_KIND)


def option_fields() -> dict[str, StrategyKind]:
    """Each kind's options key (``token_routing``) -> the kind."""
    return {k.options_field: k for _, k in KINDS.items() if k.options_field}


DEFAULT_KIND = "litellm"
