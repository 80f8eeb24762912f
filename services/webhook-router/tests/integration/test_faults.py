"""Faults on the real PostgreSQL: a worker killed mid-batch loses nothing (its lease
runs out and another worker takes the delivery), a broker that refuses keeps the
outbox intact, and a delivery that keeps failing is retried then dead-lettered once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from postd_common import db
from postd_common.secrets import Secret
from postd_sandbox import signing
from postd_webhook_router.adapters.postgres import PostgresStore
from postd_webhook_router.app import SPEC
from postd_webhook_router.domain.ingest import IngestPolicy, IngestService
from postd_webhook_router.domain.model import (
    InboundRequest,
    ProcessingState,
    Route,
    StoredInbound,
    Verdict,
)
from postd_webhook_router.domain.processing import EventProcessor, Handoff, ProcessingPolicy
from postd_webhook_router.domain.routing import CachedResolver
from postd_webhook_router.domain.verifiers.tiktok import TikTokVerifier
from postd_webhook_router.ports import OutboxMessage, ResolverUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(pg_dsn: str, pg_pool: asyncpg.Pool) -> PostgresStore:
    await db.migrate_dsn(pg_dsn, "webhooks", SPEC.migrations)  # type: ignore[arg-type]
    return PostgresStore(pg_pool)


class Connectors:
    """ResolveAccount that can be made to fail (the port's adapter is tested elsewhere)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.down = False

    async def resolve(self, platform: str, external_account_id: str) -> list[Route]:
        if self.down:
            raise ResolverUnavailable("connectors down")
        return [Route(self.tenant, f"conn-{external_account_id}")]


async def accept(store: PostgresStore, open_id: str) -> str:
    body = signing.canonical_json(
        {"event": "post.publish.complete", "create_time": 1, "user_openid": open_id}
    )
    event_id, inserted = await store.store_inbound(
        StoredInbound(
            id=str(uuid.uuid4()),
            platform="tiktok",
            method="POST",
            verdict=Verdict.ACCEPTED,
            verdict_reason="verified",
            platform_event_id="",
            dedupe_key=f"id:{uuid.uuid4()}",
            previous_dedupe_key=None,
            source=None,
            headers=[],
            body=body,
            body_sha256="x",
            body_size=len(body),
            remote_addr="",
            received_at=datetime.now(UTC),
            state=ProcessingState.PENDING,
        )
    )
    assert inserted
    return event_id


def processor(
    store: PostgresStore, connectors: Connectors, topic: str, **kw: float
) -> EventProcessor:
    policy = ProcessingPolicy(
        batch_size=500,
        max_attempts=int(kw.get("attempts", 3)),
        retry_base_seconds=0.01,
        lease_seconds=kw.get("lease", 60.0),
        events_topic=topic,
        dlq_topic=topic + ".dlq",
    )
    return EventProcessor(
        store, CachedResolver(connectors, 0), policy, clock=lambda: datetime.now(UTC)
    )


async def outbox(pool: asyncpg.Pool, topic: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT topic, key, raw_event_id FROM webhooks.outbox WHERE topic LIKE $1 || '%'", topic
    )


async def test_killed_worker_lease_expires_and_nothing_is_lost_or_doubled(
    store: PostgresStore, pg_pool: asyncpg.Pool, tenant_id: str
) -> None:
    topic = f"events-{uuid.uuid4().hex}"
    open_id = f"act.{uuid.uuid4().hex}"
    raw = await accept(store, open_id)

    # Deliveries other tests left pending (their routers stopped before processing
    # them) are claimed and emitted here too: only this test's delivery is counted.
    async def ours() -> list[asyncpg.Record]:
        return [r for r in await outbox(pg_pool, topic) if str(r["raw_event_id"]) == raw]

    # A worker claims the delivery, then dies before completing it.
    claimed = await store.claim_pending(500, datetime.now(UTC), 0.5)
    assert raw in [c.id for c in claimed]
    survivor = processor(store, Connectors(tenant_id), topic)
    await survivor.run_once()
    assert await ours() == []  # leased: not taken twice
    await asyncio.sleep(0.6)
    await survivor.run_once()
    await survivor.run_once()
    assert len(await ours()) == 1
    normalized = await pg_pool.fetchval(
        "SELECT count(*) FROM webhooks.normalized_events WHERE raw_event_id = $1::uuid", raw
    )
    assert normalized == 1

    # The broker refuses: the outbox keeps every row; once it accepts, all go, once.
    async def refuse(messages: Sequence[OutboxMessage]) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        await store.relay_outbox(10_000, refuse)
    assert len(await ours()) == 1
    sent: list[OutboxMessage] = []

    async def accept_all(messages: Sequence[OutboxMessage]) -> None:
        sent.extend(m for m in messages if m.topic == topic and m.key == f"conn-{open_id}")

    while await store.relay_outbox(10_000, accept_all):
        pass
    assert len(sent) == 1
    assert await ours() == []


async def test_processing_failures_retry_then_dead_letter_once(
    store: PostgresStore, pg_pool: asyncpg.Pool, tenant_id: str
) -> None:
    topic = f"events-{uuid.uuid4().hex}"
    connectors = Connectors(tenant_id)
    connectors.down = True
    raw = await accept(store, f"act.{uuid.uuid4().hex}")
    worker = processor(store, connectors, topic, attempts=3)
    for _ in range(40):
        await worker.run_once()
        state = await pg_pool.fetchval(
            "SELECT state FROM webhooks.inbound_events WHERE id = $1::uuid", raw
        )
        if state == "dead_lettered":
            break
        await asyncio.sleep(0.05)
    row = await pg_pool.fetchrow(
        "SELECT state, attempts, last_error FROM webhooks.inbound_events WHERE id = $1::uuid", raw
    )
    assert row is not None
    assert (row["state"], row["attempts"]) == ("dead_lettered", 3)
    assert "connectors down" in row["last_error"]
    rows = await outbox(pg_pool, topic)
    assert [(r["topic"], str(r["raw_event_id"])) for r in rows] == [(topic + ".dlq", raw)]


async def test_a_handed_over_delivery_is_processed_unclaimed_and_a_lost_one_comes_back(
    store: PostgresStore, pg_pool: asyncpg.Pool, tenant_id: str
) -> None:
    topic = f"events-{uuid.uuid4().hex}"
    verifiers = {"tiktok": TikTokVerifier((Secret("handoff-secret"),))}

    def ingest_with(handoff: Handoff) -> IngestService:
        return IngestService(
            verifiers,
            store,
            IngestPolicy(1 << 20, 3600),
            clock=lambda: datetime.now(UTC),
            handoff=handoff,
        )

    def webhook(open_id: str) -> InboundRequest:
        now = int(datetime.now(UTC).timestamp())
        body = signing.canonical_json(
            {"event": "post.publish.complete", "create_time": now, "user_openid": open_id}
        )
        signature = signing.tiktok_signature("handoff-secret", body, now)
        return InboundRequest(
            method="POST",
            platform="tiktok",
            path_key="",
            body=body,
            headers=[("TikTok-Signature", signature), ("Content-Type", "application/json")],
            query_string="",
            remote_addr="127.0.0.1",
            received_at=datetime.now(UTC),
        )

    async def emitted(raw: str) -> list[asyncpg.Record]:
        return [r for r in await outbox(pg_pool, topic) if str(r["raw_event_id"]) == raw]

    # Stored leased to this process and handed over: never due, so never claimed,
    # and processed from memory into the same records a claim would give.
    handoff = Handoff(0.5, 10, clock=lambda: datetime.now(UTC))
    open_id = f"act.{uuid.uuid4().hex}"
    kept = await ingest_with(handoff).ingest(webhook(open_id))
    assert kept.verdict is Verdict.ACCEPTED
    due = await pg_pool.fetchval(
        "SELECT next_attempt_at - received_at FROM webhooks.inbound_events WHERE id = $1::uuid",
        kept.event_id,
    )
    assert due.total_seconds() > 0.3
    assert kept.event_id not in [
        c.id for c in await store.claim_pending(500, datetime.now(UTC), 60.0)
    ]
    worker = EventProcessor(
        store,
        CachedResolver(Connectors(tenant_id), 0),
        ProcessingPolicy(
            batch_size=500,
            max_attempts=3,
            retry_base_seconds=0.01,
            events_topic=topic,
            dlq_topic=topic + ".dlq",
        ),
        clock=lambda: datetime.now(UTC),
        handoff=handoff,
    )
    await worker.run_once()
    (message,) = await emitted(kept.event_id)
    assert message["key"] == f"conn-{open_id}"
    row = await pg_pool.fetchrow(
        "SELECT state, routed, tenant_ids, external_account_id FROM webhooks.inbound_events "
        "WHERE id = $1::uuid",
        kept.event_id,
    )
    assert row is not None
    assert dict(row) == {
        "state": "emitted",
        "routed": "routed",
        "tenant_ids": [tenant_id],
        "external_account_id": open_id,
    }

    # Handed over to a process that died with it: the lease runs out, a claim takes it.
    lost = await ingest_with(Handoff(0.5, 10, clock=lambda: datetime.now(UTC))).ingest(
        webhook(f"act.{uuid.uuid4().hex}")
    )
    survivor = processor(store, Connectors(tenant_id), topic)
    await survivor.run_once()
    assert await emitted(lost.event_id) == []
    await asyncio.sleep(0.6)
    await survivor.run_once()
    assert len(await emitted(lost.event_id)) == 1

    # A full hand-off stores deliveries due at once, for any worker to claim.
    full = Handoff(60.0, 0, clock=lambda: datetime.now(UTC))
    plain = await ingest_with(full).ingest(webhook(f"act.{uuid.uuid4().hex}"))
    assert full.take(10) == []
    await survivor.run_once()
    assert len(await emitted(plain.event_id)) == 1
