"""Keep credentials out of the ledger.

Every ledger record passes through :func:`scrub_value` before it is stored: values under keys
that name a credential are replaced, and strings are searched for the exact values of the
secrets this process is configured with (:func:`register_secret`: every ``api_key_env`` value,
provider keys in the environment, settings secrets) and for token shapes that providers issue
(``sk-...``, ``Bearer ...``, AWS/GitHub/Slack/Google/Hugging Face keys, passwords in URLs,
``api_key=...`` pairs). Error bodies and log lines go through the same :func:`scrub_text`.
A false positive costs a few characters of an error message; a false negative leaks a key into a
database that is exported and shared, so the patterns lean wide.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

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
# user:password@ right after a "://". Tried only where "://" occurs (a scan for the scheme from
# every position was quadratic: "a." * 10_000 took a second); each try stops at the next "/".
_URL_USERINFO = re.compile(r"([^/\s:@]+:)([^@\s/]+)(@)")


def _scrub_url_passwords(text: str) -> str:
    at = text.find("://")
    if at < 0:
        return text
    out: list[str] = []
    pos = 0
    while at >= 0:
        m = _URL_USERINFO.match(text, at + 3)
        if m is None:
            at = text.find("://", at + 3)
            continue
        out += [text[pos:m.start(2)], REDACTED]
        pos = m.end(2)
        at = text.find("://", m.end())
    out.append(text[pos:])
    return "".join(out)


# -- exact values of configured secrets ----------------------------------------------------------
# Token patterns only know shapes; a key of any other shape (self-hosted gateways, many providers)
# would pass them. The values themselves are registered at start-up and replaced wherever they
# appear. Shorter values are not registered: "EMPTY" or "none" are placeholders, not keys, and
# scrubbing them would mangle ordinary text.
MIN_SECRET_LEN = 8
# Environment variable names whose values are credentials litellm may read on its own
# (OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY...). Not every *_KEY: SORT_KEY=request_id would
# then scrub ordinary words.
_ENV_SECRET_SUFFIXES = ("_API_KEY", "_SECRET_KEY", "_ACCESS_KEY", "_PRIVATE_KEY", "_TOKEN", "_SECRET",
                        "_PASSWORD", "_PASSWD")
_known: set[str] = set()
_known_re: re.Pattern[str] | None = None
_known_lock = threading.Lock()


def register_secret(value: str | None) -> bool:
    """Scrub this exact value (and its URL-encoded form) from now on; False when too short to be a key."""
    global _known_re
    if not value or len(value.strip()) < MIN_SECRET_LEN:
        return False
    forms = {value, value.strip(), quote(value.strip(), safe="")}
    with _known_lock:
        if forms <= _known:
            return True
        _known.update(forms)
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(_known, key=len, reverse=True)
        _known_re = re.compile("|".join(re.escape(v) for v in ordered))
    return True


def register_env_secrets(names: Iterable[str] | None = None) -> None:
    """Register the values of environment variables: ``names``, or (None) every variable whose name
    reads like a credential (``OPENAI_API_KEY``, ``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``...)."""
    if names is None:
        names = [n for n in os.environ if n.upper().endswith(_ENV_SECRET_SUFFIXES)]
    for name in names:
        register_secret(os.environ.get(name))


def register_url_secret(url: str | None) -> None:
    """Register the password of a URL (``postgresql://user:password@host/db``), if it has one."""
    if not url or "://" not in url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    register_secret(password)


def known_secrets() -> frozenset[str]:
    with _known_lock:
        return frozenset(_known)


def _scrub_known(text: str) -> str:
    pattern = _known_re
    return pattern.sub(REDACTED, text) if pattern is not None else text


def is_secret_key(name: str) -> bool:
    """True when a mapping key names a credential (``api_key``, ``Authorization``, ``x-api-key``...)."""
    k = name.strip().lower().replace("-", "_").replace(" ", "_")
    return k in _SECRET_KEY_EXACT or k.endswith(_SECRET_KEY_SUFFIXES)


def scrub_text(text: str) -> str:
    """Replace configured secret values and anything shaped like a credential with ``[redacted]``."""
    if not text:
        return text
    out = _scrub_known(text)
    for pat in _TOKEN_PATTERNS:
        out = pat.sub(REDACTED, out)
    out = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _PAIR.sub(lambda m: m.group(1) + REDACTED, out)
    out = _scrub_url_passwords(out)
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
