"""Chat messages: validation/normalisation, where the query sits in the rendered prompt, and a cheap
early "too long" for prompts that cannot fit.

No torch here; the tokenizer is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triage.lm.specs import LocalModelError
from triage.text import valid_unicode


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
        out.append({"role": str(m["role"]), "content": valid_unicode(content)})
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


# -- refusing a prompt that cannot fit, before the full tokenization -------------------------------
# Tokenizing a 1 MB prompt with offsets takes seconds, and turning a million tokens into Python lists
# holds the GIL (every other request and /healthz wait). Both helpers below only ever *refuse* a
# prompt sooner; the exact count of the full tokenization still decides every prompt they let pass.


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> character map: the alphabet byte-level BPE vocabularies are written in."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)}
    out: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


@dataclass(frozen=True)
class TokenFloor:
    """A lower bound on the token count of a byte-level BPE tokenizer, from a text's bytes alone.

    Such a tokenizer (GPT-2, Llama 3, Qwen, SmolLM2...; no normaliser) puts every byte of the text
    in exactly one token, except bytes its vocabulary has no symbol for, which it drops. So a text
    has at least ``ceil(kept bytes / max_bytes)`` tokens, for the cost of one ``str.encode``.
    """

    max_bytes: int  # the most text bytes one token covers
    dropped: bytes  # byte values without a token

    def min_tokens(self, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass")
        kept = len(data) - sum(data.count(b) for b in self.dropped)
        return -(-kept // self.max_bytes)


def token_floor(tokenizer: Any) -> TokenFloor | None:
    """The :class:`TokenFloor` of a fast tokenizer when it is byte-level BPE, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        from tokenizers.pre_tokenizers import ByteLevel

        spec = json.loads(backend.to_str())
        alphabet = set(ByteLevel.alphabet())
    except Exception:  # noqa: BLE001 - an exotic backend: no floor; the exact count still applies
        return None
    byte_chars = _byte_chars()
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    added = spec.get("added_tokens") or []
    if (spec.get("normalizer") is not None or model.get("type") != "BPE" or not isinstance(vocab, dict)
            or not any(isinstance(st, dict) and st.get("type") == "ByteLevel" for st in steps)
            or set(byte_chars.values()) != alphabet
            or any(a.get("lstrip") or a.get("rstrip") for a in added)):  # these swallow any run of spaces
        return None
    # A byte-level token's characters stand for one byte each; any other entry (special and added
    # tokens) matches its own UTF-8 text.
    sizes = [len(t) if set(t) <= alphabet else len(t.encode("utf-8")) for t in vocab]
    sizes += [len(str(a.get("content", "")).encode("utf-8")) for a in added]
    dropped = bytes(b for b, ch in byte_chars.items() if ch not in vocab)
    return TokenFloor(max(sizes), dropped) if sizes else None


def count_tokens(tokenizer: Any, text: str) -> int | None:
    """Tokens in ``text`` (no special tokens added) from a fast tokenizer's backend, else None.

    ``encode_batch`` releases the GIL while it works and builds no Python lists, unlike the
    offsets-returning call the prompt is otherwise tokenized with.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.padding is not None:  # padding would count tokens the text lacks
        return None
    return len(backend.encode_batch([text], add_special_tokens=False)[0])
