# ruff: noqa: S608 - the only interpolated names are the constant schema and column list

"""All SQL of the connectors schema: connections, OAuth states, audit, outbox,
publish records, platform usage."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from postd_common.errors import AlreadyExists, Unavailable
from postd_common.logging import get_logger
from postd_connectors.domain.model import (
    AuditEntry,
    Connection,
    ConnectionStatus,
    PlatformError,
    StatusChange,
)
from postd_connectors.domain.oauth import AuthState
from postd_connectors.platforms.base import RateUsage
from postd_connectors.ports import PublishRecord, PublishView, UsageSeen

log = get_logger(__name__)

S = "connectors"

# (connection, change, event id) -> (topic, key, payload, headers)
EventEncoder = Callable[
    [Connection, StatusChange, str], tuple[str, str, bytes, list[tuple[str, str]]]
]

_INSERT_COLUMNS = """id, tenant_id, platform, external_id, account_kind, account_name, username,
    avatar_url, scopes, missing_scopes, capabilities, status, status_reason,
    status_changed_at, expires_at, refresh_expires_at, last_refreshed_at, last_error,
    has_refresh_token, connected_by, attributes"""
_COLUMNS = _INSERT_COLUMNS + ", created_at, updated_at"
# The same columns of ``connections c`` in a join.
_C_COLUMNS = ", ".join(f"c.{name.strip()}" for name in _COLUMNS.split(","))
# A publish record's columns of ``publish_records r`` in a join, prefixed ``r_``.
_R_FIELDS = (
    "status, fingerprint, platform_post_id, url, progress, error, attempts, published_at, "
    "created_at"
)
_R_COLUMNS = ", ".join(f"r.{name.strip()} AS r_{name.strip()}" for name in _R_FIELDS.split(","))


def _connection(row: asyncpg.Record) -> Connection:
    error = row["last_error"]
    return Connection(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        platform=row["platform"],
        external_id=row["external_id"],
        status=ConnectionStatus(row["status"]),
        account_kind=row["account_kind"],
        account_name=row["account_name"],
        username=row["username"],
        avatar_url=row["avatar_url"],
        scopes=tuple(row["scopes"]),
        missing_scopes=tuple(row["missing_scopes"]),
        capabilities=tuple(row["capabilities"]),
        status_reason=row["status_reason"],
        status_changed_at=row["status_changed_at"],
        expires_at=row["expires_at"],
        refresh_expires_at=row["refresh_expires_at"],
        last_refreshed_at=row["last_refreshed_at"],
        last_error=PlatformError.from_json(error) if error else None,
        has_refresh_token=row["has_refresh_token"],
        connected_by=row["connected_by"],
        attributes=dict(row["attributes"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _lock_key(connection_id: str) -> int:
    digest = hashlib.sha256(f"postd-connectors-refresh:{connection_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.asynccontextmanager
async def _db_errors() -> AsyncIterator[None]:
    try:
        yield
    except (OSError, asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError) as exc:
        raise Unavailable("the connectors database is unreachable; retry shortly") from exc
    except TimeoutError as exc:
        raise Unavailable("the connectors database did not answer in time") from exc


class PostgresTx:
    def __init__(
        self,
        conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        encode: EventEncoder,
        on_event: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._encode = encode
        self._on_event = on_event
        self.announced = 0

    async def lock(self, tenant_id: str, connection_id: str) -> Connection | None:
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM {S}.connections WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            tenant_id,
            uuid.UUID(connection_id),
        )
        return _connection(row) if row else None

    async def lock_account(
        self, tenant_id: str, platform: str, external_id: str
    ) -> Connection | None:
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM {S}.connections "
            "WHERE tenant_id = $1 AND platform = $2 AND external_id = $3 FOR UPDATE",
            tenant_id,
            platform,
            external_id,
        )
        return _connection(row) if row else None

    async def save(self, connection: Connection, *, insert: bool) -> Connection:
        values = (
            uuid.UUID(connection.id),
            connection.tenant_id,
            connection.platform,
            connection.external_id,
            connection.account_kind,
            connection.account_name,
            connection.username,
            connection.avatar_url,
            list(connection.scopes),
            list(connection.missing_scopes),
            list(connection.capabilities),
            connection.status.value,
            connection.status_reason,
            connection.status_changed_at,
            connection.expires_at,
            connection.refresh_expires_at,
            connection.last_refreshed_at,
            connection.last_error.to_json() if connection.last_error else None,
            connection.has_refresh_token,
            connection.connected_by,
            dict(connection.attributes),
        )
        if insert:
            try:
                row = await self._conn.fetchrow(
                    f"""INSERT INTO {S}.connections ({_INSERT_COLUMNS})
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                COALESCE($14, now()), $15, $16, $17, $18, $19, $20, $21)
                        RETURNING {_COLUMNS}""",
                    *values,
                )
            except asyncpg.UniqueViolationError as exc:
                raise AlreadyExists("this account is already connected") from exc
        else:
            row = await self._conn.fetchrow(
                f"""UPDATE {S}.connections SET
                        account_kind = $5, account_name = $6, username = $7, avatar_url = $8,
                        scopes = $9, missing_scopes = $10, capabilities = $11, status = $12,
                        status_reason = $13, status_changed_at = COALESCE($14, status_changed_at),
                        expires_at = $15, refresh_expires_at = $16, last_refreshed_at = $17,
                        last_error = $18, has_refresh_token = $19, connected_by = $20,
                        attributes = $21, updated_at = now()
                    WHERE id = $1 AND tenant_id = $2 AND platform = $3 AND external_id = $4
                    RETURNING {_COLUMNS}""",
                *values,
            )
        assert row is not None
        return _connection(row)

    async def audit(
        self,
        connection: Connection,
        *,
        action: str,
        actor: str,
        reason: str,
        previous: ConnectionStatus | None,
        details: Mapping[str, str] | None = None,
    ) -> None:
        await self._conn.execute(
            f"""INSERT INTO {S}.connection_audit
                  (id, tenant_id, connection_id, action, actor, reason, previous_status,
                   status, details)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            uuid.uuid4(),
            connection.tenant_id,
            uuid.UUID(connection.id),
            action,
            actor,
            reason,
            previous.value if previous else "",
            connection.status.value,
            dict(details or {}),
        )

    async def announce(self, connection: Connection, change: StatusChange) -> None:
        topic, key, payload, headers = self._encode(connection, change, str(uuid.uuid4()))
        await self._conn.execute(
            f"INSERT INTO {S}.outbox (topic, key, payload, headers) VALUES ($1, $2, $3, $4)",
            topic,
            key,
            payload,
            [[k, v] for k, v in headers],
        )
        self.announced += 1


