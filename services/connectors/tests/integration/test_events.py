"""connection.events: every status change is in the outbox in the same transaction,
and the relay moves it to the real broker, also after the broker was down."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from confluent_kafka import Consumer

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd.events.v1 import connection_event_pb2
from postd_common.devinfra import EmbeddedBroker, free_port
from postd_common.kafka import EventProducer, KafkaSettings, TopicSpec, ensure_topics, headers_dict
from postd_common.testing import unique
from postd_connectors.adapters.postgres import OutboxRelay

pytestmark = pytest.mark.integration


def _drain(
    settings: KafkaSettings, topic: str, tenant: str, want: int, timeout: float = 20.0
) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": unique("events-test"),
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 300,
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    try:
        import time

        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = headers_dict(msg.headers())
            if headers.get("postd-tenant") != tenant:
                continue
            event = connection_event_pb2.ConnectionEvent()
            event.ParseFromString(msg.value() or b"")
            assert msg.key() == event.connection_id.encode()
            assert headers["postd-type"] == "postd.events.v1.ConnectionEvent"
            found.append(event)
    finally:
        consumer.close()
    return found


async def _outbox_rows(harness: Any, tenant: str) -> int:
    return int(
        await harness.pool.fetchval(
            "SELECT count(*) FROM connectors.outbox WHERE headers::text LIKE $1", f"%{tenant}%"
        )
    )


async def test_status_changes_reach_the_topic(
    harness: Any, tenant: str, kafka_settings: KafkaSettings, events_topic: str
) -> None:
    result = await harness.connect(tenant, "facebook")
    page = result.connections[0].connection
    changed = await harness.stub("health").UpdateConnectionStatus(
        pb.UpdateConnectionStatusRequest(
            tenant_id=tenant,
            connection_id=page.id,
            status=common_pb2.CONNECTION_STATUS_REVOKED,
            reason="Facebook says the token was revoked.",
            category=common_pb2.ERROR_CATEGORY_AUTH_REVOKED,
            source="health_check",
        )
    )
    assert changed.changed
    same = await harness.stub("health").UpdateConnectionStatus(
        pb.UpdateConnectionStatusRequest(
            tenant_id=tenant, connection_id=page.id, status=common_pb2.CONNECTION_STATUS_REVOKED
        )
    )
    assert not same.changed
    await harness.stub().DisconnectConnection(
        pb.DisconnectConnectionRequest(tenant_id=tenant, connection_id=page.id, reason="user u_1")
    )
    # 2 pages connected + revoked + disconnected
    assert await _outbox_rows(harness, tenant) == 4
    while await harness.relay.run_once():
        pass
    assert await _outbox_rows(harness, tenant) == 0
    events = await asyncio.to_thread(_drain, kafka_settings, events_topic, tenant, 4)
    mine = [e for e in events if e.connection_id == page.id]
    assert [(e.previous_status, e.status, e.source) for e in mine] == [
        (common_pb2.CONNECTION_STATUS_UNSPECIFIED, common_pb2.CONNECTION_STATUS_HEALTHY, "connect"),
        (
            common_pb2.CONNECTION_STATUS_HEALTHY,
            common_pb2.CONNECTION_STATUS_REVOKED,
            "health_check",
        ),
        (
            common_pb2.CONNECTION_STATUS_REVOKED,
            common_pb2.CONNECTION_STATUS_DISCONNECTED,
            "disconnect",
        ),
    ]
    revoked = mine[1]
    assert revoked.reconnect_url.endswith(page.id)
    assert revoked.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
    assert len({e.event_id for e in events}) == len(events)


async def test_broker_down_loses_nothing(
    harness: Any, tenant: str, pg_pool: Any, tmp_path: Any
) -> None:
    """A broker of our own: stopped while events are written, started again later."""
    port = free_port()
    broker = EmbeddedBroker(port, log_file=tmp_path / "broker.log")
    bootstrap = broker.start()
    settings = KafkaSettings(
        bootstrap=bootstrap,
        client_id="relay-test",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    topic = harness.settings.events_topic
    ensure_topics(settings, [TopicSpec(topic, 3)])
    producer = EventProducer(settings)
    relay = OutboxRelay(
        pg_pool,
        lambda t, v, k, h: producer.produce(t, v, key=k, headers=h),
        produce_timeout=3.0,
    )
    try:
        broker.stop()
        await harness.connect(tenant, "facebook")
        assert await _outbox_rows(harness, tenant) == 2
        with pytest.raises((TimeoutError, Exception)):
            await relay.run_once()
        # Nothing was deleted while the broker was away.
        assert await _outbox_rows(harness, tenant) == 2
        broker.start()
        ensure_topics(settings, [TopicSpec(topic, 3)])  # a memory broker forgets topics
        sent = 0
        for _ in range(20):
            with contextlib.suppress(TimeoutError, Exception):
                sent += await relay.run_once()
            if await _outbox_rows(harness, tenant) == 0:
                break
            await asyncio.sleep(0.5)
        assert await _outbox_rows(harness, tenant) == 0
        events = await asyncio.to_thread(_drain, settings, topic, tenant, 2)
        assert len(events) == 2
        assert {e.status for e in events} == {common_pb2.CONNECTION_STATUS_HEALTHY}
    finally:
        await producer.close(timeout=2.0)
        broker.stop()
