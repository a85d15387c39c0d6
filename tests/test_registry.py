"""The one plug-in registry type (``triage.registry``) and its one discovery rule, for all five kinds.

A plug-in is one new file in its package: these tests drop files into throwaway packages (or into
a temporary folder appended to a real plug-in package's ``__path__``) and find them by name,
without editing any list.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from triage.errors import ConfigError
from triage.registry import DuplicatePluginError, Registry, UnknownPluginError

REPO = Path(__file__).resolve().parents[1]


# -- the Registry type ------------------------------------------------------------------------------


def test_register_by_name_attribute_and_by_explicit_names():
    reg: Registry[type] = Registry("widget")

    @reg.register
    class A:
        name = "a"

    @reg.register("s1", "s2")
    class B:
        pass

    assert reg.names() == ["a", "s1", "s2"]
    assert reg.get("a") is A and reg.get("s2") is B
    assert reg.items() == [("a", A), ("s1", B), ("s2", B)]
    assert "s1" in reg and "nope" not in reg

    keyed: Registry[type] = Registry("importer", key="source")
    keyed.register(type("Imp", (), {"source": "src"}))
    assert keyed.names() == ["src"]


def test_plugin_without_a_name_is_refused():
    reg: Registry[type] = Registry("widget")
    with pytest.raises(TypeError, match="'name'"):
        reg.register(type("Nameless", (), {}))
    with pytest.raises(TypeError, match="non-empty strings"):
        reg.register("")


def test_duplicate_name_is_refused_but_same_class_again_is_not():
    reg: Registry[type] = Registry("widget")
    first = reg.register(type("First", (), {"name": "w"}))
    with pytest.raises(DuplicatePluginError, match="'w' is already registered by First"):
        reg.register(type("Second", (), {"name": "w"}))
    assert reg.get("w") is first
    reg.register(first)  # the same class again (e.g. a module imported twice): no error
    assert reg.get("w") is first


def test_unknown_name_error_lists_available_names():
    reg: Registry[type] = Registry("widget")
    reg.register(type("X", (), {"name": "x"}))
    reg.register(type("Y", (), {"name": "y"}))
    with pytest.raises(UnknownPluginError, match=r"unknown widget 'zz'; available: x, y") as err:
        reg.get("zz")
    assert isinstance(err.value, ConfigError)  # the CLI prints it as one line, exit 2
    custom: Registry[type] = Registry("widget", error=KeyError)
    with pytest.raises(KeyError, match="available: none"):
        custom.get("zz")


def _make_package(root: Path, name: str, files: dict[str, str]) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for fname, source in files.items():
        (pkg / fname).write_text(textwrap.dedent(source))


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, dict[str, str]], Path]]:
    """Build a package under tmp_path (on sys.path); its modules leave sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def build(name: str, files: dict[str, str]) -> Path:
        _make_package(tmp_path, name, files)
        made.append(name)
        return tmp_path / name

    yield build
    for mod in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[mod]


BASE = """
    from triage.registry import Registry
    REG = Registry("gadget", package=__name__.rpartition(".")[0])
"""


def test_discovery_imports_every_module_of_the_package(throwaway):
    pkg = throwaway("tmp_plugins_a", {
        "base.py": BASE,
        "alpha.py": "from tmp_plugins_a.base import REG\n@REG.register\nclass Alpha:\n    name = 'alpha'\n",
        "beta.py": "from tmp_plugins_a.base import REG\n@REG.register\nclass Beta:\n    name = 'beta'\n",
        "_private.py": "raise AssertionError('private modules are not plug-ins')\n",
    })
    reg = importlib.import_module("tmp_plugins_a.base").REG
    assert "tmp_plugins_a.alpha" not in sys.modules  # nothing imported before the first lookup
    assert reg.names() == ["alpha", "beta"]
    assert "tmp_plugins_a._private" not in sys.modules

    # A file dropped in after the first lookup is found too, without editing any list.
    (pkg / "gamma.py").write_text("from tmp_plugins_a.base import REG\n@REG.register\nclass G:\n    name = 'gamma'\n")
    importlib.invalidate_caches()
    assert reg.get("gamma").__name__ == "G"


def test_plugin_missing_a_dependency_fails_only_when_asked_for(throwaway):
    throwaway("tmp_plugins_b", {
        "base.py": BASE,
        "good.py": "from tmp_plugins_b.base import REG\n@REG.register\nclass Good:\n    name = 'good'\n",
        "needy.py": "import no_such_dependency_xyz\n",
    })
    reg = importlib.import_module("tmp_plugins_b.base").REG
    assert reg.get("good").__name__ == "Good"  # the broken neighbour does not break it
    assert list(reg.broken) == ["needy"]
    with pytest.raises(UnknownPluginError, match=r"gadget 'needy' cannot be loaded: .*no_such_dependency_xyz"):
        reg.get("needy")
    with pytest.raises(UnknownPluginError, match=r"available: good; .*needy .*no_such_dependency_xyz"):
        reg.get("other")


def test_a_bug_in_a_plugin_is_not_swallowed(throwaway):
    throwaway("tmp_plugins_c", {"base.py": BASE, "buggy.py": "1 / 0\n"})
    reg = importlib.import_module("tmp_plugins_c.base").REG
    with pytest.raises(ZeroDivisionError):
        reg.names()


# -- the five plug-in kinds: a new file in the package is found by name -------------------------------


