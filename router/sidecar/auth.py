"""Bearer API keys: configured as SHA-256 hashes, compared in constant time.

The presented key is hashed once and its digest compared with *every* configured digest through
:func:`hmac.compare_digest` (no early exit), so neither the comparison nor the loop tells an
attacker how close a guess was. The key itself is never stored, logged or recorded: the caller is
known downstream only by the key's configured ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from fnmatch import fnmatchcase

from triage.router.sidecar.errors import SidecarError
from triage.router.sidecar.settings import ApiKeySpec

_CHALLENGE = {"www-authenticate": 'Bearer realm="triage"'}


def hash_api_key(key: str) -> str:
    """The hex SHA-256 a key is configured by (same as ``printf %s "$KEY" | sha256sum``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: a configured key (by id), or anonymous when the server allows it."""

    key_id: str | None
    tenant: str | None
    spec: ApiKeySpec | None = None

    @property
    def anonymous(self) -> bool:
        return self.spec is None

    @property
    def limit_key(self) -> str:
        return self.key_id or "anonymous"

    @property
    def admin(self) -> bool:
        return self.spec is not None and self.spec.admin


ANONYMOUS = Caller(key_id=None, tenant=None)


class KeyRing:
    """The configured keys. ``authenticate`` maps an Authorization header to a :class:`Caller`."""

    def __init__(self, keys: list[ApiKeySpec], *, allow_anonymous: bool) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]
        self.allow_anonymous = allow_anonymous

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, authorization: str | None) -> Caller:
        if not authorization:
            if self.allow_anonymous:
                return ANONYMOUS
            raise SidecarError(401, "missing API key: send 'Authorization: Bearer <key>'",
                               type="authentication_error", code="missing_api_key", headers=_CHALLENGE)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SidecarError(401, "malformed Authorization header: expected 'Bearer <key>'",
                               type="authentication_error", code="invalid_authorization", headers=_CHALLENGE)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: ApiKeySpec | None = None
        for expected, spec in self._keys:
            if hmac.compare_digest(digest, expected):
                found = spec
        if found is None:
            if not self._keys and self.allow_anonymous:
                return ANONYMOUS  # no keys configured: an OpenAI client's placeholder key is fine
            raise SidecarError(401, "invalid API key", type="authentication_error", code="invalid_api_key",
                               headers=_CHALLENGE)
        return Caller(key_id=found.id, tenant=found.tenant_name, spec=found)


def authorize_model(caller: Caller, model: str) -> None:
    """403 when the caller's key is restricted to other models."""
    spec = caller.spec
    if spec is None or spec.models is None:
        return
    if not any(fnmatchcase(model, pattern) for pattern in spec.models):
        raise SidecarError(403, f"this API key may not use model '{model}'", type="permission_error",
                           code="model_not_allowed", param="model")


def sees_every_tenant(caller: Caller, keyring: KeyRing) -> bool:
    """An admin key, or an anonymous caller of a server that has no keys (nothing to tell apart)."""
    return caller.admin or (caller.anonymous and len(keyring) == 0)


def require_every_tenant(caller: Caller, keyring: KeyRing, what: str) -> None:
    """401/403 unless the caller may read data that covers every tenant (``what`` names it)."""
    if sees_every_tenant(caller, keyring):
        return
    if caller.anonymous:  # keys are configured, and anonymous calls are allowed: still not this
        raise SidecarError(401, f"{what} needs an API key", type="authentication_error",
                           code="missing_api_key", headers=_CHALLENGE)
    raise SidecarError(403, f"{what} needs an admin key (`admin: true` in api_keys)", type="permission_error",
                       code="admin_required")


def ledger_scope(caller: Caller, keyring: KeyRing, tenant: str | None) -> str | None:
    """The tenant a ledger read covers (None: every tenant).

    A key reads its own tenant; asking for another one is 403. An admin key (or the anonymous
    caller of a server without keys) reads every tenant, or the one ``tenant`` names.
    """
    if sees_every_tenant(caller, keyring):
        return tenant
    if caller.anonymous:
        require_every_tenant(caller, keyring, "reading the ledger")
    if tenant is not None and tenant != caller.tenant:
        raise SidecarError(403, "this API key may only read its own tenant's ledger", type="permission_error",
                           code="tenant_not_allowed", param="tenant")
    return caller.tenant