@dataclass
class _Lock:
    waited: bool = False


def _record(row: asyncpg.Record) -> PublishRecord:
    return _record_of(row, row["tenant_id"], str(row["connection_id"]), row["idempotency_key"])


def _record_of(
    row: asyncpg.Record, tenant_id: str, connection_id: str, key: str, prefix: str = ""
) -> PublishRecord:
    error = row[prefix + "error"]
    return PublishRecord(
        tenant_id=tenant_id,
        connection_id=connection_id,
        idempotency_key=key,
        status=row[prefix + "status"],
        fingerprint=row[prefix + "fingerprint"],
        platform_post_id=row[prefix + "platform_post_id"],
        url=row[prefix + "url"],
        progress=dict(row[prefix + "progress"] or {}),
        error=PlatformError.from_json(error) if error else None,
        attempts=row[prefix + "attempts"],
        published_at=row[prefix + "published_at"],
        created_at=row[prefix + "created_at"],
    )


def _scope_key(scope: str, account: str) -> str:
    """How platform_usage keys a reading: app-wide, or per account."""
    return "app" if scope == "app" else f"{scope}:{account}"


# Insert or overwrite a publish record ($1-$12); an empty job id keeps the stored one.
_UPSERT_RECORD = f"""INSERT INTO {S}.publish_records AS r
      (tenant_id, connection_id, idempotency_key, status, fingerprint,
       platform_post_id, url, progress, error, attempts, job_id, published_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (tenant_id, connection_id, idempotency_key) DO UPDATE SET
      status = EXCLUDED.status, fingerprint = EXCLUDED.fingerprint,
      platform_post_id = EXCLUDED.platform_post_id, url = EXCLUDED.url,
      progress = EXCLUDED.progress, error = EXCLUDED.error,
      attempts = EXCLUDED.attempts,
      job_id = COALESCE(NULLIF(EXCLUDED.job_id, ''), r.job_id),
      published_at = EXCLUDED.published_at, updated_at = now()"""

