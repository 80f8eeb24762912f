"""PostgreSQL plumbing: a pool factory and the migration runner.

Each service owns one schema and keeps ordered SQL files (``0001_init.sql``,
``0002_...sql``) in its ``migrations`` folder. The runner applies the pending ones
in order inside one transaction (all or nothing), records them in
``<schema>.schema_migrations`` with a checksum, and holds a transaction-level
advisory lock keyed on the schema so replicas starting together apply each file
once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from postd_common.logging import get_logger

log = get_logger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class MigrationError(Exception):
    """A migration file is malformed, was edited after being applied, or failed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    migrations: list[Migration] = []
    seen: set[int] = set()
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"two migrations share version {version:04d} in {directory}")
        seen.add(version)
        migrations.append(Migration(version, match.group(2), path.read_text()))
    return migrations


class Params:
    """Positional parameters of a statement assembled from optional filters.

    ``p = Params(tenant_id)``; ``p(value)`` appends a value and returns its
    placeholder (``$2``); run with ``*p.values``. Only fixed SQL text is ever joined
    into a statement; every value travels as a bound parameter.
    """

    __slots__ = ("values",)

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog"
    )
    await conn.set_type_codec("json", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog")


def _json_dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)


def _json_loads(value: str) -> Any:
    import json

    return json.loads(value)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A release that skips the session reset query (see ``reset_session``)."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str = "postd",
    command_timeout: float = 30.0,
    reset_session: bool = True,
) -> asyncpg.Pool:
    """Open a pool with JSON codecs installed. Raises ``OSError`` or
    ``asyncpg.PostgresError`` when the server cannot be reached; blocks until
    ``min_size`` connections are open.

    By default each release runs asyncpg's reset query (unlock session advisory
    locks, close cursors, UNLISTEN, RESET ALL): one more round trip per use.
    ``reset_session=False`` skips it; an open transaction is still rolled back.
    Only for code that keeps no session state on pooled connections (no SET,
    LISTEN, WITH HOLD cursors or session-level advisory locks)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=_init_connection,
        reset=None if reset_session else _keep_session,
        server_settings={"application_name": application_name},
    )
    assert pool is not None
    return pool


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"postd-migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(
    conn: asyncpg.Connection, schema: str, migrations: Sequence[Migration]
) -> list[int]:
    """Apply pending migrations for ``schema``; returns the versions applied now.

    Safe to call from several processes at once: the advisory lock serialises
    them and each re-reads what is applied after taking it.
    """
    if not _SCHEMA_NAME.match(schema):
        raise MigrationError(f"invalid schema name {schema!r}")
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        # schema is checked against _SCHEMA_NAME above; identifiers cannot be bound.
        rows = await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")  # noqa: S608
        done = {r["version"]: r["checksum"] for r in rows}
        for migration in migrations:
            recorded = done.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"{schema} migration {migration.version:04d}_{migration.name} "
                        "was changed after it was applied; add a new migration instead"
                    )
                continue
            try:
                await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"{schema} migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name, checksum) "  # noqa: S608
                "VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
            log.info(
                "migration applied",
                schema=schema,
                version=migration.version,
                migration=migration.name,
            )
    return applied_now


async def migrate_dsn(dsn: str, schema: str, directory: Path) -> list[int]:
    """Open one connection, apply ``directory``'s migrations to ``schema``, close."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, schema, load_migrations(directory))
    finally:
        await conn.close()
