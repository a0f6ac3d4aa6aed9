"""Tenants: one product's users are invisible to another's.

Each API key belongs to one tenant ('' is the default tenant, the one the CLI and library write).
A tenant's user ``alice`` is stored as ``<tenant>\\x1falice`` with ``users.tenant = <tenant>``, so two
products may both have an ``alice`` without meeting. API user ids cannot contain control
characters, so no request can spell another tenant's stored id. On top of the names, every read,
write and delete checks the ``tenant`` column of the user's row: a user of another tenant is
answered exactly like a user that does not exist (404 ``unknown_user``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UnknownUserError
from .reads import StoreReader

SEPARATOR = "\x1f"


@dataclass(frozen=True)
class TenantScope:
    tenant: str
    reader: StoreReader

    def stored_id(self, user_id: str) -> str:
        """The id under which this tenant's ``user_id`` lives in the store."""
        return f"{self.tenant}{SEPARATOR}{user_id}" if self.tenant else user_id

    def api_id(self, stored_id: str) -> str:
        prefix = f"{self.tenant}{SEPARATOR}" if self.tenant else ""
        return stored_id[len(prefix) :] if prefix and stored_id.startswith(prefix) else stored_id

    def owner(self, stored_id: str) -> str | None:
        """The tenant of a stored user, or None when there is no such user."""
        return self.reader.store.user_tenants([stored_id]).get(stored_id)

    def exists(self, user_id: str) -> bool:
        return self.owner(self.stored_id(user_id)) == self.tenant

    def require_user(self, user_id: str) -> str:
        """The stored id of a user this tenant may see; unknown (or foreign) users raise 404."""
        stored = self.stored_id(user_id)
        if self.owner(stored) != self.tenant:
            raise UnknownUserError(f"unknown user {user_id!r}")
        return stored

    def visible(self, stored_ids: Iterable[str]) -> set[str]:
        """The subset of ``stored_ids`` that belongs to this tenant."""
        owners = self.reader.store.user_tenants(list(stored_ids))
        return {u for u, tenant in owners.items() if tenant == self.tenant}

    def foreign(self, stored_ids: Iterable[str]) -> list[str]:
        """The ids among ``stored_ids`` that exist and belong to another tenant."""
        ids = list(dict.fromkeys(stored_ids))
        owners = self.reader.store.user_tenants(ids)
        return [u for u in ids if u in owners and owners[u] != self.tenant]

    def count_users(self) -> int:
        return self.reader.store.count_users(self.tenant)
