"""Replay routers. Each router is one module of this package, found on first lookup by the
plug-in discovery rule of :mod:`triage.registry`."""

from triage.eval.routers.base import ROUTERS, ReplayRouter, RouterSweep, available_routers, make_router, register

__all__ = ["ROUTERS", "ReplayRouter", "RouterSweep", "available_routers", "make_router", "register"]
