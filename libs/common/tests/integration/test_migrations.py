import asyncio
from pathlib import Path

import asyncpg
import pytest

from postd_common.db import MigrationError, load_migrations, migrate
from postd_common.testing import unique

pytestmark = pytest.mark.integration


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(sql)


async def test_applies_in_order_once_and_records(pg_dsn: str, tmp_path: Path) -> None:
    schema = unique("m").replace("-", "_")
    write(tmp_path, "0001_init.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    write(tmp_path, "0002_more.sql", "ALTER TABLE things ADD COLUMN name text;")
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn, schema, load_migrations(tmp_path)) == [1, 2]
        assert await migrate(conn, schema, load_migrations(tmp_path)) == []
        write(tmp_path, "0003_index.sql", "CREATE INDEX ON things (name);")
        assert await migrate(conn, schema, load_migrations(tmp_path)) == [3]
        rows = await conn.fetch(f"SELECT version, name FROM {schema}.schema_migrations ORDER BY 1")
        assert [(r["version"], r["name"]) for r in rows] == [(1, "init"), (2, "more"), (3, "index")]
        await conn.execute(f"INSERT INTO {schema}.things (id, name) VALUES (1, 'x')")
    finally:
        await conn.close()


async def test_two_replicas_starting_together_apply_each_file_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    schema = unique("m").replace("-", "_")
    # Not idempotent on purpose: a second application would fail.
    write(tmp_path, "0001_init.sql", "CREATE TABLE once (id int); SELECT pg_sleep(0.2);")
    migrations = load_migrations(tmp_path)
    conns = [await asyncpg.connect(pg_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, schema, migrations) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(results) == [[], [], [], [1]]


async def test_edited_migration_and_bad_sql_are_refused(pg_dsn: str, tmp_path: Path) -> None:
    schema = unique("m").replace("-", "_")
    write(tmp_path, "0001_init.sql", "CREATE TABLE t (id int);")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrate(conn, schema, load_migrations(tmp_path))
        write(tmp_path, "0001_init.sql", "CREATE TABLE t (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, schema, load_migrations(tmp_path))
        write(tmp_path, "0001_init.sql", "CREATE TABLE t (id int);")
        write(tmp_path, "0002_broken.sql", "CREATE TABLE u (id nonsense_type);")
        with pytest.raises(MigrationError, match=r"0002_broken failed"):
            await migrate(conn, schema, load_migrations(tmp_path))
        # Nothing of the failed run was recorded.
        assert await conn.fetchval(f"SELECT max(version) FROM {schema}.schema_migrations") == 1
    finally:
        await conn.close()


def test_misnamed_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "1_init.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)
