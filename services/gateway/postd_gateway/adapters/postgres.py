"""All SQL of the gateway schema."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    name: str
    role: str
    scopes: tuple[str, ...]
    secret_sha256: bytes
    revoked_at: datetime | None


class TenantStore:
    """Tenants and API keys. Methods raise asyncpg errors when the database is down."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ensure_tenant(self, slug: str, name: str) -> str:
        row = await self._pool.fetchrow(
            """INSERT INTO gateway.tenants (id, name, slug) VALUES ($1, $2, $3)
               ON CONFLICT (slug) DO UPDATE SET name = gateway.tenants.name
               RETURNING id""",
            uuid.uuid4(),
            name,
            slug,
        )
        assert row is not None
        return str(row["id"])

    async def add_key(
        self,
        tenant_id: str,
        key_id: str,
        digest: bytes,
        *,
        name: str,
        role: str,
        scopes: tuple[str, ...] = (),
    ) -> None:
        await self._pool.execute(
            """INSERT INTO gateway.api_keys (id, tenant_id, name, role, scopes, secret_sha256)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            key_id,
            uuid.UUID(tenant_id),
            name,
            role,
            list(scopes),
            digest,
        )

    async def find_key(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._pool.fetchrow(
            """SELECT id, tenant_id, name, role, scopes, secret_sha256, revoked_at
               FROM gateway.api_keys WHERE id = $1""",
            key_id,
        )
        if row is None:
            return None
        return ApiKeyRecord(
            row["id"],
            str(row["tenant_id"]),
            row["name"],
            row["role"],
            tuple(row["scopes"]),
            bytes(row["secret_sha256"]),
            row["revoked_at"],
        )
