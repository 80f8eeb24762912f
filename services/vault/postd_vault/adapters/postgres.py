"""All of the vault's SQL: the :class:`~postd_vault.ports.SecretStore` over asyncpg.

Table names are qualified with the schema given at construction (``vault`` in a
service; a fresh one per test), checked against a strict identifier pattern
before it is formatted into statements. Values are always bound parameters.
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar

import asyncpg

from postd_common.db import Params
from postd_vault.domain.model import (
    AuditAction,
    AuditEntry,
    AuditEvent,
    AuditQuery,
    KeyVersionRecord,
    Scope,
    SealedSecret,
    SecretAddress,
)
from postd_vault.kms import KeyVersionState, KmsKeyVersion
from postd_vault.ports import KeyVersionRetired, StaleWrite, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

_SCHEMA: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NIL_ID: Final = "00000000-0000-0000-0000-000000000000"

_Conn: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)

# Failures that mean "the database is not there right now", as opposed to a bug.
_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,
)

_COLUMNS: Final = (
    "id, tenant_id, scope, connection_id, name, kind, version, key_version, wrapped_key, "
    "ciphertext, refresh_fingerprint, expires_at, refresh_expires_at, scopes, created_at, "
    "updated_at"
)


def _unavailable() -> StoreUnavailable:
    return StoreUnavailable("the vault database is unavailable; retry", retry_after=1.0)


def _guarded(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE:
            raise _unavailable() from None

    return wrapper


def _sealed(row: asyncpg.Record) -> SealedSecret:
    return SealedSecret(
        id=str(row["id"]),
        address=SecretAddress(
            tenant_id=row["tenant_id"],
            scope=Scope(row["scope"]),
            kind=row["kind"],
            connection_id=row["connection_id"],
            name=row["name"],
        ),
        version=row["version"],
        key_version=row["key_version"],
        wrapped_key=bytes(row["wrapped_key"]),
        ciphertext=bytes(row["ciphertext"]),
        refresh_fingerprint=row["refresh_fingerprint"],
        expires_at=row["expires_at"],
        refresh_expires_at=row["refresh_expires_at"],
        scopes=tuple(row["scopes"] or ()),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _key_version(row: asyncpg.Record, count: int) -> KeyVersionRecord:
    return KeyVersionRecord(
        key_version=row["key_version"],
        provider=row["provider"],
        enabled=row["state"] == "enabled",
        primary=row["is_primary"],
        data_key_count=count,
        created_at=row["created_at"],
        promoted_at=row["promoted_at"],
        disabled_at=row["disabled_at"],
    )


class _KeyVersionChange:
    def __init__(self, conn: _Conn, sql: str, record: KeyVersionRecord | None) -> None:
        self._conn = conn
        self._sql = sql
        self.record = record

    async def mark_disabled(self) -> KeyVersionRecord:
        assert self.record is not None
        row = await self._conn.fetchrow(self._sql, self.record.key_version)
        assert row is not None  # the row is locked FOR UPDATE by this transaction
        self.record = _key_version(row, 0)
        return self.record


class _RewrapBatch:
    def __init__(
        self, rows: Sequence[SealedSecret], target: str, update_sql: str, progress_sql: str
    ) -> None:
        self.rows = rows
        self.target = target
        self.updates: list[tuple[uuid.UUID, bytes, str]] = []
        self.progress: tuple[uuid.UUID, int] | None = None
        self._update_sql = update_sql
        self._progress_sql = progress_sql

    async def replace_wrapped_key(self, secret_id: str, wrapped_key: bytes) -> None:
        self.updates.append((uuid.UUID(secret_id), wrapped_key, self.target))

    async def note_progress(self, run_id: str, rewrapped: int) -> None:
        self.progress = (uuid.UUID(run_id), rewrapped)

    async def flush(self, conn: _Conn) -> None:
        if self.updates:
            await conn.executemany(self._update_sql, self.updates)
        if self.progress is not None:
            await conn.execute(self._progress_sql, *self.progress)


class PostgresSecretStore:
    """The vault's repository. Every statement touching tenant data filters by tenant."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "vault") -> None:
        if not _SCHEMA.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self._pool = pool
        self._schema = schema

        def q(template: str) -> str:
            # Identifiers cannot be bound parameters: the schema (validated above) and
            # the fixed column list are substituted; every value stays a parameter.
            return template.replace("{s}", schema).replace("{cols}", _COLUMNS)

        self._lock_name = f"{schema}.key_versions"
        self._sql_lock_versions = "SELECT pg_advisory_xact_lock(hashtext($1))"
        self._sql_primary = q("SELECT key_version FROM {s}.key_versions WHERE is_primary")
        self._sql_upsert_version = q(
            "INSERT INTO {s}.key_versions (key_version, provider, state, created_at, disabled_at)"
            " VALUES ($1, $2, $3, coalesce($4, now()), CASE WHEN $3 = 'disabled' THEN now() END)"
            " ON CONFLICT (key_version) DO UPDATE SET state = EXCLUDED.state,"
            "  is_primary = key_versions.is_primary AND EXCLUDED.state = 'enabled',"
            "  disabled_at = CASE WHEN EXCLUDED.state = 'disabled'"
            "   THEN coalesce(key_versions.disabled_at, now()) END"
        )
        self._sql_demote = q(
            "UPDATE {s}.key_versions SET is_primary = false WHERE is_primary AND key_version <> $1"
        )
        self._sql_promote = q(
            "UPDATE {s}.key_versions SET is_primary = true, promoted_at = now()"
            " WHERE key_version = $1 AND NOT is_primary AND state = 'enabled'"
        )
        self._sql_versions = q(
            "SELECT kv.*, coalesce(c.n, 0) AS data_key_count FROM {s}.key_versions kv"
            " LEFT JOIN (SELECT key_version, count(*) AS n FROM {s}.secrets"
            "  WHERE state = 'live' GROUP BY key_version) c USING (key_version)"
            " ORDER BY kv.created_at DESC, kv.key_version DESC"
        )
        self._sql_version_for_update = q(
            "SELECT * FROM {s}.key_versions WHERE key_version = $1 FOR UPDATE"
        )
        self._sql_count_version = q(
            "SELECT count(*) FROM {s}.secrets WHERE state = 'live' AND key_version = $1"
        )
        self._sql_disable = q(
            "UPDATE {s}.key_versions SET state = 'disabled', is_primary = false,"
            " disabled_at = coalesce(disabled_at, now()) WHERE key_version = $1 RETURNING *"
        )
        self._sql_version_share = q(
            "SELECT state FROM {s}.key_versions WHERE key_version = $1 FOR SHARE"
        )
        bundle = "tenant_id = $1 AND scope = 'token_bundle' AND connection_id = $2"
        named = "tenant_id = $1 AND scope = $3 AND name = $2"
        self._sql_read = {
            "bundle": q(
                "SELECT {cols} FROM {s}.secrets WHERE {where} AND state = 'live'".replace(
                    "{where}", bundle
                )
            ),
            "named": q(
                "SELECT {cols} FROM {s}.secrets WHERE {where} AND state = 'live'".replace(
                    "{where}", named
                )
            ),
        }
        # The read and its audit event in one statement: one round trip, one commit.
        # {audit} are the parameters after the filter's: connection, name, action, actor.
        read_audited = (
            "WITH found AS (SELECT {cols} FROM {s}.secrets WHERE {where} AND state = 'live'),"
            " audited AS (INSERT INTO {s}.audit_events (tenant_id, connection_id,"
            "  secret_name, action, actor, key_version, success, detail)"
            "  SELECT $1, {audit}, coalesce((SELECT key_version FROM found), ''),"
            "   EXISTS (SELECT 1 FROM found),"
            "   CASE WHEN EXISTS (SELECT 1 FROM found) THEN '' ELSE 'NOT_FOUND' END)"
            " SELECT * FROM found"
        )
        self._sql_read_audited = {
            "bundle": q(
                read_audited.replace("{where}", bundle).replace("{audit}", "$3, $4, $5, $6")
            ),
            "named": q(read_audited.replace("{where}", named).replace("{audit}", "$4, $5, $6, $7")),
        }
        self._sql_insert = q(
            "INSERT INTO {s}.secrets (id, tenant_id, scope, connection_id, name, kind, version,"
            " state, key_version, wrapped_key, ciphertext, refresh_fingerprint, expires_at,"
            " refresh_expires_at, scopes)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 'live', $8, $9, $10, $11, $12, $13, $14)"
            " RETURNING created_at, updated_at"
        )
        self._sql_update = q(
            "UPDATE {s}.secrets SET connection_id = $4, name = $5, kind = $6, version = $7,"
            " key_version = $8, wrapped_key = $9, ciphertext = $10, refresh_fingerprint = $11,"
            " expires_at = $12, refresh_expires_at = $13, scopes = $14, updated_at = now()"
            " WHERE id = $1 AND tenant_id = $2 AND scope = $3 AND version = $15"
            " AND state = 'live' RETURNING created_at, updated_at"
        )
        self._sql_audit = q(
            "INSERT INTO {s}.audit_events (tenant_id, connection_id, secret_name, action, actor,"
            " key_version, success, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        self._sql_doomed_connection = q(
            "SELECT {cols} FROM {s}.secrets WHERE tenant_id = $1 AND connection_id = $2"
            " AND scope IN ('token_bundle', 'platform_secret') AND state = 'live'"
            " ORDER BY id FOR UPDATE"
        )
        self._sql_doomed_named = q(
            "SELECT {cols} FROM {s}.secrets WHERE tenant_id = $1 AND name = $2"
            " AND scope = 'platform_secret' AND state = 'live' FOR UPDATE"
        )
        self._sql_shred = q(
            "UPDATE {s}.secrets SET state = 'shredded', key_version = NULL, wrapped_key = NULL,"
            " ciphertext = NULL, refresh_fingerprint = '', shredded_at = now(),"
            " updated_at = now() WHERE id = ANY($1::uuid[]) AND tenant_id = $2"
        )
        self._sql_counts = q(
            "SELECT key_version, count(*) AS n FROM {s}.secrets WHERE state = 'live'"
            " GROUP BY key_version"
        )
        self._sql_claim = q(
            "SELECT {cols} FROM {s}.secrets WHERE state = 'live' AND key_version <> $1"
            " AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"
        )
        self._sql_rewrap_update = q(
            "UPDATE {s}.secrets SET wrapped_key = $2, key_version = $3"
            " WHERE id = $1 AND state = 'live'"
        )
        self._sql_run_start = q(
            "INSERT INTO {s}.rewrap_runs (id, actor, target_key_version) VALUES ($1, $2, $3)"
        )
        self._sql_run_progress = q(
            "UPDATE {s}.rewrap_runs SET rewrapped = rewrapped + $2, heartbeat_at = now(),"
            " last_batch_at = now() WHERE id = $1"
        )
        self._sql_run_finish = q(
            "UPDATE {s}.rewrap_runs SET finished_at = now(), remaining = $2 WHERE id = $1"
        )
        self._sql_run_activity = q(
            "SELECT EXISTS (SELECT 1 FROM {s}.rewrap_runs WHERE finished_at IS NULL"
            "  AND heartbeat_at > now() - make_interval(secs => $1)) AS running,"
            " (SELECT max(last_batch_at) FROM {s}.rewrap_runs) AS last_batch_at"
        )
        self._sql_audit_select = q("SELECT * FROM {s}.audit_events")

    # ------------------------------------------------------------------ key versions

    @_guarded
    async def sync_key_versions(self, provider: str, versions: Sequence[KmsKeyVersion]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql_lock_versions, self._lock_name)
            for version in versions:
                state = "enabled" if version.state is KeyVersionState.ENABLED else "disabled"
                await conn.execute(
                    self._sql_upsert_version, version.name, provider, state, version.created_at
                )
            primary = next((v.name for v in versions if v.primary), None)
            if primary is not None:
                await conn.execute(self._sql_demote, primary)
                await conn.execute(self._sql_promote, primary)

    @_guarded
    async def primary_key_version(self) -> str | None:
        value = await self._pool.fetchval(self._sql_primary)
        return str(value) if value is not None else None

    @_guarded
    async def add_primary_key_version(self, provider: str, version: KmsKeyVersion) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql_lock_versions, self._lock_name)
            await conn.execute(
                self._sql_upsert_version, version.name, provider, "enabled", version.created_at
            )
            await conn.execute(self._sql_demote, version.name)
            await conn.execute(self._sql_promote, version.name)

    @_guarded
    async def key_versions(self) -> list[KeyVersionRecord]:
        rows = await self._pool.fetch(self._sql_versions)
        return [_key_version(r, r["data_key_count"]) for r in rows]

    @contextlib.asynccontextmanager
    async def change_key_version(self, key_version: str) -> AsyncIterator[_KeyVersionChange]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(self._sql_version_for_update, key_version)
                record = None
                if row is not None:
                    count = await conn.fetchval(self._sql_count_version, key_version)
                    record = _key_version(row, int(count))
                yield _KeyVersionChange(conn, self._sql_disable, record)
        except _UNAVAILABLE:
            raise _unavailable() from None

    # ------------------------------------------------------------------ secrets

    @_guarded
    async def read_live(
        self, address: SecretAddress, audit: AuditEntry | None = None
    ) -> SealedSecret | None:
        args: list[Any]
        if address.scope is Scope.TOKEN_BUNDLE:
            kind, args = "bundle", [address.tenant_id, address.connection_id]
        else:
            kind, args = "named", [address.tenant_id, address.name, address.scope.value]
        if audit is None:
            row = await self._pool.fetchrow(self._sql_read[kind], *args)
        else:
            row = await self._pool.fetchrow(
                self._sql_read_audited[kind],
                *args,
                audit.connection_id,
                audit.secret_name,
                audit.action.value,
                audit.actor,
            )
        return _sealed(row) if row is not None else None

    @_guarded
    async def write(
        self, secret: SealedSecret, *, replaces: SealedSecret | None, audit: AuditEntry
    ) -> SealedSecret:
        a = secret.address
        values = (
            uuid.UUID(secret.id),
            a.tenant_id,
            a.scope.value,
            a.connection_id,
            a.name,
            a.kind,
            secret.version,
            secret.key_version,
            secret.wrapped_key,
            secret.ciphertext,
            secret.refresh_fingerprint,
            secret.expires_at,
            secret.refresh_expires_at,
            list(secret.scopes),
        )
        async with self._pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval(self._sql_version_share, secret.key_version)
            if state != "enabled":
                raise KeyVersionRetired(secret.key_version)
            if replaces is None:
                try:
                    row = await conn.fetchrow(self._sql_insert, *values)
                except asyncpg.UniqueViolationError:
                    raise StaleWrite(secret.id) from None
            else:
                if replaces.id != secret.id or replaces.address.tenant_id != a.tenant_id:
                    raise ValueError("a replacement keeps its id and tenant")
                row = await conn.fetchrow(self._sql_update, *values, replaces.version)
                if row is None:
                    raise StaleWrite(secret.id)
            await self._audit(conn, audit)
        assert row is not None
        return SealedSecret(
            id=secret.id,
            address=a,
            version=secret.version,
            key_version=secret.key_version,
            wrapped_key=secret.wrapped_key,
            ciphertext=secret.ciphertext,
            refresh_fingerprint=secret.refresh_fingerprint,
            expires_at=secret.expires_at,
            refresh_expires_at=secret.refresh_expires_at,
            scopes=secret.scopes,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    @_guarded
    async def shred(
        self, tenant_id: str, *, connection_id: str = "", name: str = "", audit: AuditEntry
    ) -> list[SealedSecret]:
        if bool(connection_id) == bool(name):
            raise ValueError("shred one connection or one name")
        async with self._pool.acquire() as conn, conn.transaction():
            if connection_id:
                rows = await conn.fetch(self._sql_doomed_connection, tenant_id, connection_id)
            else:
                rows = await conn.fetch(self._sql_doomed_named, tenant_id, name)
            doomed = [_sealed(r) for r in rows]
            if doomed:
                await conn.execute(self._sql_shred, [r["id"] for r in rows], tenant_id)
            count = f"{len(doomed)} shredded"
            detail = f"{audit.detail}; {count}" if audit.detail else count
            await self._audit(conn, _with_detail(audit, detail))
        return doomed

    # ------------------------------------------------------------------ rewrap

    @_guarded
    async def count_by_key_version(self) -> dict[str, int]:
        rows = await self._pool.fetch(self._sql_counts)
        return {r["key_version"]: int(r["n"]) for r in rows}

    @contextlib.asynccontextmanager
    async def claim_rewrap_batch(
        self, target_version: str, limit: int, after_id: str
    ) -> AsyncIterator[_RewrapBatch]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                state = await conn.fetchval(self._sql_version_share, target_version)
                if state != "enabled":
                    raise KeyVersionRetired(target_version)
                rows = await conn.fetch(
                    self._sql_claim, target_version, uuid.UUID(after_id or _NIL_ID), limit
                )
                batch = _RewrapBatch(
                    [_sealed(r) for r in rows],
                    target_version,
                    self._sql_rewrap_update,
                    self._sql_run_progress,
                )
                yield batch
                await batch.flush(conn)
        except _UNAVAILABLE:
            raise _unavailable() from None

    @_guarded
    async def start_rewrap_run(self, actor: str, target_version: str) -> str:
        run_id = uuid.uuid4()
        await self._pool.execute(self._sql_run_start, run_id, actor, target_version)
        return str(run_id)

    @_guarded
    async def finish_rewrap_run(self, run_id: str, remaining: int) -> None:
        await self._pool.execute(self._sql_run_finish, uuid.UUID(run_id), remaining)

    @_guarded
    async def rewrap_activity(self, stale_after_seconds: float) -> tuple[bool, datetime | None]:
        row = await self._pool.fetchrow(self._sql_run_activity, float(stale_after_seconds))
        assert row is not None  # an aggregate always returns a row
        return bool(row["running"]), row["last_batch_at"]

    # ------------------------------------------------------------------ audit

    @_guarded
    async def record_audit(self, entry: AuditEntry) -> None:
        async with self._pool.acquire() as conn:
            await self._audit(conn, entry)

    async def _audit(self, conn: _Conn, entry: AuditEntry) -> None:
        await conn.execute(
            self._sql_audit,
            entry.tenant_id,
            entry.connection_id,
            entry.secret_name,
            entry.action.value,
            entry.actor,
            entry.key_version,
            entry.success,
            entry.detail,
        )

    @_guarded
    async def list_audit(self, query: AuditQuery) -> list[AuditEvent]:
        clauses: list[str] = []
        bind = Params()
        if query.tenant_id:
            clauses.append(f"tenant_id = {bind(query.tenant_id)}")
        if query.connection_id:
            clauses.append(f"connection_id = {bind(query.connection_id)}")
        if query.actions:
            clauses.append(f"action = ANY({bind([a.value for a in query.actions])}::text[])")
        if query.since is not None:
            clauses.append(f"occurred_at >= {bind(query.since)}")
        if query.after is not None:
            at, last_id = query.after
            clauses.append(f"(occurred_at, id) < ({bind(at)}, {bind(uuid.UUID(last_id))})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = bind(query.page_size + 1)
        # Only fixed clause texts are joined in; every value is a bound parameter.
        sql = " ".join(
            (self._sql_audit_select, where, "ORDER BY occurred_at DESC, id DESC LIMIT", limit)
        )
        rows = await self._pool.fetch(sql, *bind.values)
        return [
            AuditEvent(
                id=str(r["id"]),
                entry=AuditEntry(
                    action=AuditAction(r["action"]),
                    actor=r["actor"],
                    tenant_id=r["tenant_id"],
                    connection_id=r["connection_id"],
                    secret_name=r["secret_name"],
                    key_version=r["key_version"],
                    success=r["success"],
                    detail=r["detail"],
                ),
                occurred_at=r["occurred_at"],
            )
            for r in rows
        ]


def _with_detail(entry: AuditEntry, detail: str) -> AuditEntry:
    return AuditEntry(
        action=entry.action,
        actor=entry.actor,
        tenant_id=entry.tenant_id,
        connection_id=entry.connection_id,
        secret_name=entry.secret_name,
        key_version=entry.key_version,
        success=entry.success,
        detail=detail,
    )