# One round trip for the outcome of a publish: the record ($1-$12), the platform
# usage seen ($13 app, $14-$19 one array per column) and, when $20, the connection's
# last error ($21). One statement, so all or nothing.
_SAVE_OUTCOME = f"""WITH saved AS ({_UPSERT_RECORD}),
    seen AS (
      INSERT INTO {S}.platform_usage
        (platform, scope_key, name, used_percent, used, usage_limit, blocked_until)
      SELECT $13, u.scope_key, u.name, u.used_percent, u.used, u.usage_limit,
             CASE WHEN u.retry_after IS NULL THEN NULL
                  ELSE now() + make_interval(secs => u.retry_after) END
      FROM unnest($14::text[], $15::text[], $16::float8[], $17::bigint[], $18::bigint[],
                  $19::float8[]) AS u(scope_key, name, used_percent, used, usage_limit,
                                      retry_after)
      ON CONFLICT (platform, scope_key, name) DO UPDATE SET
        used_percent = EXCLUDED.used_percent, used = EXCLUDED.used,
        usage_limit = EXCLUDED.usage_limit, blocked_until = EXCLUDED.blocked_until,
        observed_at = now()),
    errored AS (
      UPDATE {S}.connections SET last_error = $21, updated_at = now()
      WHERE $20 AND tenant_id = $1 AND id = $2)
    SELECT 1"""


def _record_values(record: PublishRecord, job_id: str) -> tuple[Any, ...]:
    return (
        record.tenant_id,
        uuid.UUID(record.connection_id),
        record.idempotency_key,
        record.status,
        record.fingerprint,
        record.platform_post_id,
        record.url,
        dict(record.progress),
        record.error.to_json() if record.error else None,
        record.attempts,
        job_id,
        record.published_at,
    )


