"""Chat messages in, probe text out.

:func:`probe_text` must read a conversation exactly as the replay format does
(``triage.replay.schema.ReplayRecord.prompt_text``): the SDK and replay evaluation feed the probe the
same string, which is what makes their decisions identical. A test holds the two together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from triage.errors import TriageError
from triage.probe_input import probe_input
from triage.text import valid_unicode


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI-style messages as plain dicts; a bare string becomes one user message."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise TriageError("messages must be a non-empty list of {role, content} objects (or a string)")
    out = []
    for i, m in enumerate(messages):
        if hasattr(m, "model_dump"):
            m = m.model_dump(exclude_none=True)
        if not isinstance(m, Mapping) or "role" not in m:
            raise TriageError(f"messages[{i}] must be an object with a 'role'")
        out.append(_valid_text(dict(m)))
    return out


def _valid_text(message: dict[str, Any]) -> dict[str, Any]:
    """Lone UTF-16 surrogates in the content become U+FFFD: tokenizers, the ledger and providers'
    JSON encoders all fail on them (the sidecar refuses them with 400 before they get here)."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = valid_unicode(content)
    elif isinstance(content, list):
        message["content"] = [
            {**part, "text": valid_unicode(part["text"])}
            if isinstance(part, Mapping) and isinstance(part.get("text"), str) else part
            for part in content
        ]
    return message


def probe_text(messages: list[dict[str, Any]]) -> str:
    """The text the probe reads: the last user turn (:func:`triage.probe_input.probe_input`)."""
    return probe_input(messages)
