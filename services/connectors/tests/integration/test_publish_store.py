"""The publish path's store on the real database, with the pool configured as the
service's (no session reset on release): one read before a publish, one write after,
and the refresh lock never left behind on a pooled connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from postd_common import db
from postd_common.testing import unique
from postd_connectors import convert
from postd_connectors.adapters.postgres import PostgresConnections
from postd_connectors.app import SPEC
from postd_connectors.domain.model import (
    Connection,
    ConnectionStatus,
    ErrorAction,
    ErrorCategory,
    PlatformError,
)
from postd_connectors.platforms.base import RateUsage
from postd_connectors.ports import PublishRecord, UsageSeen

pytestmark = pytest.mark.integration

APPS = {"facebook": "meta", "instagram": "meta", "linkedin": "linkedin"}


@pytest.fixture
async def one_connection_pool(migrated: str) -> AsyncIterator[asyncpg.Pool]:
    """One pooled connection, so a test sees whatever the last user left on it."""
    pool = await db.create_pool(
        migrated, min_size=1, max_size=1, reset_session=SPEC.pool_session_reset
    )
    yield pool
    await pool.close()


def _repo(pool: asyncpg.Pool) -> PostgresConnections:
    return PostgresConnections(pool, convert.event_encoder(unique("connection.events")))


async def _connection(
    repo: PostgresConnections, tenant: str, platform: str = "facebook", external_id: str = ""
) -> Connection:
    async with repo.transaction() as tx:
        return await tx.save(
            Connection(
                id=str(uuid.uuid4()),
                tenant_id=tenant,
                platform=platform,
                external_id=external_id or unique("page"),
                status=ConnectionStatus.HEALTHY,
            ),
            insert=True,
        )


def _record(connection: Connection, key: str, status: str = "pending") -> PublishRecord:
    return PublishRecord(
        tenant_id=connection.tenant_id,
        connection_id=connection.id,
        idempotency_key=key,
        status=status,
        fingerprint="fp1:x",
        attempts=1,
    )


async def _advisory_locks(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    )


def test_the_service_pool_skips_the_session_reset() -> None:
    # What the rest of this module relies on; a service default would hide it.
    assert SPEC.pool_session_reset is False


async def test_the_refresh_lock_is_released_before_the_connection_is_reused(
    one_connection_pool: asyncpg.Pool,
) -> None:
    repo = _repo(one_connection_pool)
    async with repo.refresh_lock(str(uuid.uuid4())) as lock:
        assert not lock.waited
    assert await _advisory_locks(one_connection_pool) == 0
    with pytest.raises(RuntimeError):
        async with repo.refresh_lock(str(uuid.uuid4())):
            raise RuntimeError("the refresh failed")
    assert await _advisory_locks(one_connection_pool) == 0


async def test_a_refresh_cancelled_while_waiting_leaves_no_lock_behind(
    one_connection_pool: asyncpg.Pool, pg_pool: asyncpg.Pool
) -> None:
    """Cancelled while PostgreSQL may be granting the lock: the pooled connection is
    closed rather than reused holding it, so the connection's next refresh is not
    blocked for ever."""
    repo = _repo(one_connection_pool)
    connection_id = str(uuid.uuid4())
    async with _repo(pg_pool).refresh_lock(connection_id):
        waiter = asyncio.create_task(_hold(repo, connection_id))
        await asyncio.sleep(0.3)  # waiting on pg_advisory_lock
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert await _advisory_locks(one_connection_pool) == 0
    async with asyncio.timeout(5):
        async with repo.refresh_lock(connection_id) as lock:
            assert not lock.waited


async def _hold(repo: PostgresConnections, connection_id: str) -> None:
    async with repo.refresh_lock(connection_id):
        await asyncio.sleep(60)


async def test_single_flight_holds_across_pooled_connections(
    connectors_pool: asyncpg.Pool,
) -> None:
    repo = _repo(connectors_pool)
    connection_id = str(uuid.uuid4())
    inside = 0
    most = 0
    waited: list[bool] = []

    async def refresh() -> None:
        nonlocal inside, most
        async with repo.refresh_lock(connection_id) as lock:
            waited.append(lock.waited)
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(refresh() for _ in range(4)))
    assert most == 1
    assert sorted(waited) == [False, True, True, True]


async def test_publish_view_reads_connection_record_and_block_at_once(
    connectors_pool: asyncpg.Pool, pg_pool: asyncpg.Pool
) -> None:
    repo = _repo(connectors_pool)
    tenant = unique("tenant")
    connection = await _connection(repo, tenant)
    key = unique("key")
    view = await repo.publish_view(tenant, connection.id, key, apps=APPS)
    assert view is not None
    assert view.connection.id == connection.id
    assert view.record is None
    assert view.blocked_until is None
    await repo.save_record(_record(connection, key, "unknown"), job_id="job-1")
    view = await repo.publish_view(tenant, connection.id, key, apps=APPS)
    assert view is not None
    assert view.record is not None
    assert (view.record.status, view.record.attempts) == ("unknown", 1)
    assert view.record.idempotency_key == key
    assert view.record.created_at is not None


async def test_publish_view_is_the_tenants_own(
    connectors_pool: asyncpg.Pool,
) -> None:
    repo = _repo(connectors_pool)
    tenant, other = unique("tenant"), unique("tenant")
    connection = await _connection(repo, tenant)
    key = unique("key")
    await repo.save_record(_record(connection, key, "published"))
    assert await repo.publish_view(other, connection.id, key, apps=APPS) is None
    # Another tenant's connection with the same key sees none of this record.
    theirs = await _connection(repo, other, external_id=connection.external_id)
    view = await repo.publish_view(other, theirs.id, key, apps=APPS)
    assert view is not None
    assert view.record is None


async def test_publish_view_sees_blocks_of_its_app_and_account_only(
    connectors_pool: asyncpg.Pool, pg_pool: asyncpg.Pool
) -> None:
    repo = _repo(connectors_pool)
    tenant = unique("tenant")
    page = await _connection(repo, tenant, "facebook")
    member = await _connection(repo, tenant, "linkedin", external_id=page.external_id)
    later = datetime.now(UTC) + timedelta(minutes=5)

    async def block(app: str, scope_key: str, until: datetime) -> None:
        await pg_pool.execute(
            """INSERT INTO connectors.platform_usage (platform, scope_key, name, blocked_until)
               VALUES ($1, $2, 'test', $3)""",
            app,
            scope_key,
            until,
        )

    # The same account id on another app, and an expired block: neither applies.
    await block("linkedin", f"account:{page.external_id}", later)
    await block("meta", f"account:{page.external_id}", datetime.now(UTC) - timedelta(seconds=1))
    try:
        view = await repo.publish_view(tenant, page.id, "k", apps=APPS)
        assert view is not None
        assert view.blocked_until is None
        view = await repo.publish_view(tenant, member.id, "k", apps=APPS)
        assert view is not None
        assert view.blocked_until is not None
        await block("meta", "app", later)
        view = await repo.publish_view(tenant, page.id, "k", apps=APPS)
        assert view is not None
        assert view.blocked_until == later
    finally:
        await pg_pool.execute("DELETE FROM connectors.platform_usage WHERE name = 'test'")


async def test_save_outcome_writes_record_usage_and_last_error_together(
    connectors_pool: asyncpg.Pool, pg_pool: asyncpg.Pool
) -> None:
    repo = _repo(connectors_pool)
    tenant = unique("tenant")
    connection = await _connection(repo, tenant)
    key = unique("key")
    await repo.save_record(_record(connection, key), job_id="job-7")
    error = PlatformError(
        category=ErrorCategory.RATE_LIMITED,
        platform="facebook",
        message="Too many calls",
        action=ErrorAction.RETRY_LATER,
        retryable=True,
        retry_after=30.0,
    )
    account = connection.external_id
    readings = [
        RateUsage(name="page_calls", scope="account", used_percent=40),
        # The same scope and name twice in one answer: the last one counts.
        RateUsage(name="page_calls", scope="account", used_percent=100, retry_after=30),
        RateUsage(name="app_calls", scope="app", used=5, limit=10, used_percent=50),
    ]
    await repo.save_outcome(
        _record(connection, key, "failed"),
        usage=UsageSeen("meta", account, readings),
        set_last_error=True,
        last_error=error,
    )
    row = await pg_pool.fetchrow(
        "SELECT status, job_id FROM connectors.publish_records WHERE idempotency_key = $1", key
    )
    assert (row["status"], row["job_id"]) == ("failed", "job-7")
    usage = {
        (r["scope_key"], r["name"]): r
        for r in await pg_pool.fetch(
            "SELECT * FROM connectors.platform_usage WHERE platform = 'meta' "
            "AND scope_key IN ('app', $1)",
            f"account:{account}",
        )
    }
    assert usage[(f"account:{account}", "page_calls")]["used_percent"] == 100
    assert usage[(f"account:{account}", "page_calls")]["blocked_until"] is not None
    assert (usage[("app", "app_calls")]["used"], usage[("app", "app_calls")]["usage_limit"]) == (
        5,
        10,
    )
    saved = await repo.get(tenant, connection.id)
    assert saved is not None
    assert saved.last_error == error
    # Success: the record, no usage, and the error cleared.
    await repo.save_outcome(_record(connection, key, "published"), set_last_error=True)
    saved = await repo.get(tenant, connection.id)
    assert saved is not None
    assert saved.last_error is None
    # Not asked to: the connection's error stays as it is.
    await repo.set_last_error(tenant, connection.id, error)
    await repo.save_outcome(_record(connection, key, "published"))
    saved = await repo.get(tenant, connection.id)
    assert saved is not None
    assert saved.last_error == error
    await pg_pool.execute(
        "DELETE FROM connectors.platform_usage "
        "WHERE platform = 'meta' AND scope_key IN ('app', $1)",
        f"account:{account}",
    )


async def test_save_outcome_is_all_or_nothing(connectors_pool: asyncpg.Pool) -> None:
    repo = _repo(connectors_pool)
    tenant = unique("tenant")
    connection = await _connection(repo, tenant)
    key = unique("key")
    await repo.save_record(_record(connection, key))
    # A malformed reading (an integer beyond bigint) fails the whole statement.
    bad = RateUsage(name="calls", scope="account", used=2**70)
    with pytest.raises(asyncpg.DataError):
        await repo.save_outcome(
            _record(connection, key, "published"),
            usage=UsageSeen("meta", connection.external_id, [bad]),
            set_last_error=True,
        )
    view = await repo.publish_view(tenant, connection.id, key, apps=APPS)
    assert view is not None
    assert view.record is not None
    assert view.record.status == "pending"
