"""Shared pytest fixtures. Sections belong to areas; keep additions additive and sectioned."""

# ---- the test cache: tests never read or write the developer's .triage-cache ----------------------
# Set before anything reads settings (and inherited by every sidecar/CLI subprocess a test starts).
# It persists between runs (warm runs reuse the encoder export, the dequantised models and the small
# session probe); TRIAGE_TEST_CACHE_DIR moves it (an empty folder simulates a fresh clone).
from tests.support.cache import use_test_cache  # noqa: E402

use_test_cache()

# ---- ledger: a real PostgreSQL server on loopback (tests/support/postgres.py) ----------------
# `postgres_server` (session) finds/installs/starts it or records why it cannot; `postgres_url`
# gives each test a fresh schema, and skips LOUDLY when no server can be had.
# Set TRIAGE_TEST_POSTGRES_URL to use an existing server instead.
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401

# ---- probes: a 200-query GSM8K slice and a text probe trained + exported on it -------------------
from tests.support.probes import probe_copy, probe_slice_file, trained_text_probe  # noqa: E402,F401

# ---- hostile input and faults: one report over tests/test_hostile_*.py (eval/bench/hostile.py) ----
from tests.support.hostile import hostile  # noqa: E402,F401

# ---- artifacts: serving never builds them, so the session builds them once up front ------------
# A *small* default probe (text:aux=false on GSM8K + a third of MMLU: the MiniLM export and ~20 s
# on a fresh clone; a load check when the test cache already holds it) at
# <test cache>/probes/default, for everything that needs "some probe". Sidecars and routers started
# by tests only load it. The real `triage probe build-default` is tests/test_default_probe.py (minutes).
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def built_default_probe():
    from tests.support.probes import ensure_session_default_probe

    return ensure_session_default_probe()


@pytest.fixture(scope="session", autouse=True)
def built_local_model():
    """The int4 ONNX build of the test model (SmolLM2-135M; ~10 s on a fresh clone, a hash check
    after). Routers, sidecars and the provider only load it, as in production."""
    from triage.lm.onnx_build import build_onnx

    return build_onnx("smollm2-135m")


@pytest.fixture(autouse=True)
def _stay_in_the_test_cache():
    """A test that points TRIAGE_CACHE_DIR elsewhere and clears settings must not leave later tests
    on another cache (a `monkeypatch.delenv` would fall back to the developer's real one)."""
    yield
    use_test_cache()
