"""The auto-heal playbook with the real connectors and publisher in-process, Meta on
the sandbox: a deauthorization moves the Facebook Page to revoked (connectors
announces it on connection.events), the publisher pauses its jobs, the tenant gets a
one-click reconnect link; the reconnect resumes publishing and the resolution offers
to backfill the post that fell due meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.events.v1 import webhook_event_pb2
from postd.publisher.v1 import publisher_pb2 as ppb
from postd_common.kafka import message_headers
from postd_health.domain.model import AlertKind, AlertState, Severity, Status

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"


async def until(condition: Callable[[], Awaitable[bool]], what: str, limit: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


async def test_deauthorized_page_is_revoked_paused_and_healed_with_a_backfill_offer(
    make_replica: Any,
    connectors: Any,
    publisher: Any,
    producer: Any,
    topic_names: Any,
) -> None:
    tenant = str(uuid.uuid4())
    replica = make_replica(connectors_addr=connectors.address, publisher_addr=publisher.address)
    svc = replica.service
    await replica.start_consumers(producer, "connection_events", "webhook_events", "alerts")

    page = (await connectors.connect(tenant))[COFFEE_PAGE]

    async def watched() -> bool:
        w = await svc.store.get_watch(page.id, tenant)
        return w is not None and w.status is Status.HEALTHY

    await until(watched, "health to watch the new connection (connect event)")

    # A post due in a few seconds: the publisher keeps it scheduled (no dispatcher runs).
    due = datetime.now(UTC) + timedelta(seconds=3)
    created = await publisher.gateway.CreatePost(
        ppb.CreatePostRequest(
            tenant_id=tenant,
            idempotency_key=str(uuid.uuid4()),
            content=common_pb2.PostContent(text="Fresh roast on Friday"),
            targets=[ppb.PostTarget(connection_id=page.id)],
            schedule=ppb.Schedule(publish_at=stamp(due)),
            created_by="user:u_1",
        )
    )
    assert len(created.post.jobs) == 1

    # Meta's deauthorization, as the webhook router emits it once routed.
    payload = Struct()
    payload.update({"user_id": "10000000000001", "algorithm": "HMAC-SHA256"})
    event = webhook_event_pb2.WebhookEvent(
        event_id=str(uuid.uuid4()),
        platform="facebook",
        type="connection.deauthorized",
        tenant_id=tenant,
        connection_id=page.id,
        external_account_id=COFFEE_PAGE,
        received_at=stamp(datetime.now(UTC)),
        payload=payload,
    )
    await producer.produce(
        topic_names.webhook_events,
        event,
        key=page.id,
        headers=message_headers(event, tenant_id=tenant),
    )

    async def revoked() -> bool:
        w = await svc.store.get_watch(page.id, tenant)
        history = await svc.store.history(tenant, page.id, 10)
        return (
            w is not None
            and w.status is Status.REVOKED
            and any(h.status is Status.REVOKED and h.source == "webhook" for h in history)
        )

    await until(revoked, "the revocation to come back on connection.events")
    assert await connectors.status(tenant, page.id) == common_pb2.CONNECTION_STATUS_REVOKED
    [change] = [
        h for h in await svc.store.history(tenant, page.id, 10) if h.status is Status.REVOKED
    ]
    assert change.previous_status is Status.HEALTHY
    assert "deauthorized" in change.reason

    async def paused() -> bool:
        reply = await publisher.gateway.CountMissedJobs(
            ppb.CountMissedJobsRequest(tenant_id=tenant, connection_id=page.id)
        )
        return bool(reply.paused)

    await until(paused, "the publisher to pause the connection's jobs")

    # The tenant is told, once, with a link that reconnects this very connection.
    async def told() -> bool:
        await svc.relay_once()
        notes, _ = await svc.store.list_notifications(tenant, False, 10, None)
        return any(n.kind is AlertKind.CONNECTION_ATTENTION for n in notes)

    await until(told, "the reconnect notification")
    notes, _ = await svc.store.list_notifications(tenant, False, 10, None)
    [attention] = [n for n in notes if n.kind is AlertKind.CONNECTION_ATTENTION]
    assert attention.severity is Severity.CRITICAL
    assert attention.alert_state is AlertState.FIRING
    assert attention.action_url == (
        f"https://app.postd.test/v1/connect/facebook?reconnect={page.id}&capability=publish"
    )
    assert "paused" in attention.message

    async def missed() -> bool:
        reply = await publisher.gateway.CountMissedJobs(
            ppb.CountMissedJobsRequest(tenant_id=tenant, connection_id=page.id)
        )
        return reply.missed_count == 1

    await until(missed, "the scheduled post to fall due while paused")

    # A person follows the link: the reconnect runs through connectors as usual.
    again = await connectors.connect(tenant, reconnect=page.id)
    assert again[COFFEE_PAGE].id == page.id

    async def healed() -> bool:
        w = await svc.store.get_watch(page.id, tenant)
        reply = await publisher.gateway.CountMissedJobs(
            ppb.CountMissedJobsRequest(tenant_id=tenant, connection_id=page.id)
        )
        return w is not None and w.status is Status.HEALTHY and not reply.paused

    await until(healed, "the reconnect to resume publishing")

    async def offered() -> bool:
        await svc.relay_once()
        notes, _ = await svc.store.list_notifications(tenant, False, 10, None)
        return any(
            n.kind is AlertKind.CONNECTION_ATTENTION and n.alert_state is AlertState.RESOLVED
            for n in notes
        )

    await until(offered, "the resolution with the backfill offer")
    notes, _ = await svc.store.list_notifications(tenant, False, 10, None)
    [resolved] = [
        n
        for n in notes
        if n.kind is AlertKind.CONNECTION_ATTENTION and n.alert_state is AlertState.RESOLVED
    ]
    assert "works again; publishing resumed" in resolved.message
    assert "1 scheduled post fell due while it was paused" in resolved.message
    assert resolved.action_url == f"https://app.postd.test/v1/connections/{page.id}/missed-jobs"
    assert resolved.alert_id == attention.alert_id
