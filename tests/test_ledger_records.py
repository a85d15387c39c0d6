"""Ledger records: derived totals, validation, no secrets and no prompt text unless asked."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from triage.probes.types import ProbeOutput
from triage.router.ledger import LedgerWriter, open_ledger
from triage.router.ledger.records import Attempt, LedgerRecord, OutcomeRecord, ProbeRecord, prompt_sha256
from triage.scrub import is_secret_key, scrub_text

SECRETS = [
    "sk-proj-Abc123def456GHI789jkl012",
    "sk-ant-api03-ZZZyyyXXXwww111222333",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "hf_abcdefghijklmnopqrstuvwxyz012345",
    "xoxb-123456789012-abcdefghijkl",
    "hunter2-db-password",
]


def test_totals_escalation_and_tier_are_derived_from_attempts() -> None:
    rec = LedgerRecord(
        request_id="r1", strategy="large", model="big",
        probe=ProbeRecord.from_output(ProbeOutput(tier_probs={"easy": 0.1, "normal": 0.2, "hard": 0.7},
                                                  success={"big": 0.8}, probe_version="p1")),
        attempts=[
            Attempt(model="small", kind="primary", prompt_tokens=10, completion_tokens=20, reasoning_tokens=5,
                    cost_usd=0.001),
            Attempt(model="big", kind="escalation", prompt_tokens=10, completion_tokens=100, reasoning_tokens=60,
                    cost_usd=0.01),
        ],
    )
    assert (rec.prompt_tokens, rec.completion_tokens, rec.reasoning_tokens) == (20, 120, 65)
    assert rec.cost_usd == pytest.approx(0.011)
    assert rec.escalated is True
    assert rec.tier == "hard" and rec.probe is not None and rec.probe.probe_version == "p1"
    assert rec.time.tzinfo is not None


def test_explicit_totals_win_and_unknown_cost_stays_unknown() -> None:
    rec = LedgerRecord(request_id="r", strategy="s", model="m", prompt_tokens=7,
                       attempts=[Attempt(model="m", prompt_tokens=3)])
    assert rec.prompt_tokens == 7 and rec.cost_usd is None and rec.escalated is False


@pytest.mark.parametrize("bad", [
    {"request_id": ""},
    {"strategy": ""},
    {"prompt_tokens": -1},
    {"cost_usd": -0.5},
    {"unknown_field": 1},
    {"prompt_sha256": "not-a-hash"},
])
def test_invalid_records_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        LedgerRecord(**{"request_id": "r", "strategy": "s", "model": "m", **bad})


@pytest.mark.parametrize("score", [-0.1, 1.01, math.nan, math.inf])
def test_outcome_score_must_be_in_unit_interval(score: float) -> None:
    with pytest.raises(ValidationError):
        OutcomeRecord(request_id="r", score=score)


def test_outcome_source_is_a_plain_word() -> None:
    assert OutcomeRecord(request_id="r", score=1, source="exact-match").source == "exact-match"
    with pytest.raises(ValidationError):
        OutcomeRecord(request_id="r", score=1, source="judge; drop table")


@pytest.mark.parametrize("secret", SECRETS[:-1])
def test_scrub_text_removes_token_shapes(secret: str) -> None:
    text = f"upstream said: invalid key {secret} (status 401)"
    out = scrub_text(text)
    assert secret not in out and "[redacted]" in out and out.startswith("upstream said")


def test_scrub_text_handles_headers_pairs_and_urls() -> None:
    out = scrub_text('Authorization: Bearer abc.def.ghijklmnop api_key="zzzzzzzz1" '
                     "postgresql://app:s3cretpw@db:5432/x password=hunter2xx")
    for s in ("abc.def.ghijklmnop", "zzzzzzzz1", "s3cretpw", "hunter2xx"):
        assert s not in out
    assert "postgresql://app:[redacted]@db:5432/x" in out


def test_secret_keys_are_recognised_but_token_counts_are_not() -> None:
    for k in ("api_key", "Authorization", "x-api-key", "OPENAI_API_KEY", "client_secret", "password", "token"):
        assert is_secret_key(k), k
    for k in ("prompt_tokens", "max_tokens", "completion_tokens", "tokenizer", "key_id", "keys_used"):
        assert not is_secret_key(k), k


def test_api_key_id_that_is_a_key_becomes_an_opaque_id() -> None:
    rec = LedgerRecord(request_id="r", strategy="s", model="m", api_key_id=SECRETS[0])
    assert rec.api_key_id is not None and rec.api_key_id.startswith("sha256:")
    assert SECRETS[0] not in rec.model_dump_json()
    assert LedgerRecord(request_id="r", strategy="s", model="m", api_key_id="key-42").api_key_id == "key-42"


def _files_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_secrets_never_reach_the_ledger_file(tmp_path: Path) -> None:
    """Credentials passed anywhere in a record are absent from the SQLite file and its WAL."""
    db = tmp_path / "ledger.sqlite"
    rec = LedgerRecord(
        request_id="r-secret", strategy="s", model="m", api_key_id=SECRETS[0], tenant="acme",
        error=f"AuthenticationError: Incorrect API key provided: {SECRETS[1]}",
        attempts=[Attempt(model="m", error=f"401 for key {SECRETS[2]}", finish_reason="error")],
        metadata={"api_key": SECRETS[6], "headers": {"Authorization": f"Bearer {SECRETS[3]}", "x-trace": "t1"},
                  "notes": [f"token {SECRETS[4]}", f"slack {SECRETS[5]}"], "max_tokens": 256},
    )
    store = open_ledger(str(db))
    with LedgerWriter(store) as w:
        w.record(rec)
    stored = store.get("r-secret")
    store.close()
    raw = _files_bytes(db)
    assert b"r-secret" in raw  # the record is there...
    for s in SECRETS:
        assert s.encode() not in raw, f"secret {s[:6]}... reached the ledger"  # ...its secrets are not
    assert stored is not None
    assert stored.metadata["max_tokens"] == 256 and stored.metadata["headers"]["x-trace"] == "t1"
    assert stored.metadata["api_key"] == "[redacted]"


def test_prompt_is_hashed_and_its_text_is_kept_only_when_enabled(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "What is the airspeed velocity of an unladen swallow?"}]
    digest = prompt_sha256(prompt)
    assert digest == prompt_sha256([{"content": prompt[0]["content"], "role": "user"}])  # key order irrelevant
    assert prompt_sha256("a") != prompt_sha256("b")

    default_db, opted_db = tmp_path / "default.sqlite", tmp_path / "opted.sqlite"
    for db, keep in ((default_db, False), (opted_db, True)):
        store = open_ledger(str(db))
        with LedgerWriter(store, store_prompts=keep) as w:
            w.record(LedgerRecord(request_id="p1", strategy="s", model="m", prompt=prompt))
        got = store.get("p1")
        store.close()
        assert got is not None and got.prompt_sha256 == digest
        assert (got.prompt == prompt) is keep
        assert (b"unladen swallow" in _files_bytes(db)) is keep