class PostgresConnections:
    """The connectors schema. ``on_event`` is called after a commit that queued
    events, so the outbox relay can wake at once."""

    def __init__(
        self, pool: asyncpg.Pool, encode: EventEncoder, on_event: Callable[[], None] = lambda: None
    ) -> None:
        self._pool = pool
        self._encode = encode
        self._on_event = on_event

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        async with _db_errors(), self._pool.acquire() as conn, conn.transaction():
            tx = PostgresTx(conn, self._encode, self._on_event)
            yield tx
        if tx.announced:
            self._on_event()

    @contextlib.asynccontextmanager
    async def refresh_lock(self, connection_id: str) -> AsyncIterator[_Lock]:
        key = _lock_key(connection_id)
        lock = _Lock()
        async with _db_errors(), self._pool.acquire() as conn:
            # The pool skips asyncpg's reset query on release (one round trip less per
            # use), so this session-level lock must not outlive the block: unless the
            # unlock is known to have run, the connection is closed, which releases it.
            unlocked = False
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
                if not got:
                    lock.waited = True
                    await conn.execute("SELECT pg_advisory_lock($1)", key, timeout=120)
                try:
                    yield lock
                finally:
                    unlocked = bool(await conn.fetchval("SELECT pg_advisory_unlock($1)", key))
            finally:
                if not unlocked:
                    conn.terminate()

    async def get(self, tenant_id: str, connection_id: str) -> Connection | None:
        async with _db_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM {S}.connections WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                uuid.UUID(connection_id),
            )
        return _connection(row) if row else None

    async def list_connections(
        self,
        tenant_id: str,
        *,
        platforms: Sequence[str],
        statuses: Sequence[ConnectionStatus],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Connection]:
        async with _db_errors():
            rows = await self._pool.fetch(
                f"""SELECT {_COLUMNS} FROM {S}.connections
                    WHERE tenant_id = $1
                      AND (cardinality($2::text[]) = 0 OR platform = ANY($2))
                      AND (cardinality($3::text[]) = 0 OR status = ANY($3))
                      AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
                    ORDER BY created_at DESC, id DESC
                    LIMIT $6""",
                tenant_id,
                list(platforms),
                [s.value for s in statuses],
                after[0] if after else None,
                uuid.UUID(after[1]) if after else None,
                limit,
            )
        return [_connection(r) for r in rows]

    async def list_expiring(
        self,
        tenant_id: str | None,
        *,
        before: datetime,
        platforms: Sequence[str],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Connection]:
        async with _db_errors():
            rows = await self._pool.fetch(
                f"""SELECT {_COLUMNS} FROM {S}.connections
                    WHERE status <> 'disconnected'
                      AND (expires_at IS NOT NULL OR refresh_expires_at IS NOT NULL)
                      AND LEAST(expires_at, refresh_expires_at) < $1
                      AND ($2::text IS NULL OR tenant_id = $2)
                      AND (cardinality($3::text[]) = 0 OR platform = ANY($3))
                      AND ($4::timestamptz IS NULL
                           OR (LEAST(expires_at, refresh_expires_at), id) > ($4, $5::uuid))
                    ORDER BY LEAST(expires_at, refresh_expires_at), id
                    LIMIT $6""",
                before,
                tenant_id,
                list(platforms),
                after[0] if after else None,
                uuid.UUID(after[1]) if after else None,
                limit,
            )
        return [_connection(r) for r in rows]

    async def resolve_account(
        self, platform: str, external_id: str, *, include_disconnected: bool
    ) -> list[Connection]:
        async with _db_errors():
            rows = await self._pool.fetch(
                f"""SELECT {_COLUMNS} FROM {S}.connections
                    WHERE platform = $1 AND external_id = $2
                      AND ($3 OR status <> 'disconnected')
                    ORDER BY created_at""",
                platform,
                external_id,
                include_disconnected,
            )
        return [_connection(r) for r in rows]

    async def list_audit(
        self, tenant_id: str, connection_id: str | None, *, limit: int, before_seq: int | None
    ) -> list[tuple[int, AuditEntry]]:
        async with _db_errors():
            rows = await self._pool.fetch(
                f"""SELECT * FROM {S}.connection_audit
                    WHERE tenant_id = $1
                      AND ($2::uuid IS NULL OR connection_id = $2)
                      AND ($3::bigint IS NULL OR seq < $3)
                    ORDER BY seq DESC LIMIT $4""",
                tenant_id,
                uuid.UUID(connection_id) if connection_id else None,
                before_seq,
                limit,
            )
        return [
            (
                r["seq"],
                AuditEntry(
                    id=str(r["id"]),
                    tenant_id=r["tenant_id"],
                    connection_id=str(r["connection_id"]),
                    action=r["action"],
                    actor=r["actor"],
                    reason=r["reason"],
                    previous_status=r["previous_status"],
                    status=r["status"],
                    details={str(k): str(v) for k, v in (r["details"] or {}).items()},
                    occurred_at=r["occurred_at"],
                ),
            )
            for r in rows
        ]

    async def set_last_error(
        self, tenant_id: str, connection_id: str, error: PlatformError | None
    ) -> None:
        async with _db_errors():
            await self._pool.execute(
                f"""UPDATE {S}.connections SET last_error = $3, updated_at = now()
                    WHERE tenant_id = $1 AND id = $2""",
                tenant_id,
                uuid.UUID(connection_id),
                error.to_json() if error else None,
            )

    # -- OAuth states ---------------------------------------------------------------

    async def insert_state(self, digest: bytes, state: AuthState) -> None:
        async with _db_errors():
            await self._pool.execute(
                f"""INSERT INTO {S}.oauth_states
                      (state_hash, tenant_id, user_id, platform, redirect_uri, return_url,
                       capabilities, requested_scopes, reconnect_id, sealed_verifier, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
                digest,
                state.tenant_id,
                state.user_id,
                state.platform,
                state.redirect_uri,
                state.return_url,
                list(state.capabilities),
                list(state.requested_scopes),
                uuid.UUID(state.reconnect_id) if state.reconnect_id else None,
                state.sealed_verifier,
                state.expires_at,
            )

    async def consume_state(self, digest: bytes) -> AuthState | None:
        async with _db_errors():
            row = await self._pool.fetchrow(
                f"""UPDATE {S}.oauth_states SET consumed_at = now()
                    WHERE state_hash = $1 AND consumed_at IS NULL
                    RETURNING *""",
                digest,
            )
        if row is None:
            return None
        return AuthState(
            tenant_id=row["tenant_id"],
            user_id=row["user_id"],
            platform=row["platform"],
            redirect_uri=row["redirect_uri"],
            return_url=row["return_url"],
            capabilities=tuple(row["capabilities"]),
            requested_scopes=tuple(row["requested_scopes"]),
            reconnect_id=str(row["reconnect_id"]) if row["reconnect_id"] else None,
            sealed_verifier=row["sealed_verifier"],
            expires_at=row["expires_at"],
            consumed=True,
        )

    async def purge_states(self, before: datetime) -> int:
        async with _db_errors():
            done = await self._pool.execute(
                f"DELETE FROM {S}.oauth_states WHERE expires_at < $1", before
            )
        return int(done.split()[-1])

    # -- publish records --------------------------------------------------------------

    async def get_record(
        self, tenant_id: str, connection_id: str, key: str
    ) -> PublishRecord | None:
        async with _db_errors():
            row = await self._pool.fetchrow(
                f"""SELECT * FROM {S}.publish_records
                    WHERE tenant_id = $1 AND connection_id = $2 AND idempotency_key = $3""",
                tenant_id,
                uuid.UUID(connection_id),
                key,
            )
        return _record(row) if row else None

    async def save_record(self, record: PublishRecord, *, job_id: str = "") -> None:
        async with _db_errors():
            await self._pool.execute(_UPSERT_RECORD, *_record_values(record, job_id))

    async def publish_view(
        self, tenant_id: str, connection_id: str, key: str, *, apps: Mapping[str, str]
    ) -> PublishView | None:
        async with _db_errors():
            row = await self._pool.fetchrow(
                f"""SELECT {_C_COLUMNS}, {_R_COLUMNS},
                      (SELECT max(u.blocked_until)
                         FROM unnest($4::text[], $5::text[]) AS m(platform, app)
                         JOIN {S}.platform_usage u ON u.platform = m.app
                        WHERE m.platform = c.platform
                          AND u.scope_key IN ('app', 'account:' || c.external_id)
                          AND u.blocked_until > now()) AS blocked_until
                    FROM {S}.connections c
                    LEFT JOIN {S}.publish_records r
                      ON r.tenant_id = c.tenant_id AND r.connection_id = c.id
                     AND r.idempotency_key = $3
                    WHERE c.tenant_id = $1 AND c.id = $2""",
                tenant_id,
                uuid.UUID(connection_id),
                key,
                list(apps),
                list(apps.values()),
            )
        if row is None:
            return None
        return PublishView(
            connection=_connection(row),
            record=_record_of(row, tenant_id, connection_id, key, "r_")
            if row["r_status"] is not None
            else None,
            blocked_until=row["blocked_until"],
        )

    async def save_outcome(
        self,
        record: PublishRecord,
        *,
        usage: UsageSeen | None = None,
        set_last_error: bool = False,
        last_error: PlatformError | None = None,
    ) -> None:
        # The last reading of a scope and name wins, as one upsert per reading would
        # have it (one statement may not update a row twice).
        readings = (
            {(_scope_key(u.scope, usage.account), u.name): u for u in usage.readings}
            if usage
            else {}
        )
        async with _db_errors():
            await self._pool.execute(
                _SAVE_OUTCOME,
                *_record_values(record, ""),
                usage.app if usage else "",
                [scope for scope, _ in readings],
                [name for _, name in readings],
                [u.used_percent for u in readings.values()],
                [u.used for u in readings.values()],
                [u.limit for u in readings.values()],
                [u.retry_after for u in readings.values()],
                set_last_error,
                last_error.to_json() if last_error else None,
            )

    async def save_progress(
        self, tenant_id: str, connection_id: str, key: str, progress: Mapping[str, str]
    ) -> None:
        async with _db_errors():
            await self._pool.execute(
                f"""UPDATE {S}.publish_records SET progress = progress || $4, updated_at = now()
                    WHERE tenant_id = $1 AND connection_id = $2 AND idempotency_key = $3""",
                tenant_id,
                uuid.UUID(connection_id),
                key,
                dict(progress),
            )

    async def find_record_by_fingerprint(
        self, tenant_id: str, connection_id: str, fingerprint: str, since: datetime
    ) -> PublishRecord | None:
        async with _db_errors():
            row = await self._pool.fetchrow(
                f"""SELECT * FROM {S}.publish_records
                    WHERE tenant_id = $1 AND connection_id = $2 AND fingerprint = $3
                      AND status = 'published' AND created_at >= $4
                    ORDER BY created_at DESC LIMIT 1""",
                tenant_id,
                uuid.UUID(connection_id),
                fingerprint,
                since,
            )
        return _record(row) if row else None

    # -- platform usage ----------------------------------------------------------------

    async def record_usage(self, platform: str, scope_key: str, usage: Sequence[RateUsage]) -> None:
        if not usage:
            return
        async with _db_errors():
            await self._pool.executemany(
                f"""INSERT INTO {S}.platform_usage
                      (platform, scope_key, name, used_percent, used, usage_limit, blocked_until)
                    VALUES ($1, $2, $3, $4, $5, $6,
                            CASE WHEN $7::double precision IS NULL THEN NULL
                                 ELSE now() + make_interval(secs => $7) END)
                    ON CONFLICT (platform, scope_key, name) DO UPDATE SET
                      used_percent = EXCLUDED.used_percent, used = EXCLUDED.used,
                      usage_limit = EXCLUDED.usage_limit, blocked_until = EXCLUDED.blocked_until,
                      observed_at = now()""",
                [
                    (
                        platform,
                        _scope_key(u.scope, scope_key),
                        u.name,
                        u.used_percent,
                        u.used,
                        u.limit,
                        u.retry_after,
                    )
                    for u in usage
                ],
            )

    async def blocked_until(self, platform: str, scope_keys: Sequence[str]) -> datetime | None:
        async with _db_errors():
            value = await self._pool.fetchval(
                f"""SELECT max(blocked_until) FROM {S}.platform_usage
                    WHERE platform = $1 AND scope_key = ANY($2) AND blocked_until > now()""",
                platform,
                list(scope_keys),
            )
        return value if isinstance(value, datetime) else None


# ------------------------------------------------------------------------------ outbox


class OutboxRelay:
    """Moves outbox rows to Kafka in id order, deleting each batch once acknowledged.

    One relay works at a time across replicas (a transaction-level advisory lock),
    so events of one connection keep their order. When the broker is down the batch
    stays in the table and is retried with backoff: nothing is lost.
    """

    LOCK_KEY = int.from_bytes(
        hashlib.sha256(b"postd-connectors-outbox").digest()[:8], "big", signed=True
    )

    def __init__(
        self,
        pool: asyncpg.Pool,
        produce: Callable[[str, bytes, str, list[tuple[str, bytes]]], Any],
        *,
        batch_size: int = 200,
        idle_seconds: float = 0.5,
        produce_timeout: float = 15.0,
    ) -> None:
        self._pool = pool
        self._produce = produce
        self._batch = batch_size
        self._idle = idle_seconds
        self._timeout = produce_timeout
        self.wake = asyncio.Event()
        self.sent = 0

    async def run_once(self) -> int:
        """Send one batch; returns how many rows were sent (0: none or busy)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.LOCK_KEY):
                return 0
            rows = await conn.fetch(
                f"SELECT id, topic, key, payload, headers FROM {S}.outbox ORDER BY id LIMIT $1",
                self._batch,
            )
            if not rows:
                return 0
            sends = [
                self._produce(
                    r["topic"],
                    bytes(r["payload"]),
                    r["key"],
                    [(str(k), str(v).encode()) for k, v in r["headers"]],
                )
                for r in rows
            ]
            await asyncio.wait_for(asyncio.gather(*sends), self._timeout)
            await conn.execute(
                f"DELETE FROM {S}.outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
        self.sent += len(rows)
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                sent = await self.run_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - broker/db errors of many types: back off, keep rows
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("outbox relay failed; will retry", error=repr(exc)[:300], delay=delay)
                await _wait(stop, delay)
                continue
            if sent == 0:
                self.wake.clear()
                wake = asyncio.ensure_future(self.wake.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    [wake, stopping], timeout=self._idle, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                stopping.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def state_expiry(now: datetime, ttl: float) -> datetime:
    return now + timedelta(seconds=ttl)
