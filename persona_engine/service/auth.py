"""API keys: created by ``persona keys create``, stored only as SHA-256 hashes, one tenant each.

A key looks like ``pe_<id>_<secret>``: ``id`` (8 hex characters) names the row, ``secret`` holds
256 random bits, and only ``sha256(key)`` is stored, so a copy of the database does not reveal
usable keys. (A slow password hash is unnecessary for 256-bit random secrets.) Keys are sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

The keys live in the store (``api_keys``), so every replica of the service shares them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError, NotFoundError
from ..schemas import utcnow
from ..store import StoreBase
from .errors import UnauthorizedError

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,48}$")
_KEY_PATTERN = re.compile(r"^pe_([0-9a-f]{8})_([A-Za-z0-9_\-]{20,100})$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and its tenant ('' is the default tenant)."""

    key_id: str
    tenant: str = ""

    @property
    def is_default_tenant(self) -> bool:
        return self.tenant == ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_tenant(tenant: str) -> str:
    if tenant and not TENANT_PATTERN.match(tenant):
        raise InvalidInputError("a tenant name is 1-48 letters, digits, '_', '.' or '-'")
    return tenant


class KeyRing:
    """Create, list, revoke and verify API keys in the store's database.

    A verified key is remembered for ``cache_s`` seconds (by its hash), so a busy server does not
    read the keys table on every request. Revoking through this object takes effect at once;
    revoking from another process (``persona keys revoke`` beside a running server, or
    another replica) within ``cache_s``. Unknown keys are never cached, so a new key works at once.
    """

    def __init__(self, store: StoreBase, *, cache_s: float = 5.0):
        self.store = store
        self.cache_s = cache_s
        self._verified: dict[str, tuple[float, Principal]] = {}

    def create(self, *, tenant: str = "", name: str = "") -> tuple[str, str]:
        """A new key; returns (key id, the key). The key is shown once and never stored."""
        check_tenant(tenant)
        if len(name) > 200:
            raise InvalidInputError("a key name is at most 200 characters")
        key_id = secrets.token_hex(4)
        key = f"pe_{key_id}_{secrets.token_urlsafe(32)}"
        self.store.add_api_key(
            key_id, hash_key(key), tenant=tenant, name=name, created_at=utcnow().isoformat()
        )
        return key_id, key

    def list(self) -> list[dict[str, Any]]:
        fields = ("id", "tenant", "name", "created_at", "revoked_at")
        return [{k: row[k] for k in fields} for row in self.store.api_keys()]

    def revoke(self, key_id: str) -> None:
        n = self.store.revoke_api_key(key_id, utcnow().isoformat())
        exists = n or self.store.api_key(key_id) is not None
        self._verified = {h: v for h, v in self._verified.items() if v[1].key_id != key_id}
        if not exists:
            raise NotFoundError(f"no API key with id {key_id!r}")
        if n == 0:
            raise NotFoundError(f"API key {key_id!r} is already revoked")

    def verify(self, key: str | None) -> Principal:
        """The principal of a valid, unrevoked key; :class:`UnauthorizedError` otherwise."""
        if not key:
            raise UnauthorizedError(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        key = key.strip()
        match = _KEY_PATTERN.match(key)
        if match is None:
            raise UnauthorizedError("invalid API key")
        digest, now = hash_key(key), time.monotonic()
        cached = self._verified.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = self.store.api_key(match.group(1))
        if row is None or not hmac.compare_digest(row["hash"], digest):
            raise UnauthorizedError("invalid API key")
        if row["revoked_at"] is not None:
            raise UnauthorizedError("this API key has been revoked")
        principal = Principal(key_id=match.group(1), tenant=row["tenant"])
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (now + self.cache_s, principal)
        return principal