@pytest.fixture
def extend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Add one plug-in file to a real plug-in package (a temporary folder appended to its
    ``__path__``, so nothing is written into the repository); undone after the test."""
    added: list[str] = []

    def add(registry: Registry, module: str, source: str) -> None:
        registry.discover()  # the built-ins are found first, so the snapshot below keeps them
        pkg = importlib.import_module(registry.package)
        folder = tmp_path / registry.package.replace(".", "_")
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(folder)])
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_seen", set(registry._seen))
        importlib.invalidate_caches()
        added.append(f"{registry.package}.{module}")

    yield add
    for mod in added:
        sys.modules.pop(mod, None)


def test_new_feature_file_is_found(extend):
    from triage.probes.features import make_feature
    from triage.probes.features.base import FEATURES

    make_feature("lexical")  # discovery has run: the new file must still be found
    extend(FEATURES, "tmp_len_feature", """
        import numpy as np
        from triage.probes.features.base import Feature, register_feature

        @register_feature
        class LengthFeature(Feature):
            name = "tmp-length"
            version = "1"

            @property
            def dim(self) -> int:
                return 1

            def transform(self, texts):
                return np.array([[len(t)] for t in texts], dtype=np.float32)
    """)
    out = make_feature("tmp-length").transform_checked(["abc", ""])
    assert out.tolist() == [[3.0], [0.0]]


def test_new_head_file_is_found(extend):
    from triage.probes.heads import HEADS, available_heads, make_head

    assert {"logreg", "mlp"} <= set(available_heads())
    extend(HEADS, "tmp_prior_head", """
        import numpy as np
        from triage.probes.heads.base import Head, register_head

        @register_head
        class PriorHead(Head):
            name = "tmp-prior"

            def __init__(self, smoothing: float = 1.0) -> None:
                self.smoothing = smoothing

            def fit(self, X, success, tier):
                self.p_ = (success.sum(0) + self.smoothing) / (len(success) + 2 * self.smoothing)
                return self

            def predict_proba(self, X):
                n = len(X)
                return np.tile(self.p_, (n, 1)).astype(np.float32), np.full((n, 3), 1 / 3, np.float32)

            def to_onnx(self):
                raise NotImplementedError
    """)
    head = make_head("tmp-prior", smoothing=0.0).fit(np.zeros((4, 2)), np.array([[1], [1], [0], [1]]), np.zeros(4))
    assert head.predict_proba(np.zeros((1, 2)))[0].tolist() == [[0.75]]
    assert "tmp-prior" in available_heads()
    with pytest.raises(ValueError, match="unknown head 'nope'; available: .*logreg, mlp"):
        make_head("nope")


def test_new_importer_file_is_found(extend, tmp_path):
    from triage.eval.importers import IMPORTERS, import_source

    extend(IMPORTERS, "tmp_empty_source", """
        from triage.eval.importers.base import Importer, register_importer

        @register_importer
        class EmptyImporter(Importer):
            source = "tmp-empty"

            def load(self, path, *, prices):
                return iter(())
    """)
    assert import_source("tmp-empty", tmp_path) == []
    with pytest.raises(KeyError, match="unknown source 'nope'; available: .*routellm"):
        import_source("nope", tmp_path)


def test_new_ledger_store_file_is_found(extend, tmp_path):
    from triage.router.ledger import available_stores, open_ledger
    from triage.router.ledger.store import STORES, LedgerError

    with pytest.raises(LedgerError, match="unknown ledger URL scheme 'tmpdb'"):
        open_ledger(f"tmpdb://{tmp_path}/x.db")
    extend(STORES, "tmp_alias_store", """
        from triage.router.ledger.sqlite_store import SQLiteLedgerStore
        from triage.router.ledger.store import register_store

        @register_store("tmpdb")
        class AliasStore(SQLiteLedgerStore):
            @classmethod
            def open(cls, url, **kw):
                return super().open("sqlite:///" + url[len("tmpdb://"):], **kw)
    """)
    store = open_ledger(f"tmpdb://{tmp_path}/x.db")
    try:
        assert type(store).__name__ == "AliasStore" and store.count() == 0
        assert (tmp_path / "x.db").is_file()
    finally:
        store.close()
    assert {"sqlite", "postgresql", "tmpdb"} <= set(available_stores())


def test_new_replay_router_file_is_found(extend):
    from triage.eval.routers import ROUTERS, make_router

    extend(ROUTERS, "tmp_first_router", """
        import numpy as np
        from triage.eval.routers.base import ReplayRouter, RouterSweep, register

        @register
        class FirstRouter(ReplayRouter):
            name = "tmp-first"

            def __init__(self, column: int = 0) -> None:
                self.column = column

            def sweep(self, data, rows):
                return RouterSweep(choices=np.full((1, len(rows)), self.column), knobs=[0.0])
    """)
    router = make_router("tmp-first:column=2")
    assert type(router).__name__ == "FirstRouter" and router.column == 2
    assert router.sweep(None, np.arange(3)).choices.tolist() == [[2, 2, 2]]


# -- import costs: discovering every plug-in of every kind stays torch/sklearn/litellm-free -----------


def test_discovering_all_plugins_imports_no_heavy_library():
    code = textwrap.dedent("""
        import sys
        from triage.probes.features.base import FEATURES
        from triage.probes.heads.base import HEADS
        from triage.eval.importers.base import IMPORTERS
        from triage.router.ledger.store import STORES
        from triage.eval.routers.base import ROUTERS
        for reg in (FEATURES, HEADS, IMPORTERS, STORES, ROUTERS):
            assert reg.names(), reg
            assert not reg.broken, (reg, reg.broken)
        heavy = [m for m in ("torch", "transformers", "sklearn", "litellm") if m in sys.modules]
        assert not heavy, heavy
        print(FEATURES.names(), HEADS.names(), IMPORTERS.names(), STORES.names(), ROUTERS.names())
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'lexical'" in proc.stdout and "'logreg'" in proc.stdout and "'postgresql'" in proc.stdout
