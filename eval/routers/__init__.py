"""Replay routers. Each router is one module; importing this package registers them all."""

import importlib
import pkgutil

from triage.eval.routers.base import ReplayRouter, RouterSweep, available_routers, make_router, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["ReplayRouter", "RouterSweep", "available_routers", "make_router", "register"]
