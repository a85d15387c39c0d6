"""A /v1/route decision reused by the chat call that follows it (issue #15, exploration).

With exploration on, the strategy is drawn from a number fixed by the request id; /v1/route and the
chat call get different ids. /v1/route returns a server-signed decision token; the chat call sends it
as ``x-triage-decision-token`` and then draws the route's strategy, and its ledger record names the
route's id. Tokens the server did not sign, expired ones, and tokens of another key or model are a
400 JSON error. Real sidecar on loopback (SmolLM2 on CPU), the official openai client.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import httpx
import pytest
import yaml
from triage.policies.decide import decide
from triage.policies.loader import load_policy
from triage.probes.types import ProbeOutput
from triage.router.sidecar.decision_token import HEADER, DecisionTokens
from triage.router.sidecar.errors import SidecarError

from tests.support.sidecar import (
    CLIENT_KEY,
    LOCAL_POLICY,
    OTHER_KEY,
    SidecarProcess,
    openai_client,
    record_of,
)

SECRET = "test-decision-token-secret-0123456789"
QUESTIONS = ["What is 2 + 2?", "Name a primary colour.", "Prove that there are infinitely many primes.",
             "What is the capital of France?", "Integrate x^2 sin x dx.", "Say hi."]


# -- the token itself ------------------------------------------------------------------------------


def test_token_round_trip_and_every_refusal_is_a_400() -> None:
    tokens = DecisionTokens(SECRET.encode(), ttl_s=60)
    tok = tokens.issue("rid-1", "team-a", "triage/local", now=1000.0)
    assert tokens.check(tok, "team-a", "triage/local", now=1059.0).request_id == "rid-1"

    def refused(token: str, key: str | None = "team-a", target: str = "triage/local", now: float = 1000.0,
                by: DecisionTokens = tokens) -> SidecarError:
        with pytest.raises(SidecarError) as err:
            by.check(token, key, target, now=now)
        assert err.value.status == 400 and err.value.param == HEADER
        return err.value

    assert refused(tok, now=1061.0).code == "expired_decision_token"
    assert "another API key" in refused(tok, key="team-b").message
    assert refused(tok, key=None).code == "invalid_decision_token"
    assert "triage/other" in refused(tok, target="triage/other").message
    assert "signature" in refused(tok, by=DecisionTokens(b"another-secret-0123456789")).message
    payload, mac = tok.split(".")
    # A caller that rewrites the request id (to choose its draw) breaks the signature.
    forged = tokens.issue("rid-2", "team-a", "triage/local", now=1000.0).split(".")[0] + "." + mac
    assert "signature" in refused(forged).message
    for junk in ("", "x", "a.b.c", "é.é", payload + "." + "A" * 5000, "!!!." + mac):
        assert refused(junk).code == "invalid_decision_token"


# -- through the real sidecar ----------------------------------------------------------------------


def exploring_policy(folder: Path) -> Path:
    """local.yaml exploring uniformly (epsilon 1 over its three strategies): every draw matters."""
    raw = copy.deepcopy(yaml.safe_load(LOCAL_POLICY.read_text()))
    raw.update(name="local-explore", exploration={"type": "epsilon", "epsilon": 1.0})
    path = folder / "local-explore.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decision-token")
    proc = SidecarProcess(folder, [exploring_policy(folder), LOCAL_POLICY],
                          extra={"decision_token_secret": SECRET, "decision_token_ttl_s": 120})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


def route(server, question: str, key: str = CLIENT_KEY, model: str = "triage/local-explore") -> dict:
    r = httpx.post(server.url + "/v1/route", timeout=300, headers={"Authorization": f"Bearer {key}"},
                   json={"model": model, "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_chat_with_the_token_draws_the_routes_strategy_and_the_ledger_links_both(server, client) -> None:
    policy = load_policy(server.folder / "local-explore.yaml")
    strategies = set()
    for q in QUESTIONS:
        routed = route(server, q)
        assert routed["decision_token_ttl_s"] == 120
        raw = client.chat.completions.with_raw_response.create(
            model="triage/local-explore", messages=[{"role": "user", "content": q}], max_tokens=2,
            extra_headers={HEADER: routed["decision_token"]})
        rid = raw.headers["x-triage-request-id"]
        assert rid != routed["request_id"]  # its own record, ...
        assert raw.headers["x-triage-strategy"] == routed["decision"]["strategy"]  # ... the route's draw
        rec = record_of(server.ledger, rid)
        assert rec.decided_strategy == routed["decision"]["strategy"]
        assert rec.metadata["route_request_id"] == routed["request_id"]
        assert rec.propensity == pytest.approx(1 / 3)
        # Replay is exact with the route's id as the seed.
        out = ProbeOutput(tier_probs=rec.probe.tier_probs, success=rec.probe.success,
                          probe_version=rec.probe.probe_version)
        assert decide(policy, out, request_id=routed["request_id"]).strategy == rec.decided_strategy
        strategies.add(rec.decided_strategy)
    assert len(strategies) > 1  # exploration really drew different strategies (epsilon 1, 3 arms)


def test_bad_tokens_are_400_json_and_call_nothing(server, client) -> None:
    import openai

    q = QUESTIONS[0]
    messages = [{"role": "user", "content": q}]
    good = route(server, q)["decision_token"]
    payload, mac = good.split(".")
    expired = DecisionTokens(SECRET.encode(), ttl_s=1).issue("r", "team-a", "triage/local-explore",
                                                               now=time.time() - 60)
    cases = {
        "invalid_decision_token": [payload + "." + mac[:-2] + ("AA" if not mac.endswith("AA") else "BB"),
                                   "not-a-token", route(server, q, key=OTHER_KEY)["decision_token"],
                                   route(server, q, model="triage/local")["decision_token"]],
        "expired_decision_token": [expired],
    }
    before = server.ledger_bytes()
    for code, tokens in cases.items():
        for tok in tokens:
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(model="triage/local-explore", messages=messages, max_tokens=2,
                                               extra_headers={HEADER: tok})
            assert err.value.status_code == 400
            body = err.value.response.json()["error"]
            assert body["code"] == code and body["param"] == HEADER, body
    assert server.ledger_bytes() == before  # refused before routing: nothing called, nothing recorded


def test_the_configured_token_secret_is_scrubbed(monkeypatch):
    """The HMAC key is a configured secret: once the sidecar's settings are registered (as `triage
    serve` does at start-up), its exact value never reaches an error body, a log line or the ledger."""
    from triage.router.core.preflight import register_settings_secrets
    from triage.router.sidecar.settings import SidecarSettings
    from triage.scrub import scrub_text

    value = "dt-secret-" + "q7" * 12
    monkeypatch.setenv("TRIAGE_SIDECAR_DECISION_TOKEN_SECRET", value)
    settings = SidecarSettings()
    assert settings.decision_token_secret is not None
    assert value in scrub_text(f"boom: {value}")  # not yet registered
    register_settings_secrets(settings)
    assert value not in scrub_text(f"boom: {value} in a message")
