"""The pool factory: what a released connection keeps, with and without the session reset."""

from __future__ import annotations

import asyncpg
import pytest

from postd_common import db

pytestmark = pytest.mark.integration


async def released_state(pool: asyncpg.Pool) -> tuple[str, bool]:
    """Change session state and leave a transaction open, release, and look again."""
    async with pool.acquire() as conn:
        await conn.execute("SET work_mem = '77kB'")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1")
    async with pool.acquire() as conn:  # min_size = max_size = 1: the same connection
        work_mem = await conn.fetchval("SHOW work_mem")
        in_transaction = conn.is_in_transaction()
    return work_mem, in_transaction


async def test_default_release_resets_the_session(pg_dsn: str) -> None:
    pool = await db.create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        work_mem, in_transaction = await released_state(pool)
    finally:
        await pool.close()
    assert work_mem != "77kB"
    assert not in_transaction


async def test_without_session_reset_settings_stay_but_transactions_still_end(
    pg_dsn: str,
) -> None:
    pool = await db.create_pool(pg_dsn, min_size=1, max_size=1, reset_session=False)
    try:
        work_mem, in_transaction = await released_state(pool)
    finally:
        await pool.close()
    assert work_mem == "77kB"  # the trade-off: session settings survive a release
    assert not in_transaction  # but an open transaction never leaks to the next user
