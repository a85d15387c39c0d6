"""The test session's own cache directory (``TRIAGE_CACHE_DIR`` for the session and its subprocesses).

Default ``<repo>/.triage-cache/test``: inside the git-ignored cache folder (``make clean`` removes it),
but a sibling of the real artifacts, never one of them - the developer's ``probes/default`` and
feature caches are left alone. It persists, so warm runs skip the encoder export, the model
dequantisation and the small session probe. ``TRIAGE_TEST_CACHE_DIR`` points it elsewhere (an empty
folder is what a fresh clone sees).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_CACHE_DIR = Path(os.environ.get("TRIAGE_TEST_CACHE_DIR") or REPO / ".triage-cache" / "test").resolve()


def use_test_cache() -> None:
    """Point settings (this process and every child) at the test cache; idempotent and cheap."""
    from triage.settings import get_settings

    if os.environ.get("TRIAGE_CACHE_DIR") != str(TEST_CACHE_DIR):
        os.environ["TRIAGE_CACHE_DIR"] = str(TEST_CACHE_DIR)
        get_settings.cache_clear()
    if Path(get_settings().cache_dir).resolve() != TEST_CACHE_DIR:
        get_settings.cache_clear()
    TEST_CACHE_DIR.mkdir(parents=True, exist_ok=True)
