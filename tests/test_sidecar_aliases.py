"""Model aliases: `triage serve` with `model_aliases` on loopback, driven by the official openai client.

A client that hard-codes a model name (``gpt-4o``) is routed by a policy without code changes; the
answer comes from the real local model; /v1/models lists the aliases with their targets; headers and
the ledger record both the alias and what it resolved to; a bad alias table refuses start-up with one
line (from the file, the environment or ``--alias``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.sidecar import (
    CLIENT_KEY,
    LOCAL_MODEL,
    LOCAL_POLICY,
    REPO,
    RESTRICTED_KEY,
    SidecarProcess,
    openai_client,
    record_of,
)

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": "What is 2 + 2?"}]
ALIASES = {"gpt-4o": "triage/local", "gpt-4o-mini": LOCAL_MODEL, "my-default": "triage"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = SidecarProcess(tmp_path_factory.mktemp("sidecar-aliases"), [LOCAL_POLICY],
                          extra={"model_aliases": ALIASES})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


def test_models_lists_aliases_with_their_targets(client):
    cards = {m.id: m for m in client.models.list().data}
    assert cards["triage/local"].owned_by == "triage"
    assert cards[LOCAL_MODEL].owned_by == "upstream"
    for alias, target in {**ALIASES, "my-default": "triage/local"}.items():  # bare `triage`: the default policy
        assert cards[alias].owned_by == "triage-alias"
        assert cards[alias].model_extra["target"] == target
    assert "target" not in (cards["triage/local"].model_extra or {})  # no nulls on the other cards


def test_alias_to_a_policy_routes_and_records_both_names(client, server):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ASK, max_tokens=6)
    completion = raw.parse()
    assert completion.choices[0].message.content.strip()
    assert completion.model == LOCAL_MODEL
    h = raw.headers
    assert h["x-triage-alias"] == "gpt-4o" and h["x-triage-alias-target"] == "triage/local"
    assert h["x-triage-strategy"] in ("terse", "standard", "step_by_step")
    rec = record_of(server.ledger, h["x-triage-request-id"])
    assert rec is not None and rec.policy_name == "local" and rec.strategy == h["x-triage-strategy"]
    assert rec.metadata["requested_model"] == "gpt-4o"
    assert rec.metadata["alias"] == "gpt-4o" and rec.metadata["alias_target"] == "triage/local"


def test_alias_to_a_concrete_model_calls_it_as_is(client, server):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK, max_tokens=4)
    assert raw.headers["x-triage-alias-target"] == LOCAL_MODEL
    assert raw.headers["x-triage-strategy"] == "passthrough"
    rec = record_of(server.ledger, raw.headers["x-triage-request-id"])
    assert rec.model == LOCAL_MODEL and rec.metadata["alias_target"] == LOCAL_MODEL


def test_route_endpoint_and_plain_names_keep_their_headers(client, server):
    import httpx

    r = httpx.post(server.url + "/v1/route", json={"model": "my-default", "messages": ASK},
                   headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "local" and r.headers["x-triage-alias-target"] == "triage/local"
    r = httpx.post(server.url + "/v1/route", json={"model": "triage/local", "messages": ASK},
                   headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=120)
    assert r.status_code == 200 and "x-triage-alias" not in r.headers  # no alias used, none claimed


def test_unknown_model_error_mentions_the_aliases(client):
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as err:
        client.chat.completions.create(model="gpt-5-turbo", messages=ASK, max_tokens=4)
    message = err.value.body["message"]
    assert "unknown model 'gpt-5-turbo'" in message and "alias" in message and "gpt-4o" in message


def test_key_restrictions_apply_to_the_target(server):
    from openai import OpenAI, PermissionDeniedError

    # RESTRICTED_KEY may use triage/local only: the alias to it is fine, the alias to the bare model is not.
    with OpenAI(base_url=server.url + "/v1", api_key=RESTRICTED_KEY, max_retries=0, timeout=300) as c:
        ids = {m.id for m in c.models.list().data}
        assert "gpt-4o" in ids and "my-default" in ids and "gpt-4o-mini" not in ids
        c.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2)
        with pytest.raises(PermissionDeniedError):
            c.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=2)


def _serve(tmp_path, *args: str, aliases: dict | None = None, env_aliases: str | None = None):
    config = {"policies": [str(LOCAL_POLICY)], "ledger_url": str(tmp_path / "l.sqlite")}
    if aliases is not None:
        config["model_aliases"] = aliases
    (tmp_path / "s.yaml").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SIDECAR_")}
    env["HF_HUB_OFFLINE"] = "1"
    if env_aliases is not None:
        env["TRIAGE_SIDECAR_MODEL_ALIASES"] = env_aliases
    return subprocess.run([sys.executable, "-m", "triage.router.cli.main", "serve", "--config",
                           str(tmp_path / "s.yaml"), "--port", "0", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.parametrize("how, value, expected", [
    ("file", {"gpt-4o": "triage/nope"}, "points at unknown policy 'triage/nope'"),
    ("file", {"gpt-4o": "openai/gpt-4o"}, "points at unknown model 'openai/gpt-4o'"),
    ("file", {"local": "triage/local"}, "alias 'local' is also a policy's name"),
    ("env", '{"triage/fast": "triage/local"}', "would shadow the policies' names"),
    ("env", '{"gpt 4o": "triage/local"}', "printable ASCII"),
    ("env", '{"gpt-4o": 1', 'field "model_aliases"'),
    ("flag", ["--alias", "gpt-4o"], "expected NAME=TARGET"),
    ("flag", ["--alias", "gpt-4o=triage/ghost"], "unknown policy 'triage/ghost'"),
])
def test_bad_aliases_refuse_start_up_with_one_line(tmp_path, how, value, expected):
    if how == "file":
        proc = _serve(tmp_path, aliases=value)
    elif how == "env":
        proc = _serve(tmp_path, env_aliases=value)
    else:
        proc = _serve(tmp_path, *value)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
