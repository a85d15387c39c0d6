"""One small plug-in registry type and one discovery rule, shared by every plug-in kind.

A plug-in kind (probe features, probe heads, importers, ledger stores, replay routers, ...) is
one package holding a ``base`` module and one module per plug-in. The base module owns a
:class:`Registry`; each plug-in module registers itself with a decorator::

    # triage.probes.heads.base
    HEADS: Registry[type[Head]] = Registry("head", package="triage.probes.heads")

    # triage.probes.heads.mine  -- adding a plug-in is this one file (plus its test)
    @HEADS.register
    class MyHead(Head):
        name = "mine"

The plug-in names itself (by default its class attribute ``name``; ``key=`` picks another
attribute or a function), or the decorator is given explicit names, e.g. URL schemes::

    @STORES.register("sqlite", "sqlite3")
    class SQLiteStore: ...

**The discovery rule** (the same for every kind): on the first lookup (:meth:`Registry.get`,
:meth:`Registry.names`, :meth:`Registry.items`, ``in``), every module of the plug-in package is
imported (``pkgutil.iter_modules`` over the package path), skipping ``base`` and private ``_*``
modules. A new file in the package is therefore found without editing any list. So that this stays
cheap, plug-in modules keep heavy imports (torch, transformers, scikit-learn, litellm) inside the
functions that need them.

A plug-in module that fails to import because a dependency is missing does not break the others:
the failure is recorded and named in the error of a lookup that does not find its name.
Registering a second, different object under a taken name is refused (:class:`DuplicatePluginError`);
re-registering the same class (same source file and qualified name, e.g. after a module reload)
replaces it.

This module is on the bottom floor: it imports nothing of the project but :mod:`triage.errors`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, overload

from triage.errors import ConfigError

T = TypeVar("T")

__all__ = ["DuplicatePluginError", "Registry", "UnknownPluginError"]


class UnknownPluginError(ConfigError, LookupError):
    """A plug-in was asked for by a name no plug-in of that kind registered."""


class DuplicatePluginError(TypeError):
    """Two different plug-ins of one kind claim the same name (a programming error)."""


#: Modules of a plug-in package that are not plug-ins: the contract and its registry.
SKIPPED_MODULES = frozenset({"base"})


def _identity(obj: Any) -> tuple[str, str]:
    """What makes two registered objects "the same plug-in": the same definition in the same
    source file, even when that file was imported again (a reload, or under a second module name
    such as ``probes.x`` next to ``triage.probes.x``)."""
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    where = getattr(module, "__file__", None) or getattr(obj, "__module__", "")
    return (str(where), getattr(obj, "__qualname__", repr(obj)))


class Registry(Generic[T]):
    """Named plug-ins of one kind, discovered from one package.

    ``kind``    - what a plug-in is called in messages ("feature", "head", "ledger store", ...);
    ``package`` - dotted name of the package whose modules are imported on first lookup
                  (``None``: no discovery, plug-ins are registered explicitly);
    ``key``     - the attribute naming a plug-in (default ``"name"``) or a function of the
                  object returning its name;
    ``error``   - exception class raised for an unknown name (default :class:`UnknownPluginError`;
                  an existing kind keeps its historical type, e.g. ``KeyError``);
    ``skip``    - extra module names of the package that are not plug-ins (helpers, builders).
    """

    def __init__(
        self,
        kind: str,
        *,
        package: str | None = None,
        key: str | Callable[[T], str] = "name",
        error: type[Exception] = UnknownPluginError,
        skip: Iterable[str] = (),
    ) -> None:
        self.kind = kind
        self.package = package
        self._key = key
        self._error = error
        self._skip = SKIPPED_MODULES | frozenset(skip)
        self._entries: dict[str, T] = {}
        self._broken: dict[str, BaseException] = {}
        self._seen: set[str] = set()
        self._discovered = package is None
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------------

    @overload
    def register(self, obj: T, /) -> T: ...

    @overload
    def register(self, *names: str) -> Callable[[T], T]: ...

    def register(self, *args: Any) -> Any:
        """Register a plug-in: ``@reg.register`` (it names itself) or ``@reg.register("a", "b")``."""
        if len(args) == 1 and not isinstance(args[0], str):
            return self._add(args[0], ())
        if not all(isinstance(a, str) and a for a in args):
            raise TypeError(f"{self.kind} names must be non-empty strings, got {args!r}")

        def decorator(obj: T) -> T:
            return self._add(obj, args)

        return decorator

    def _add(self, obj: T, names: tuple[str, ...]) -> T:
        if not names:
            name = self._key(obj) if callable(self._key) else getattr(obj, self._key, None)
            if not isinstance(name, str) or not name:
                label = getattr(obj, "__name__", repr(obj))
                raise TypeError(f"{self.kind} plug-in {label} must set a non-empty {self._key!r}")
            names = (name,)
        with self._lock:
            for name in names:
                old = self._entries.get(name)
                if old is not None and old is not obj and _identity(old) != _identity(obj):
                    where, qualname = _identity(old)
                    raise DuplicatePluginError(f"{self.kind} {name!r} is already registered by {qualname} ({where})")
            for name in names:
                self._entries[name] = obj
        return obj

    # -- discovery ------------------------------------------------------------------------------

    def discover(self) -> None:
        """Import every plug-in module of the package once (see the module docstring)."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            # Set first: a plug-in module that looks something up while being imported must not
            # start a second discovery.
            self._discovered = True
            self._scan()

    def _scan(self) -> None:
        """Import the package's plug-in modules not imported yet (new files included)."""
        if self.package is None:
            return
        with self._lock:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
                if info.name.startswith("_") or info.name in self._skip or info.name in self._seen:
                    continue
                self._seen.add(info.name)
                try:
                    importlib.import_module(f"{self.package}.{info.name}")
                except ImportError as exc:
                    # A missing optional dependency disables this plug-in only; it is reported
                    # when a lookup misses (see get). Other exceptions are bugs and propagate.
                    self._broken[info.name] = exc

    @property
    def broken(self) -> dict[str, BaseException]:
        """Plug-in modules that failed to import, by module name, with their error."""
        self.discover()
        return dict(self._broken)

    # -- lookup ---------------------------------------------------------------------------------

    def _find(self, name: object) -> bool:
        self.discover()
        if name not in self._entries:
            # A file added to the package after the first lookup is found too (cheap: one listdir).
            self._scan()
        return name in self._entries

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``; an unknown name raises an error listing the known ones."""
        if self._find(name):
            return self._entries[name]
        known = ", ".join(self.names()) or "none"
        own = self._broken.get(name.replace("-", "_"))
        if own is not None:
            # The file that should hold this plug-in is there but needs a dependency that is not.
            raise self._error(
                f"{self.kind} {name!r} cannot be loaded: module {self.package}.{name.replace('-', '_')} "
                f"failed to import ({own}); available: {known}"
            ) from own
        msg = f"unknown {self.kind} {name!r}; available: {known}"
        if self._broken:
            failed = "; ".join(f"{mod} ({exc})" for mod, exc in sorted(self._broken.items()))
            msg += f"; plug-in modules that could not be imported: {failed}"
        raise self._error(msg)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.discover()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, plug-in)`` pairs sorted by name."""
        self.discover()
        return sorted(self._entries.items(), key=lambda kv: kv[0])

    def __contains__(self, name: object) -> bool:
        return self._find(name)

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, package={self.package!r}, names={sorted(self._entries)})"
