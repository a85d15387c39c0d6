"""Text as the probes' tokenizers can take it.

A Python ``str`` can hold lone UTF-16 surrogates (``json.loads('"\\ud800"')``, or a string cut in the
middle of an emoji by a client); the Rust tokenizers raise ``TypeError`` on them and UTF-8 encoding
raises ``UnicodeEncodeError``. Each one becomes U+FFFD, the replacement character, so a probe reads
such a text instead of failing the request. (The sidecar refuses such bodies with 400 before.)
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the same object when there is none)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
