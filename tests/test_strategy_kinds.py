"""Strategy kinds are plug-ins: a new kind is one module, found by the registry's discovery rule.

The ``echo`` kind below is written into a temporary folder that joins the plug-in package's path:
nothing else in the project is edited. It answers with the last user message through its own
litellm provider (on the shared :class:`OneShotProvider` base, no network), adds its options to
every call, and reports per-attempt metadata that its ``ledger_metadata`` folds into the record.
It goes through ``Router.completion`` (non-streamed and streamed) with the real default probe
(SmolLM2) and a real SQLite ledger.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import triage.policies.kinds as kinds_pkg
from triage.policies.kinds.base import KINDS, kind_of
from triage.policies.strategy import Strategy

ECHO_MODULE = '''
"""``echo/<name>``: answers with the last user message (a test kind: no model, no network)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from triage.policies.kinds.base import KINDS, StrategyKind


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = ""


@KINDS.register
class EchoKind(StrategyKind):
    name = "echo"
    prefix = "echo/"
    is_local = True
    options_field = "echo"
    options_model = EchoOptions
    provider_name = "echo"
    syntax = "echo/<name>"

    def validate(self, model: str, options: BaseModel | None) -> None:
        if model == self.prefix:
            raise ValueError("an echo model is 'echo/<name>'")

    def call_kwargs(self, model: str, options: BaseModel | None) -> dict[str, Any]:
        return {"echo": options.model_dump() if options is not None else {}}

    def make_provider(self) -> Any:
        from triage.policies.kinds.providers.base import Answer, OneShotProvider

        class EchoProvider(OneShotProvider):
            provider = "echo"

            def answer(self, model: str, messages: list, optional_params: dict) -> Answer:
                last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                text = (optional_params.get("echo") or {}).get("prefix", "") + last
                words = len(text.split())
                return Answer(text=text, finish_reason="stop", prompt_tokens=len(last.split()),
                              completion_tokens=words, hidden={"echo": {"model": model, "words": words}})

        return EchoProvider()

    def attempt_extra(self, hidden: dict[str, Any]) -> dict[str, Any]:
        report = hidden.get("echo")
        return {"echo": {"words": report["words"]}} if isinstance(report, dict) else {}

    def ledger_metadata(self, extras: list[dict[str, Any]]) -> dict[str, Any]:
        words = [e["echo"]["words"] for e in extras if "echo" in e]
        return {"echo": {"calls": len(words), "words": sum(words)}} if words else {}
'''


@pytest.fixture(scope="module")
def echo_kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The echo kind's one file, in a folder on the plug-in package's path."""
    folder = tmp_path_factory.mktemp("kinds")
    (folder / "echo_kind.py").write_text(textwrap.dedent(ECHO_MODULE))
    kinds_pkg.__path__.append(str(folder))
    try:
        yield
    finally:
        kinds_pkg.__path__.remove(str(folder))
        KINDS._entries.pop("echo", None)  # the registry has no unregister: tests only
        sys.modules.pop("triage.policies.kinds.echo_kind", None)


def test_built_in_kinds_claim_their_prefixes() -> None:
    assert {"litellm", "local", "token-routed"} <= set(KINDS.names())
    assert kind_of("local/smollm2-135m").name == "local"
    assert kind_of("token-routed/a+b").name == "token-routed"
    assert kind_of("openai/gpt-4o").name == "litellm"
    assert kind_of("echo/x").name == "litellm"  # no echo kind yet: a plain litellm model string


def test_a_new_kind_is_found_in_the_package_and_validates_its_options(echo_kind: None) -> None:
    assert KINDS.get("echo").prefix == "echo/"  # found by discovery: no list was edited
    s = Strategy(model="echo/parrot", echo={"prefix": "> "})
    assert s.kind.name == "echo" and s.options.prefix == "> " and s.is_local and s.local_name is None
    with pytest.raises(ValidationError, match="echo.prefix"):
        Strategy(model="echo/parrot", echo={"prefix": 3})
    with pytest.raises(ValidationError, match="echo applies only to a 'echo/<name>' model"):
        Strategy(model="local/smollm2-135m", echo={})
    with pytest.raises(ValidationError, match="an echo model is"):
        Strategy(model="echo/")
    with pytest.raises(ValidationError, match="'echo' is a strategy field"):
        Strategy(model="openai/gpt-4o", extra={"echo": {}})
    # Its price rule (local: zero) and its options schema reach the policy file's tools.
    from triage.policies.pricing import token_price

    assert token_price(s).source == "local" and token_price(s).cost(100, 100) == 0.0
    assert "echo" in Strategy.model_json_schema()["properties"]


def test_a_new_kind_answers_through_the_router_with_its_ledger_metadata(echo_kind: None, tmp_path: Path) -> None:
    from triage.router.core import Router

    policy = {
        "name": "echo-test", "version": 1, "probe": "default",
        "strategies": {"parrot": {"model": "echo/parrot", "echo": {"prefix": "you said: "}}},
        "tiers": {"easy": "parrot", "normal": "parrot", "hard": "parrot"},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    router = Router.from_file(path, ledger=str(tmp_path / "ledger.sqlite"))
    messages = [{"role": "user", "content": "hello there kind"}]
    try:
        response = router.completion(messages=messages)
        assert response.choices[0].message.content == "you said: hello there kind"
        info = response._hidden_params["triage"]
        assert info["attempts"][0]["extra"] == {"echo": {"words": 5}}
        assert info["cost_usd"] == 0.0  # the kind's price rule
        record = router.ledger.store.get(info["request_id"])
        assert record is not None and record.model == "echo/parrot"
        assert record.metadata["echo"] == {"calls": 1, "words": 5}

        stream = router.completion(messages=messages, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "you said: hello there kind"
        streamed = router.ledger.store.get(stream.triage["request_id"])
        assert streamed is not None and streamed.metadata["echo"] == {"calls": 1, "words": 5}
        assert streamed.completion_tokens == 5
    finally:
        router.close()
