"""Group commit on the real PostgreSQL: concurrent deliveries share one transaction,
each caller gets its own row's answer, and no caller is answered before its row is
committed — a batch that fails answers every caller with the failure and stores none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from postd_common import db
from postd_sandbox import signing
from postd_webhook_router.adapters.postgres import GroupCommit, PostgresStore
from postd_webhook_router.app import SPEC
from postd_webhook_router.domain.ingest import dedupe_keys
from postd_webhook_router.domain.model import (
    PendingInbound,
    ProcessingState,
    StoredInbound,
    Verdict,
    Verified,
)
from postd_webhook_router.domain.processing import Handoff
from postd_webhook_router.ports import StoreUnavailable

from .conftest import Stack, dedupe_key_held, waiting_inserts

pytestmark = pytest.mark.integration


class CountingStore(PostgresStore):
    """The real adapter, recording the size of every batch it writes."""

    def __init__(self, pool: asyncpg.Pool, policy: GroupCommit) -> None:
        super().__init__(pool, policy)
        self.batches: list[int] = []

    async def insert_batch(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, bool]]:
        self.batches.append(len(rows))
        return await super().insert_batch(rows)


@pytest.fixture
async def store(pg_dsn: str, pg_pool: asyncpg.Pool) -> CountingStore:
    await db.migrate_dsn(pg_dsn, "webhooks", SPEC.migrations)  # type: ignore[arg-type]
    # One transaction in flight: every row queued in one turn of the loop shares it.
    return CountingStore(pg_pool, GroupCommit(max_rows=50, max_concurrent=1))


def delivery(
    key: str | None, *, previous: str | None = None, remote_addr: str = ""
) -> StoredInbound:
    accepted = key is not None
    return StoredInbound(
        id=str(uuid.uuid4()),
        platform="tiktok",
        method="POST",
        verdict=Verdict.ACCEPTED if accepted else Verdict.REJECTED_SIGNATURE,
        verdict_reason="verified" if accepted else "forged",
        platform_event_id="",
        dedupe_key=key,
        previous_dedupe_key=previous,
        source=None,
        headers=[("Content-Type", "application/json")],
        body=b"{}" if accepted else None,
        body_sha256="x",
        body_size=2,
        remote_addr=remote_addr,
        received_at=datetime.now(UTC),
        state=ProcessingState.PENDING if accepted else ProcessingState.SKIPPED,
    )


def key() -> str:
    return f"id:{uuid.uuid4().hex}"


async def stored(pool: asyncpg.Pool, dedupe_key: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, duplicate_count FROM webhooks.inbound_events "
        "WHERE platform = 'tiktok' AND dedupe_key = $1",
        dedupe_key,
    )


async def test_one_batch_answers_each_delivery_as_single_commits_would(
    store: CountingStore, pg_pool: asyncpg.Pool
) -> None:
    seen, copied, new, old_window = key(), key(), key(), key()
    first_seen = delivery(seen)
    first_old = delivery(old_window)
    assert await store.store_inbound(first_seen) == (first_seen.id, True)
    assert await store.store_inbound(first_old) == (first_old.id, True)
    store.batches.clear()

    fresh = delivery(new)
    again = delivery(seen)  # conflicts with a stored row
    copy_a, copy_b = delivery(copied), delivery(copied)  # the same event twice in one batch
    rejected = delivery(None)  # no dedupe key: always stored
    next_window = delivery(key(), previous=old_window)  # seen in the previous window
    results = await asyncio.gather(
        *(store.store_inbound(d) for d in (fresh, again, copy_a, copy_b, rejected, next_window))
    )

    assert store.batches == [6]
    assert results == [
        (fresh.id, True),
        (first_seen.id, False),
        (copy_a.id, True),
        (copy_a.id, False),
        (rejected.id, True),
        (first_old.id, False),
    ]
    assert [r["duplicate_count"] for r in await stored(pg_pool, seen)] == [1]
    assert [r["duplicate_count"] for r in await stored(pg_pool, copied)] == [1]
    assert [r["duplicate_count"] for r in await stored(pg_pool, old_window)] == [1]
    assert [str(r["id"]) for r in await stored(pg_pool, new)] == [fresh.id]
    verdict = await pg_pool.fetchval(
        "SELECT verdict FROM webhooks.inbound_events WHERE id = $1::uuid", rejected.id
    )
    assert verdict == "rejected_signature"


async def test_a_batch_that_loses_its_connection_fails_every_caller_and_stores_none(
    store: CountingStore, pg_pool: asyncpg.Pool, pg_dsn: str
) -> None:
    # Rows run in dedupe-key order: `before` is written, then the batch waits on `held`.
    before, held, after = (f"id:{c}{uuid.uuid4().hex}" for c in "08f")
    # Another transaction inserts `held` and stays open: the batch waits on it.
    async with dedupe_key_held(pg_dsn, held):
        batch = [delivery(after), delivery(held), delivery(before)]
        calls = [asyncio.create_task(store.store_inbound(d)) for d in batch]
        (pid,) = await waiting_inserts(pg_pool, 1)
        # PostgreSQL goes away under the batch (as in a crash or failover).
        assert await pg_pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        assert store.batches == [3]
    # Nothing was committed, so nothing was acknowledged: the rows before and after
    # the blocked one in the same transaction are gone too.
    assert await stored(pg_pool, before) == []
    assert await stored(pg_pool, after) == []
    assert await stored(pg_pool, held) == []


async def test_a_row_postgresql_refuses_fails_alone(
    store: CountingStore, pg_pool: asyncpg.Pool
) -> None:
    good_a, good_b = delivery(key()), delivery(key())
    bad = delivery(key(), remote_addr="nul\x00byte")  # text cannot hold NUL
    outcomes = await asyncio.gather(
        *(store.store_inbound(d) for d in (good_a, bad, good_b)), return_exceptions=True
    )
    assert outcomes[0] == (good_a.id, True)
    assert outcomes[2] == (good_b.id, True)
    assert isinstance(outcomes[1], asyncpg.PostgresError)
    assert store.batches == [3]  # the batch was refused as a whole, then split


async def test_through_the_front_a_lost_commit_answers_503_and_the_retry_stores_once(
    stack: Stack, pg_dsn: str
) -> None:
    """The platform's view: the gateway answers 503 when the commit failed, and the
    platform's retry is stored once (nothing was acknowledged the first time)."""
    secret = stack.settings.inbound.client_secrets["tiktok"][0].reveal()
    now = int(datetime.now(UTC).timestamp())
    body = signing.canonical_json(
        {"event": "post.publish.complete", "create_time": now, "user_openid": key()}
    )
    headers = {
        "Content-Type": "application/json",
        "TikTok-Signature": signing.tiktok_signature(secret, body, now),
    }
    held, _ = dedupe_keys(
        Verified(),
        hashlib.sha256(body).hexdigest(),
        None,
        datetime.now(UTC),
        stack.settings.inbound.dedupe_window_seconds,
    )
    async with aiohttp.ClientSession() as http:
        async with dedupe_key_held(pg_dsn, held) as blocker:
            answer = asyncio.create_task(http.post(stack.url("tiktok"), data=body, headers=headers))
            (pid,) = await waiting_inserts(stack.pool, 1)
            await blocker.execute("SELECT pg_terminate_backend($1)", pid)
            response = await answer
            assert response.status == 503
            response.release()
        assert await stored(stack.pool, held) == []
        async with http.post(stack.url("tiktok"), data=body, headers=headers) as retry:
            assert retry.status == 200
    assert len(await stored(stack.pool, held)) == 1


