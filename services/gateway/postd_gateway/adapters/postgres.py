"""All SQL of the gateway schema.

Every method may raise ``asyncpg.PostgresError``, ``asyncpg.InterfaceError`` or
``OSError`` when the database is down or refuses; all of them await the network.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from postd_gateway.domain import FeatureFlag
from postd_gateway.ratelimit import Lease, StoreUnavailable

# Failures that mean "the database cannot be reached now" (not a bug in a statement).
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    name: str
    role: str
    scopes: tuple[str, ...]
    secret_sha256: bytes
    revoked_at: datetime | None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    created_by: str = ""


@dataclass(frozen=True)
class TenantRecord:
    id: str
    slug: str
    name: str
    rate_limit: int | None
    early_access: bool


_KEY_COLUMNS = (
    "id, tenant_id, name, role, scopes, secret_sha256, revoked_at, created_at, "
    "last_used_at, created_by"
)


def _key(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        row["id"],
        str(row["tenant_id"]),
        row["name"],
        row["role"],
        tuple(row["scopes"]),
        bytes(row["secret_sha256"]),
        row["revoked_at"],
        row["created_at"],
        row["last_used_at"],
        row["created_by"],
    )


class TenantStore:
    """Tenants and API keys."""

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

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        tid = _uuid(tenant_id)
        if tid is None:
            return None
        row = await self._pool.fetchrow(
            """SELECT id, slug, name, rate_limit, early_access FROM gateway.tenants
               WHERE id = $1""",
            tid,
        )
        if row is None:
            return None
        return TenantRecord(
            str(row["id"]), row["slug"], row["name"], row["rate_limit"], row["early_access"]
        )

    async def set_tenant_options(
        self, tenant_id: str, *, rate_limit: int | None, early_access: bool
    ) -> bool:
        status = await self._pool.execute(
            """UPDATE gateway.tenants SET rate_limit = $2, early_access = $3 WHERE id = $1""",
            uuid.UUID(tenant_id),
            rate_limit,
            early_access,
        )
        return bool(status.endswith(" 1"))

    async def add_key(
        self,
        tenant_id: str,
        key_id: str,
        digest: bytes,
        *,
        name: str,
        role: str,
        scopes: tuple[str, ...] = (),
        created_by: str = "",
    ) -> ApiKeyRecord:
        row = await self._pool.fetchrow(
            f"""INSERT INTO gateway.api_keys
                  (id, tenant_id, name, role, scopes, secret_sha256, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               RETURNING {_KEY_COLUMNS}""",  # noqa: S608 - a constant column list
            key_id,
            uuid.UUID(tenant_id),
            name,
            role,
            list(scopes),
            digest,
            created_by,
        )
        assert row is not None
        return _key(row)

    async def find_key(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_KEY_COLUMNS} FROM gateway.api_keys WHERE id = $1",  # noqa: S608
            key_id,
        )
        return None if row is None else _key(row)

    async def get_key(self, tenant_id: str, key_id: str) -> ApiKeyRecord | None:
        row = await self._pool.fetchrow(
            f"""SELECT {_KEY_COLUMNS} FROM gateway.api_keys
                WHERE tenant_id = $1 AND id = $2""",  # noqa: S608
            uuid.UUID(tenant_id),
            key_id,
        )
        return None if row is None else _key(row)

    async def list_keys(
        self, tenant_id: str, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[ApiKeyRecord]:
        """Newest first; ``after`` is the (created_at, id) of the last key of a page."""
        rows = await self._pool.fetch(
            f"""SELECT {_KEY_COLUMNS} FROM gateway.api_keys
                WHERE tenant_id = $1
                  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
                ORDER BY created_at DESC, id DESC
                LIMIT $4""",  # noqa: S608
            uuid.UUID(tenant_id),
            after[0] if after else None,
            after[1] if after else "",
            limit,
        )
        return [_key(r) for r in rows]

    async def revoke_key(self, tenant_id: str, key_id: str, by: str) -> ApiKeyRecord | None:
        """Revoke (idempotent: the first revocation time is kept). None if unknown to
        the tenant. Sessions opened with the key die with it."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE gateway.api_keys
                    SET revoked_at = coalesce(revoked_at, now()),
                        revoked_by = coalesce(revoked_by, $3)
                    WHERE tenant_id = $1 AND id = $2
                    RETURNING {_KEY_COLUMNS}""",  # noqa: S608
                uuid.UUID(tenant_id),
                key_id,
                by,
            )
            if row is None:
                return None
            await conn.execute(
                """UPDATE gateway.sessions SET revoked_at = coalesce(revoked_at, now())
                   WHERE key_id = $1""",
                key_id,
            )
            return _key(row)

    async def touch_keys(self, used: Mapping[str, datetime]) -> None:
        """Record when keys were last used (batched by the caller)."""
        if not used:
            return
        await self._pool.execute(
            """UPDATE gateway.api_keys AS k SET last_used_at = u.at
               FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
               WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)""",
            list(used),
            list(used.values()),
        )


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class SessionRecord:
    id: str
    tenant_id: str
    role: str
    subject: str
    key_id: str | None
    scopes: tuple[str, ...]
    csrf_sha256: bytes
    expires_at: datetime


class SessionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        token_sha256: bytes,
        csrf_sha256: bytes,
        tenant_id: str,
        role: str,
        subject: str,
        key_id: str | None,
        scopes: Sequence[str],
        ttl_seconds: int,
    ) -> SessionRecord:
        row = await self._pool.fetchrow(
            """INSERT INTO gateway.sessions
                 (id, token_sha256, csrf_sha256, tenant_id, role, subject, key_id, scopes,
                  expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
               RETURNING id, expires_at""",
            uuid.uuid4(),
            token_sha256,
            csrf_sha256,
            uuid.UUID(tenant_id),
            role,
            subject,
            key_id,
            list(scopes),
            float(ttl_seconds),
        )
        assert row is not None
        return SessionRecord(
            str(row["id"]),
            tenant_id,
            role,
            subject,
            key_id,
            tuple(scopes),
            csrf_sha256,
            row["expires_at"],
        )

    async def find_live(self, token_sha256: bytes) -> SessionRecord | None:
        """The session if it exists, is not expired or revoked, and the key it was
        opened with (if any) is not revoked."""
        row = await self._pool.fetchrow(
            """SELECT s.id, s.tenant_id, s.role, s.subject, s.key_id, s.scopes,
                      s.csrf_sha256, s.expires_at
               FROM gateway.sessions s
               LEFT JOIN gateway.api_keys k ON k.id = s.key_id
               WHERE s.token_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                 AND (s.key_id IS NULL OR k.revoked_at IS NULL)""",
            token_sha256,
        )
        if row is None:
            return None
        return SessionRecord(
            str(row["id"]),
            str(row["tenant_id"]),
            row["role"],
            row["subject"],
            row["key_id"],
            tuple(row["scopes"]),
            bytes(row["csrf_sha256"]),
            row["expires_at"],
        )

    async def revoke(self, session_id: str) -> None:
        await self._pool.execute(
            "UPDATE gateway.sessions SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
            uuid.UUID(session_id),
        )

    async def purge_expired(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM gateway.sessions WHERE expires_at < now() - interval '1 day'"
        )
        return int(status.split()[-1])


# --------------------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: bytes
    status: int | None  # None: the first request is still in flight
    body: bytes
    content_type: str
    headers: dict[str, str]


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self,
        tenant_id: str,
        key: str,
        fingerprint: bytes,
        *,
        ttl_seconds: int,
        stale_after_seconds: float,
    ) -> StoredResponse | None:
        """Claim ``key`` for a new request: None when claimed (go ahead), else what is
        stored. An in-flight claim older than ``stale_after_seconds`` (its gateway died)
        is taken over."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """INSERT INTO gateway.idempotency_keys (tenant_id, key, fingerprint, expires_at)
                   VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                   ON CONFLICT (tenant_id, key) DO UPDATE
                     SET fingerprint = EXCLUDED.fingerprint, created_at = now(),
                         expires_at = EXCLUDED.expires_at
                     WHERE gateway.idempotency_keys.expires_at < now()
                        OR (gateway.idempotency_keys.response_status IS NULL
                            AND gateway.idempotency_keys.created_at
                                < now() - make_interval(secs => $5)
                            AND gateway.idempotency_keys.fingerprint = EXCLUDED.fingerprint)
                   RETURNING 1""",
                uuid.UUID(tenant_id),
                key,
                fingerprint,
                float(ttl_seconds),
                float(stale_after_seconds),
            )
            if row is not None:
                return None
            stored = await conn.fetchrow(
                """SELECT fingerprint, response_status, response_body, content_type,
                          response_headers
                   FROM gateway.idempotency_keys WHERE tenant_id = $1 AND key = $2""",
                uuid.UUID(tenant_id),
                key,
            )
        if stored is None:  # purged between the two statements: treat as in flight
            return StoredResponse(fingerprint, None, b"", "", {})
        return StoredResponse(
            bytes(stored["fingerprint"]),
            stored["response_status"],
            bytes(stored["response_body"] or b""),
            stored["content_type"] or "",
            dict(stored["response_headers"] or {}),
        )

    async def complete(
        self,
        tenant_id: str,
        key: str,
        *,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str],
    ) -> None:
        await self._pool.execute(
            """UPDATE gateway.idempotency_keys
               SET response_status = $3, response_body = $4, content_type = $5,
                   response_headers = $6
               WHERE tenant_id = $1 AND key = $2""",
            uuid.UUID(tenant_id),
            key,
            status,
            body,
            content_type,
            dict(headers),  # the pool's codec encodes jsonb
        )

    async def release(self, tenant_id: str, key: str) -> None:
        """Forget an in-flight claim whose request failed in a way worth retrying."""
        await self._pool.execute(
            """DELETE FROM gateway.idempotency_keys
               WHERE tenant_id = $1 AND key = $2 AND response_status IS NULL""",
            uuid.UUID(tenant_id),
            key,
        )

    async def purge_expired(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM gateway.idempotency_keys WHERE expires_at < now()"
        )
        return int(status.split()[-1])


# --------------------------------------------------------------------------- rate limits


class RateLimitStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lease(self, tenant_id: str, *, want: int, limit: int, window_seconds: int) -> Lease:
        """Take up to ``want`` requests from the tenant's current window (by the
        database's clock, so every replica agrees on the window), never beyond
        ``limit``. One statement: the row lock serialises concurrent leases, and
        ``last_grant`` tells this statement what it added."""
        try:
            row = await self._pool.fetchrow(
                """INSERT INTO gateway.rate_limit_windows AS r
                     (tenant_id, window_start, used, last_grant)
                   SELECT $1,
                          to_timestamp(floor(extract(epoch FROM now()) / $4::float8) * $4::float8),
                          least($2::int, $3::int), least($2::int, $3::int)
                   ON CONFLICT (tenant_id, window_start) DO UPDATE
                     SET used = r.used + least($2::int, greatest($3::int - r.used, 0)),
                         last_grant = least($2::int, greatest($3::int - r.used, 0))
                   RETURNING r.used, r.last_grant, r.window_start""",
                uuid.UUID(tenant_id),
                want,
                limit,
                float(window_seconds),
                timeout=2.0,
            )
        except _UNREACHABLE as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        assert row is not None
        start: datetime = row["window_start"]
        return Lease(
            row["last_grant"], row["used"], start, start + timedelta(seconds=window_seconds)
        )

    async def purge_before(self, cutoff: datetime) -> int:
        status = await self._pool.execute(
            "DELETE FROM gateway.rate_limit_windows WHERE window_start < $1", cutoff
        )
        return int(status.split()[-1])


# --------------------------------------------------------------------------- feature flags


@dataclass(frozen=True)
class FlagOverride:
    name: str
    integration: str
    enabled: bool


def _flag(row: asyncpg.Record) -> FeatureFlag:
    return FeatureFlag(
        row["name"], row["integration"], row["stage"], row["beta_percent"], row["description"]
    )


class FlagStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_flags(self) -> list[FeatureFlag]:
        rows = await self._pool.fetch(
            """SELECT name, integration, stage, beta_percent, description
               FROM gateway.feature_flags ORDER BY name, integration"""
        )
        return [_flag(r) for r in rows]

    async def get_flag(self, name: str, integration: str) -> FeatureFlag | None:
        row = await self._pool.fetchrow(
            """SELECT name, integration, stage, beta_percent, description
               FROM gateway.feature_flags WHERE name = $1 AND integration = $2""",
            name,
            integration,
        )
        return None if row is None else _flag(row)

    async def set_flag(self, flag: FeatureFlag) -> None:
        await self._pool.execute(
            """INSERT INTO gateway.feature_flags (name, integration, stage, beta_percent,
                                                 description)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (name, integration) DO UPDATE
                 SET stage = EXCLUDED.stage, beta_percent = EXCLUDED.beta_percent,
                     description = EXCLUDED.description, updated_at = now()""",
            flag.name,
            flag.integration,
            flag.stage,
            flag.beta_percent,
            flag.description,
        )

    async def overrides(self, tenant_id: str) -> list[FlagOverride]:
        rows = await self._pool.fetch(
            """SELECT name, integration, enabled FROM gateway.feature_flag_overrides
               WHERE tenant_id = $1""",
            uuid.UUID(tenant_id),
        )
        return [FlagOverride(r["name"], r["integration"], r["enabled"]) for r in rows]

    async def set_override(
        self, tenant_id: str, name: str, integration: str, enabled: bool | None, by: str
    ) -> None:
        """``enabled`` None removes the tenant's override."""
        if enabled is None:
            await self._pool.execute(
                """DELETE FROM gateway.feature_flag_overrides
                   WHERE tenant_id = $1 AND name = $2 AND integration = $3""",
                uuid.UUID(tenant_id),
                name,
                integration,
            )
            return
        await self._pool.execute(
            """INSERT INTO gateway.feature_flag_overrides
                 (tenant_id, name, integration, enabled, updated_by)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (tenant_id, name, integration) DO UPDATE
                 SET enabled = EXCLUDED.enabled, updated_by = EXCLUDED.updated_by,
                     updated_at = now()""",
            uuid.UUID(tenant_id),
            name,
            integration,
            enabled,
            by,
        )
