"""Shared pytest fixtures. Sections belong to areas; keep additions additive and sectioned."""

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
# (`triage probe build-default`: the MiniLM export, the aux regressors and the default probe; a
# no-op when .triage-cache already holds them). Sidecars and routers started by tests only load.
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def built_default_probe():
    from triage.eval.default_probe import ensure_default_probe

    return ensure_default_probe()
