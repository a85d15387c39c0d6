"""Decision tokens: a ``/v1/route`` decision that the following chat call reuses.

With exploration on, the strategy a request gets is drawn from a number fixed by its request id
(:func:`triage.policies.exploration.uniform_draw`). ``/v1/route`` and the chat call that follows it
get different ids, so they could draw different strategies. ``/v1/route`` therefore returns a
**decision token**: its own request id, the caller's key, the target it decided for and an expiry,
signed with HMAC-SHA256 by the server. A chat call that sends it (header
``x-triage-decision-token``) seeds its draw with the route's id instead of its own, so it gets the
strategy the route showed (the same messages and policy version give the same probe output and the
same draw), and its ledger record names the route's id (``metadata.route_request_id``).

Why a signed token and not a caller-chosen id: exploration seeds must not be chosen by callers. An
id the caller could pick would let it grind ids offline until one draws the dearest strategy. The
token carries only ids the server issued, bound to one key and one target, and expires; it carries
no strategy or credential, so the chat call still decides (and authorizes) server-side.

The secret is ``decision_token_secret`` (``TRIAGE_SIDECAR_DECISION_TOKEN_SECRET``) or, when unset, 32
random bytes per process: tokens then do not survive a restart, nor travel between workers
(``workers > 1`` needs the setting).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass

from triage.router.sidecar.errors import SidecarError

HEADER = "x-triage-decision-token"
#: Longest token accepted: a payload of bounded ids and a 32-byte MAC stay far below this.
MAX_TOKEN_CHARS = 2048


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid(why: str, code: str = "invalid_decision_token") -> SidecarError:
    return SidecarError(400, f"{HEADER}: {why}; call POST /v1/route again for a fresh token",
                        code=code, param=HEADER)


@dataclass(frozen=True)
class DecisionClaim:
    """What a valid token says: the route's request id, for which key and target."""

    request_id: str
    key_id: str | None
    target: str
    expires: int


class DecisionTokens:
    """Issues and checks decision tokens with one secret (see the module docstring)."""

    def __init__(self, secret: bytes | None = None, ttl_s: float = 300.0) -> None:
        self._secret = secret if secret else os.urandom(32)
        self.ttl_s = ttl_s

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()

    def issue(self, request_id: str, key_id: str | None, target: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        body = json.dumps({"rid": request_id, "key": key_id, "target": target, "exp": expires},
                          separators=(",", ":"), sort_keys=True)
        payload = _b64(body.encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def check(self, token: str, key_id: str | None, target: str, *, now: float | None = None) -> DecisionClaim:
        """The claim of a token this server signed for this key and target; 400 otherwise."""
        if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 1:
            raise _invalid("not a decision token")
        payload, mac = token.split(".")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise _invalid("not a decision token") from None
        if not hmac.compare_digest(given, self._mac(payload)):  # constant time: no oracle on the MAC
            raise _invalid("signature does not match (not issued by this server, or altered)")
        try:
            data = json.loads(_unb64(payload))
            claim = DecisionClaim(request_id=str(data["rid"]), key_id=data["key"], target=str(data["target"]),
                                  expires=int(data["exp"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise _invalid("not a decision token") from None
        if claim.expires < (time.time() if now is None else now):
            raise _invalid(f"expired (tokens live {self.ttl_s:g} s)", code="expired_decision_token")
        if claim.key_id != key_id:
            raise _invalid("issued to another API key")
        if claim.target != target:
            raise _invalid(f"issued for model '{claim.target}', not '{target}'")
        return claim
