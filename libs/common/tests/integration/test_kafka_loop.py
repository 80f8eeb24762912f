"""The consumer loop's guarantees against the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import Consumer, KafkaException
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace

from postd_common.kafka import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR,
    H_DLQ_ERROR_CLASS,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_TOPIC,
    H_TENANT,
    ConsumerLoop,
    DlqLimit,
    DlqLimitExceeded,
    Envelope,
    EventProducer,
    InvalidMessage,
    KafkaSettings,
    RetryPolicy,
    dlq_topic,
    headers_dict,
    message_headers,
)
from postd_common.telemetry import setup_tracing
from postd_common.testing import unique

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


async def produce(
    settings: KafkaSettings, topic: str, values: list[str], tenant_id: str = ""
) -> None:
    producer = EventProducer(settings)
    try:
        await producer.produce_many(
            (
                topic,
                StringValue(value=v),
                v.encode(),
                message_headers(StringValue(value=v), tenant_id=tenant_id),
            )
            for v in values
        )
    finally:
        await producer.close()


async def run_until(
    loop: ConsumerLoop[StringValue], done: asyncio.Event, timeout: float = 30
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        waiter = asyncio.create_task(done.wait())
        finished, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in finished:
            task.result()
        assert waiter in finished, "consumer did not finish in time"
    finally:
        stop.set()
        await task


def read_all(settings: KafkaSettings, topic: str, expected: int, timeout: float = 20) -> list:
    consumer = Consumer(
        {
            **settings.base(),
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
        }
    )
    consumer.subscribe([topic])
    out: list = []
    try:
        import time

        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


async def test_transient_failure_is_retried_and_processed_once(
    kafka_settings: KafkaSettings, make_topics
) -> None:
    [topic] = make_topics("loop-retry")
    await produce(kafka_settings, topic, ["m1", "m2", "m3"])
    failures = Counter({"m2": 2})  # m2 fails twice, then succeeds
    handled: list[str] = []
    done = asyncio.Event()

    async def handle(env: Envelope[StringValue]) -> None:
        value = env.value.value
        if failures[value] > 0:
            failures[value] -= 1
            raise ConnectionError("database blinked")
        handled.append(value)
        if len(handled) == 3:
            done.set()

    producer = EventProducer(kafka_settings)
    loop = ConsumerLoop(
        kafka_settings,
        topics=[topic],
        group_id=unique("g"),
        message_type=StringValue,
        handler=handle,
        dlq_producer=producer,
        retry=FAST_RETRY,
    )
    await run_until(loop, done)
    await producer.close()
    assert sorted(handled) == ["m1", "m2", "m3"]
    assert failures["m2"] == 0
    assert read_all(kafka_settings, dlq_topic(topic), expected=1, timeout=3) == []


async def test_poison_message_goes_to_dlq_with_its_origin(
    kafka_settings: KafkaSettings, make_topics
) -> None:
    [topic] = make_topics("loop-poison")
    setup_tracing("tests", None)
    producer = EventProducer(kafka_settings)
    await producer.produce(
        topic, b"\xff\xff\xff not a protobuf", key=b"raw", headers=[(H_TENANT, b"tenant-a")]
    )
    await producer.close()
    with trace.get_tracer("tests").start_as_current_span("publish") as span:
        traceparent_trace_id = f"{span.get_span_context().trace_id:032x}"
        await produce(
            kafka_settings, topic, ["invalid", "always-fails", "fine"], tenant_id="tenant-a"
        )
    handled: list[str] = []
    done = asyncio.Event()

    async def handle(env: Envelope[StringValue]) -> None:
        if env.value.value == "invalid":
            raise InvalidMessage("text is empty")
        if env.value.value == "always-fails":
            raise RuntimeError("bug in handler")
        handled.append(env.value.value)
        done.set()

    producer = EventProducer(kafka_settings)
    loop = ConsumerLoop(
        kafka_settings,
        topics=[topic],
        group_id=unique("g"),
        message_type=StringValue,
        handler=handle,
        dlq_producer=producer,
        retry=FAST_RETRY,
    )
    await run_until(loop, done)
    await producer.close()
    assert handled == ["fine"]

    dead = {
        msg.key(): (headers_dict(msg.headers()), msg.value())
        for msg in read_all(kafka_settings, dlq_topic(topic), expected=3)
    }
    assert set(dead) == {b"raw", b"invalid", b"always-fails"}
    for headers, _ in dead.values():
        assert headers[H_DLQ_TOPIC] == topic
        assert headers[H_DLQ_PARTITION].isdigit()
        assert headers[H_DLQ_OFFSET].isdigit()
        assert headers[H_TENANT] == "tenant-a"

    raw_headers, raw_value = dead[b"raw"]
    assert raw_value == b"\xff\xff\xff not a protobuf"  # the original bytes are kept
    assert raw_headers[H_DLQ_ERROR_CLASS] == "InvalidMessage"
    assert raw_headers[H_DLQ_ERROR].startswith("cannot decode google.protobuf.StringValue")
    assert raw_headers[H_DLQ_ATTEMPTS] == "0"

    invalid_headers, _ = dead[b"invalid"]
    assert invalid_headers[H_DLQ_ERROR_CLASS] == "InvalidMessage"
    assert invalid_headers[H_DLQ_ERROR] == "text is empty"
    assert invalid_headers[H_DLQ_ATTEMPTS] == "1"  # not retried
    assert traceparent_trace_id in invalid_headers["traceparent"]

    exhausted, _ = dead[b"always-fails"]
    assert exhausted[H_DLQ_ERROR_CLASS] == "RuntimeError"
    assert exhausted[H_DLQ_ERROR] == "bug in handler"
    assert exhausted[H_DLQ_ATTEMPTS] == str(FAST_RETRY.max_attempts)


async def test_dlq_limit_stops_a_bad_deploy(kafka_settings: KafkaSettings, make_topics) -> None:
    [topic] = make_topics("loop-limit")
    await produce(kafka_settings, topic, [f"m{i}" for i in range(10)])

    async def handle(env: Envelope[StringValue]) -> None:
        raise InvalidMessage("every message is rejected by this broken build")

    producer = EventProducer(kafka_settings)
    loop = ConsumerLoop(
        kafka_settings,
        topics=[topic],
        group_id=unique("g"),
        message_type=StringValue,
        handler=handle,
        dlq_producer=producer,
        dlq_limit=DlqLimit(max_messages=3, window_seconds=60),
        concurrency=1,
    )
    with pytest.raises(DlqLimitExceeded):
        await asyncio.wait_for(loop.run(asyncio.Event()), 30)
    await producer.close()
    assert len(read_all(kafka_settings, dlq_topic(topic), expected=10, timeout=3)) == 3


async def test_killed_consumer_redelivers_and_idempotent_handler_records_once(
    infra, kafka_settings: KafkaSettings, make_topics, pg_pool: asyncpg.Pool
) -> None:
    [topic] = make_topics("loop-kill")
    table = unique("rec").replace("-", "_")
    await pg_pool.execute(f"CREATE TABLE {table} (msg_id text PRIMARY KEY)")
    await pg_pool.execute(f"CREATE TABLE {table}_deliveries (msg_id text NOT NULL)")
    total = 300
    await produce(kafka_settings, topic, [f"msg-{i}" for i in range(total)])
    group = unique("g")
    worker = Path(__file__).with_name("consumer_worker.py")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(delay: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(worker), infra.bootstrap, topic, group, infra.dsn, table, delay],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    async def recorded() -> int:
        return int(await pg_pool.fetchval(f"SELECT count(*) FROM {table}"))

    first = start("0.02")
    try:
        # Let it get partway, then kill it without warning: no clean commit.
        for _ in range(600):
            if await recorded() >= total // 4:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    partial = await recorded()
    assert 0 < partial < total, f"kill landed at {partial}/{total}"

    second = start("0")
    try:
        for _ in range(600):
            if await recorded() >= total:
                break
            await asyncio.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    deliveries = int(await pg_pool.fetchval(f"SELECT count(*) FROM {table}_deliveries"))
    distinct = int(await pg_pool.fetchval(f"SELECT count(DISTINCT msg_id) FROM {table}_deliveries"))
    assert await recorded() == total  # every message processed
    assert distinct == total  # at least once
    # The kill landed mid-batch: some messages were handled twice, yet recorded once.
    assert deliveries > total
    assert second.returncode == 0  # SIGTERM is a clean stop


async def test_produce_many_waits_for_every_ack_and_reports_a_failure(
    kafka_settings: KafkaSettings, make_topics
) -> None:
    (topic,) = make_topics("many")
    producer = EventProducer(kafka_settings)
    try:
        values = [f"m{i}" for i in range(500)]
        await producer.produce_many((topic, StringValue(value=v), v.encode(), None) for v in values)
        got = read_all(kafka_settings, topic, len(values))
        assert sorted(StringValue.FromString(m.value()).value for m in got) == sorted(values)
        await producer.produce_many([])  # nothing to wait for
    finally:
        await producer.close()
    from postd_common.devinfra import free_port

    nowhere = EventProducer(
        KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"), message_timeout_ms=300
    )
    try:
        with pytest.raises(KafkaException):
            await nowhere.produce_many([(topic, b"x", None, None), (topic, b"y", None, None)])
    finally:
        await nowhere.close(timeout=1)


async def test_producer_close_delivers_then_releases_and_is_idempotent(
    kafka_settings: KafkaSettings, make_topics
) -> None:
    [topic] = make_topics("close")
    producer = EventProducer(kafka_settings)
    await producer.produce(topic, StringValue(value="before-close"), key=b"k")
    await producer.close()
    await producer.close()  # a second close is harmless
    got = read_all(kafka_settings, topic, expected=1)
    assert [StringValue.FromString(m.value()).value for m in got] == ["before-close"]
