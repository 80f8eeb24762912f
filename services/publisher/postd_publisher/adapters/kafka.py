"""Producing to Kafka in a way that survives a broker that lost its data.

Tansu in development keeps topics in memory, and any broker can be replaced: after
a restart the topics are gone and an idempotent producer holding messages from
before is stuck on sequence numbers the broker no longer knows. So after a failed
send the outlet drops its producer, re-creates the topics it needs, and builds a
fresh producer for the next send. Jobs and events are safe meanwhile in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaException

from postd.events.v1.analytics_job_pb2 import AnalyticsJob
from postd_common.kafka import (
    EventProducer,
    KafkaSettings,
    TopicSpec,
    ensure_topics,
    message_headers,
)
from postd_common.logging import get_logger
from postd_publisher.adapters.events import OutgoingMessage, job_message, timestamp
from postd_publisher.adapters.postgres import PostgresJobStore
from postd_publisher.ports import CollectionRound, DispatchJob, QueueUnavailable

log = get_logger(__name__)


class KafkaOutlet:
    """Sends batches and waits for every acknowledgement (raises QueueUnavailable)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[TopicSpec],
        *,
        send_timeout: float = 10.0,
        producer_factory: Callable[[KafkaSettings], EventProducer] | None = None,
    ) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._timeout = send_timeout
        # librdkafka gives up when we do, so no message is delivered after we
        # released its job (that would only be a harmless duplicate, but still).
        self._factory = producer_factory or (
            lambda s: EventProducer(s, message_timeout_ms=max(1, int(send_timeout * 1000)))
        )
        self._producer: EventProducer | None = None
        self._topics_ready = False
        self._lock = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()

    async def send(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        producer = await self._ready()
        items = [
            (m.topic, m.payload, m.key, [(k, v.encode()) for k, v in m.headers.items()])
            for m in messages
        ]
        try:
            await asyncio.wait_for(producer.produce_many(items), self._timeout)
        except (KafkaException, TimeoutError, BufferError) as exc:
            self._retire(producer)
            raise QueueUnavailable(
                f"broker did not acknowledge {len(items)} messages: {exc}"
            ) from exc

    async def _ready(self) -> EventProducer:
        async with self._lock:
            if not self._topics_ready:
                try:
                    created = await asyncio.to_thread(
                        ensure_topics, self._settings, self._topics, timeout=5.0
                    )
                except KafkaException as exc:
                    raise QueueUnavailable(f"broker unreachable: {exc}") from exc
                if created:
                    log.warning("topics were missing and are created again", topics=created)
                self._topics_ready = True
            if self._producer is None:
                self._producer = self._factory(self._settings)
            return self._producer

    def _retire(self, producer: EventProducer) -> None:
        if self._producer is producer:
            self._producer = None
            self._topics_ready = False
            task = asyncio.create_task(_quietly_close(producer))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.close(timeout=5.0)
            self._producer = None
        for task in list(self._retired):
            with contextlib.suppress(Exception):
                await task


async def _quietly_close(producer: EventProducer) -> None:
    with contextlib.suppress(Exception):
        await producer.close(timeout=0.5)


class KafkaJobQueue:
    """The JobQueue port: PublishJob messages keyed by connection id."""

    def __init__(self, outlet: KafkaOutlet, topic: str) -> None:
        self._outlet = outlet
        self._topic = topic

    async def send(self, jobs: Sequence[DispatchJob]) -> None:
        messages = []
        for job in jobs:
            message = job_message(job)
            headers = {
                k: v.decode()
                for k, v in message_headers(
                    message, tenant_id=job.tenant_id, idempotency_key=job.idempotency_key
                )
            }
            if job.trace_context:
                headers["traceparent"] = job.trace_context
            messages.append(
                OutgoingMessage(
                    self._topic, job.connection_id, message.SerializeToString(), headers
                )
            )
        await self._outlet.send(messages)


class KafkaAnalyticsQueue:
    """The AnalyticsQueue port: AnalyticsJob messages keyed by connection id."""

    def __init__(self, outlet: KafkaOutlet, topic: str) -> None:
        self._outlet = outlet
        self._topic = topic

    async def send(self, rounds: Sequence[CollectionRound]) -> None:
        messages = []
        for r in rounds:
            message = AnalyticsJob(
                tenant_id=r.tenant_id,
                connection_id=r.connection_id,
                platform=r.platform,
                kind=r.kind,
                task_ids=list(r.task_ids),
                dispatch_token=r.round_id,
                dispatched_at=timestamp(r.dispatched_at),
            )
            headers = {
                k: v.decode()
                for k, v in message_headers(
                    message, tenant_id=r.tenant_id, idempotency_key=r.round_id
                )
            }
            messages.append(
                OutgoingMessage(self._topic, r.connection_id, message.SerializeToString(), headers)
            )
        await self._outlet.send(messages)


class OutboxRelay:
    """Moves outbox rows (results, dead letters) to Kafka, oldest first, deleting
    them only after the broker acknowledged them."""

    def __init__(
        self,
        store: PostgresJobStore,
        outlet: KafkaOutlet,
        *,
        batch_size: int = 500,
        idle_seconds: float = 0.1,
    ) -> None:
        self._store = store
        self._outlet = outlet
        self._batch = batch_size
        self._idle = idle_seconds

    async def relay_once(self) -> int:
        async with self._store.outbox_batch(self._batch) as messages:
            await self._outlet.send(messages)
            return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                moved = await self.relay_once()
                failures = 0
            except QueueUnavailable as exc:
                failures += 1
                log.warning("outbox relay waiting for the broker", error=str(exc))
                moved = 0
                await _sleep(stop, min(5.0, 0.2 * 2**failures))
                continue
            except Exception as exc:  # noqa: BLE001 - PostgreSQL trouble: wait and retry
                failures += 1
                log.error("outbox relay failed", error=f"{type(exc).__name__}: {exc}")
                await _sleep(stop, min(5.0, 0.2 * 2**failures))
                continue
            if moved < self._batch:
                await _sleep(stop, self._idle)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
