"""Keep credentials out of the ledger.

Every ledger record passes through :func:`scrub_value` before it is stored: values under keys
that name a credential are replaced, and strings are searched for token shapes that providers
issue (``sk-...``, ``Bearer ...``, AWS/GitHub/Slack/Google/Hugging Face keys, passwords in URLs,
``api_key=...`` pairs). A false positive costs a few characters of an error message; a false
negative leaks a key into a database that is exported and shared, so the patterns lean wide.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

REDACTED = "[redacted]"

# Dict keys whose value is a credential whatever it looks like. Compared after lower-casing and
# mapping '-' and ' ' to '_'. Token *counts* (prompt_tokens, max_tokens) are not credentials.
_SECRET_KEY_EXACT = frozenset({
    "key", "token", "secret", "password", "passwd", "pwd", "authorization", "auth", "bearer",
    "cookie", "set_cookie", "credential", "credentials", "signature", "x_api_key", "api_key",
    "apikey", "client_secret", "private_key", "access_token", "refresh_token", "id_token",
    "auth_token", "session_token", "session_key", "secret_key", "access_key", "aws_secret_access_key",
    "proxy_authorization", "dsn", "connection_string",
})
_SECRET_KEY_SUFFIXES = ("_api_key", "_apikey", "_secret", "_password", "_passwd", "_token_value",
                        "_access_token", "_refresh_token", "_auth_token", "_private_key", "_secret_key",
                        "_credentials", "_authorization")

_TOKEN_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    r"\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_\-]{12,}",  # OpenAI, Anthropic, Stripe-style
    r"\b(?:rk|pk)_(?:live|test)_[A-Za-z0-9]{12,}",
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
    r"\bASIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
    r"\bAIza[0-9A-Za-z_\-]{30,}",  # Google
    r"\bhf_[A-Za-z0-9]{20,}",  # Hugging Face
    r"\bgsk_[A-Za-z0-9]{20,}",  # Groq
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
))
# "Bearer <token>" / "Basic <token>": keep the scheme, drop the token.
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
# key=value / key: value / "key": "value" pairs naming a credential.
_PAIR = re.compile(
    r"""(?ix)
    (\b(?:api[_-]?key|x-api-key|secret|password|passwd|access[_-]?token|refresh[_-]?token|auth[_-]?token
        |client[_-]?secret|authorization|token)\b["']?\s*[:=]\s*["']?)
    ([^\s"',;&}]{4,})
    """
)
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.\-]*://[^/\s:@]+:)([^@\s/]+)(@)", re.IGNORECASE)


def is_secret_key(name: str) -> bool:
    """True when a mapping key names a credential (``api_key``, ``Authorization``, ``x-api-key``...)."""
    k = name.strip().lower().replace("-", "_").replace(" ", "_")
    return k in _SECRET_KEY_EXACT or k.endswith(_SECRET_KEY_SUFFIXES)


def scrub_text(text: str) -> str:
    """Replace anything in ``text`` shaped like a credential with ``[redacted]``."""
    if not text:
        return text
    out = text
    for pat in _TOKEN_PATTERNS:
        out = pat.sub(REDACTED, out)
    out = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _PAIR.sub(lambda m: m.group(1) + REDACTED, out)
    out = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), out)
    return out


def looks_like_secret(text: str) -> bool:
    return scrub_text(text) != text


def scrub_value(value: Any) -> Any:
    """Scrub a JSON-like value: dict keys naming credentials, and credential-shaped strings."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                    else scrub_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v) for v in value]
    return value


def opaque_id(secret: str) -> str:
    """A stable, non-reversible id for a value that should have been an id but looks like a key."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]
