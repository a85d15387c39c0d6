"""Chat messages: validation/normalisation and where the query sits in the rendered prompt.

No torch here; the tokenizer is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from probes.lm.specs import LocalModelError


def normalise_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """OpenAI-style messages -> ``[{"role", "content": str}]``; text parts are joined."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise LocalModelError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise LocalModelError(f"messages[{i}] must be an object with 'role' and 'content'")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, Mapping) and part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                else:
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise LocalModelError(f"messages[{i}].content[{j}]: local models take text only, got {kind!r}")
            content = "".join(parts)
        elif not isinstance(content, str):
            raise LocalModelError(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": str(m["role"]), "content": content})
    return out


def content_offset(tokenizer: Any, msgs: list[dict[str, str]], text: str) -> int:
    """Character offset of the last message's content in the rendered prompt ``text``.

    Rendered once more with a sentinel in place of the content: robust to the content also
    appearing elsewhere (in the system prompt, say). -1 when the template rewrites content.
    """
    content = msgs[-1]["content"]
    sentinel = "\u2063TRIAGE\u2063SENTINEL\u2063"
    probe = [*msgs[:-1], {"role": msgs[-1]["role"], "content": sentinel}]
    rendered = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    pos = rendered.find(sentinel)
    if pos >= 0 and text[pos : pos + len(content)] == content:
        return pos
    return text.rfind(content) if content else -1
