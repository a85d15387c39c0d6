"""Triage: an adaptive reasoning router. Everything installs under this one import name.

    from triage import Router
    router = Router.from_file("policies/examples/local.yaml")

Subpackages: ``triage.probes`` (difficulty probes), ``triage.policies`` (strategies and the
decision rule), ``triage.router`` (the routing core, SDK adapters, sidecar, ledger, CLI),
``triage.eval`` (replay evaluation, benchmarks, offline builders). The modules directly in this
package (errors, settings, logging, the replay data model, spec parsing) are the bottom floor that
every other package may import.

In the repository the subpackages live in top-level folders (``router/``, ``probes/``, ...), mapped
here by ``package-dir`` in pyproject.toml for an installed wheel; for a source checkout (editable
install, or the repository root on ``sys.path``) the lines below add the repository root to this
package's path so ``triage.router`` finds ``router/``. Only ``triage`` itself is importable at the
top level of an installed wheel, so a user's own ``router.py`` or ``eval/`` never collides.
"""

from __future__ import annotations

from pathlib import Path as _Path
from typing import TYPE_CHECKING, Any

_here = _Path(__file__).resolve().parent
if not (_here / "router").is_dir() and (_here.parent / "router" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 - a source checkout: subpackages sit beside us

__version__ = "0.1.0"

__all__ = ["Decision", "Router", "TriageError", "TriageProviderError", "atriage_completion", "triage_completion",
           "triage_route"]

if TYPE_CHECKING:
    from triage.errors import TriageError
    from triage.policies.decide import Decision
    from triage.router.core import Router, TriageProviderError
    from triage.router.sdk.completion import atriage_completion, triage_completion, triage_route

_LAZY = {
    "Router": "triage.router.core",
    "TriageProviderError": "triage.router.core",
    "Decision": "triage.policies.decide",
    "TriageError": "triage.errors",
    "triage_completion": "triage.router.sdk.completion",
    "atriage_completion": "triage.router.sdk.completion",
    "triage_route": "triage.router.sdk.completion",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import triage` (and `triage --help`) stays cheap; litellm loads with the router.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'triage' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
