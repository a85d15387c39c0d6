"""What the difficulty probe reads of a conversation: the last user turn, nothing else.

In an agent stack the same question arrives behind a system prompt, after unrelated turns, or
followed by tool results. Reading everything joined (what the probe did before) let a 300-word
system prompt change the tier of 65% of GSM8K questions. The question is what the strategy must
answer, so the probe reads:

* the text of the **last user message** (text parts joined by newlines);
* never the system/developer prompt, assistant turns or tool results: they change how to answer,
  not how hard the question is, and they repeat across requests;
* when the last user message has no text (an image-only turn), the last user message that has;
* when there is no user message at all, every non-empty message (a completion-style prompt).

Long texts are cut by the features themselves (head and tail kept, so a question at the end of a
long paste survives; :func:`triage.probes.features.base.cap_text`).

The SDK, the sidecar and replay evaluation all call :func:`probe_input`, so a replayed
conversation is probed exactly as the live one (``tests/test_router_parity.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string, or its text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        elif isinstance(part, str):
            parts.append(part)
    return "\n".join(parts)


def probe_input(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the probe reads of ``messages`` (see the module docstring)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            text = content_text(m.get("content"))
            if text.strip():
                return text
    if any(m.get("role") == "user" for m in messages):
        return ""
    return "\n".join(t for m in messages if (t := content_text(m.get("content"))))
