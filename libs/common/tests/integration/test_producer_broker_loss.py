"""An EventProducer outlives a broker that came back empty (every service's outbox
relay produces through one: connection events, alerts, webhook events)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from postd_common.devinfra import EmbeddedBroker, free_port
from postd_common.kafka import EventProducer, KafkaSettings, TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{topic}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
        }
    )
    consumer.subscribe([topic])
    seen: list[bytes] = []
    for _ in range(100):
        for message in consumer.consume(100, 0.2):
            if message.error() is None:
                seen.append(message.value() or b"")
        if len(seen) >= expected:
            break
    consumer.close()
    return seen


async def test_producer_delivers_again_after_the_broker_lost_everything(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), log_file=tmp_path / "broker.log")
    bootstrap = broker.start()
    settings = KafkaSettings(bootstrap=bootstrap, client_id="producer-test")
    topic = TopicSpec("relay.events", 3)
    producer = EventProducer(settings, message_timeout_ms=3000)
    try:
        await asyncio.to_thread(ensure_topics, settings, [topic])
        await producer.produce_many([(topic.name, b"before", b"k", None)])
        # The broker comes back empty on the same port; its topics are made again, as
        # an operator (or `make up`, on SIGUSR1) does.
        broker.stop()
        broker.start()
        await asyncio.to_thread(ensure_topics, settings, [topic])
        # The client saw its only broker go: the next message takes a fresh one and
        # is delivered at the first try (not after a message timeout).
        await asyncio.wait_for(
            producer.produce_many([(topic.name, b"after", b"k", None)]), timeout=2.5
        )
        await producer.produce(topic.name, b"later", key=b"k")
        values = await asyncio.to_thread(read_all, bootstrap, topic.name, 2)
        assert b"after" in values
        assert b"later" in values
        assert b"before" not in values  # the broker really lost it
    finally:
        await producer.close(timeout=2)
        broker.stop()