async def test_a_graceful_stop_hands_its_waiting_deliveries_to_the_next_worker(
    store: CountingStore, pg_pool: asyncpg.Pool
) -> None:
    # Ingest and processing in one process: accepted deliveries are stored leased to
    # it (due a lease later) and wait in memory for its processor.
    now = datetime.now(UTC)
    handoff = Handoff(60.0, 10, clock=lambda: now)
    waiting = []
    for _ in range(3):
        item = dataclasses.replace(delivery(key()), due_at=handoff.due_at())
        event_id, inserted = await store.store_inbound(item)
        assert inserted
        handoff.put(
            PendingInbound(
                id=event_id,
                platform="tiktok",
                body=b"{}",
                headers=[],
                received_at=now,
                platform_event_id="",
                source=None,
                attempts=0,
            )
        )
        waiting.append(uuid.UUID(event_id))
    processed = handoff.take(1)  # its processor took one before the stop

    async def due_times() -> dict[uuid.UUID, datetime]:
        rows = await pg_pool.fetch(
            "SELECT id, next_attempt_at FROM webhooks.inbound_events WHERE id = ANY($1)",
            waiting,
        )
        return {r["id"]: r["next_attempt_at"] for r in rows}

    assert all(at > now for at in (await due_times()).values())
    stopped = now + timedelta(seconds=1)
    assert await handoff.release(store, stopped) == 2
    due = await due_times()
    assert [due[i] <= stopped for i in waiting] == [False, True, True]
    assert due[uuid.UUID(processed[0].id)] > stopped  # taken: still its lease
    assert handoff.take(10) == []  # nothing left to process twice
