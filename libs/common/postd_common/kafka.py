"""Kafka on confluent-kafka: topics, an idempotent producer, and the consumer loop.

The loop is the one place that polls, decodes, calls a handler, retries, sends
poison messages to ``<topic>.dlq``, stores offsets and carries trace context.
Handlers are ``async def handler(envelope) -> None`` over one decoded message and
must be idempotent: offsets are stored only after the handler succeeded, so a
crash between the two redelivers the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from postd_common.logging import get_logger, redact_text

log = get_logger(__name__)
tracer = trace.get_tracer("postd.kafka")

M = TypeVar("M", bound=ProtoMessage)

# Header names carried by every message (DESIGN.md: type, schema version, tenant,
# idempotency key, trace context).
H_TYPE = "postd-type"
H_SCHEMA_VERSION = "postd-schema-version"
H_TENANT = "postd-tenant"
H_IDEMPOTENCY_KEY = "postd-idempotency-key"
H_DLQ_TOPIC = "postd-dlq-original-topic"
H_DLQ_PARTITION = "postd-dlq-original-partition"
H_DLQ_OFFSET = "postd-dlq-original-offset"
H_DLQ_ERROR = "postd-dlq-error"
H_DLQ_ERROR_CLASS = "postd-dlq-error-class"
H_DLQ_ATTEMPTS = "postd-dlq-attempts"
H_DLQ_CONSUMER_GROUP = "postd-dlq-consumer-group"

MESSAGES_HANDLED = Counter(
    "postd_kafka_messages_handled_total",
    "Messages handled by a consumer loop, by outcome.",
    ["topic", "group", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "postd_kafka_handler_seconds", "Time spent in a Kafka handler.", ["topic", "group"]
)
PRODUCED = Counter(
    "postd_kafka_messages_produced_total",
    "Messages produced, by topic and result.",
    ["topic", "result"],
)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    client_id: str = "postd"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    extra: Mapping[str, Any] = field(default_factory=dict)

    def base(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            # Tansu (dev) and real brokers alike: never rely on broker-side auto-create.
            "allow.auto.create.topics": False,
            **self.extra,
        }


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 6
    config: Mapping[str, str] = field(default_factory=dict)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def ensure_topics(
    settings: KafkaSettings,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = -1,
    timeout: float = 15.0,
) -> list[str]:
    """Create missing topics (each with its ``.dlq`` twin); returns those created.

    ``replication_factor=-1`` takes the broker's default, so a service that starts
    before the operator-managed topics exist does not pin them to one replica.

    Blocks; call it from a thread in async code. Raises ``KafkaException`` when
    the broker cannot be reached within ``timeout``.
    """
    admin = AdminClient({"bootstrap.servers": settings.bootstrap, "client.id": settings.client_id})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted: dict[str, TopicSpec] = {}
    for spec in specs:
        wanted[spec.name] = spec
        dlq = dlq_topic(spec.name)
        if not spec.name.endswith(".dlq"):
            wanted.setdefault(dlq, TopicSpec(dlq, partitions=1))
    missing = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=replication_factor,
            config=dict(s.config),
        )
        for name, s in wanted.items()
        if name not in existing
    ]
    created: list[str] = []
    if not missing:
        return created
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
    _wait_for_topics(admin, [t.topic for t in missing], timeout)
    return created


def _wait_for_topics(admin: AdminClient, names: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        if all(n in topics and topics[n].partitions for n in names):
            return
        time.sleep(0.05)
    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"topics not visible: {names}"))


def broker_reachable(settings: KafkaSettings, timeout: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout`` (blocks)."""
    try:
        AdminClient({"bootstrap.servers": settings.bootstrap}).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


# --------------------------------------------------------------------------- headers


def message_headers(
    message: ProtoMessage,
    *,
    tenant_id: str = "",
    idempotency_key: str = "",
    schema_version: int = 1,
    extra: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """Standard headers for ``message``, with the current trace context injected."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    headers = [
        (H_TYPE, message.DESCRIPTOR.full_name.encode()),
        (H_SCHEMA_VERSION, str(schema_version).encode()),
    ]
    if tenant_id:
        headers.append((H_TENANT, tenant_id.encode()))
    if idempotency_key:
        headers.append((H_IDEMPOTENCY_KEY, idempotency_key.encode()))
    for k, v in {**carrier, **(extra or {})}.items():
        headers.append((k, v.encode()))
    return headers


def headers_dict(
    raw: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, str]:
    items = raw.items() if isinstance(raw, Mapping) else (raw or ())
    out: dict[str, str] = {}
    for k, v in items:
        out[k] = v.decode(errors="replace") if isinstance(v, bytes) else (v or "")
    return out


# --------------------------------------------------------------------------- producer


class EventProducer:
    """Idempotent producer (acks=all) with an async ``produce``.

    A background thread serves delivery callbacks, so the event loop never blocks
    on librdkafka; each ``produce`` resolves when the broker acknowledged the
    message, or raises ``KafkaException`` when delivery failed for good.

    A broker can come back without its data (Tansu keeps topics in memory; any
    broker can be replaced): an idempotent producer then holds sequence numbers the
    broker no longer knows and times out on every message from then on. So a
    librdkafka client that lost every broker, hit a fatal error or failed a delivery
    is retired (what it still holds is polled until delivered or expired) and the
    next message goes through a fresh one; the caller retries what failed, as an
    outbox relay does.
    """

    def __init__(
        self, settings: KafkaSettings, *, linger_ms: int = 5, message_timeout_ms: int = 30000
    ) -> None:
        config = {
            **settings.base(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "message.timeout.ms": message_timeout_ms,
        }
        config.pop("allow.auto.create.topics", None)
        self._config = config
        self._generation = 0
        self._producer = self._client(0)
        self._renew = False
        self._retired: list[Any] = []
        self._swap = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)
            for old in list(self._retired):
                old.poll(0)
                if len(old) == 0:  # nothing left in flight: let it go
                    with self._swap:
                        self._retired.remove(old)
                    _release(old)

    def _client(self, generation: int) -> Any:
        def on_error(error: KafkaError) -> None:
            # Every broker gone (it may come back empty) or a fatal state: the next
            # message takes a fresh client. Passing network errors are not enough.
            if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN:
                self._failed(generation)

        return Producer({**self._config, "error_cb": on_error})

    def _failed(self, generation: int) -> None:
        """Client ``generation`` failed: lost its brokers, a delivery, or for good."""
        with self._swap:
            if generation == self._generation:
                self._renew = True

    def _current(self) -> tuple[Any, int]:
        """The client to produce with, replaced first when the last one failed."""
        with self._swap:
            if self._renew:
                self._retired.append(self._producer)
                self._generation += 1
                self._producer = self._client(self._generation)
                self._renew = False
                log.warning("producer renewed after a failed delivery", client=self._generation)
            return self._producer, self._generation

    async def produce(
        self,
        topic: str,
        value: bytes | ProtoMessage,
        *,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> tuple[int, int]:
        """Produce one message and wait for its acknowledgement; returns (partition, offset)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                PRODUCED.labels(topic, "error").inc()
                loop.call_soon_threadsafe(_set_exc, future, KafkaException(err))
            else:
                PRODUCED.labels(topic, "ok").inc()
                loop.call_soon_threadsafe(_set_result, future, (msg.partition(), msg.offset()))

        self._enqueue(topic, value, key, headers, delivered)
        return await future

    async def produce_many(
        self,
        items: Iterable[
            tuple[str, bytes | ProtoMessage, str | bytes | None, Sequence[tuple[str, bytes]] | None]
        ],
    ) -> None:
        """Produce a batch and wait until every message is acknowledged; raises
        ``KafkaException`` (the first delivery error) when any was not.

        One future for the whole batch: the delivery callbacks count down in the
        poll thread and wake the event loop once, not once per message.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        lock = threading.Lock()
        errors: list[KafkaError] = []
        state = {"left": 0, "sealed": False}

        def settle() -> None:
            if errors:
                _set_exc(future, KafkaException(errors[0]))
            else:
                _set_result(future, None)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            PRODUCED.labels(msg.topic() or "", "error" if err is not None else "ok").inc()
            with lock:
                if err is not None:
                    errors.append(err)
                state["left"] -= 1
                done = state["sealed"] and state["left"] == 0
            if done:
                loop.call_soon_threadsafe(settle)

        for topic, value, key, headers in items:
            with lock:
                state["left"] += 1
            self._enqueue(topic, value, key, headers, delivered)
        with lock:
            state["sealed"] = True
            done = state["left"] == 0
        if done:
            settle()
        await future

    def _enqueue(
        self,
        topic: str,
        value: bytes | ProtoMessage,
        key: str | bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        callback: Callable[[KafkaError | None, Message], None],
    ) -> None:
        payload = value if isinstance(value, bytes) else value.SerializeToString()
        producer, generation = self._current()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._failed(generation)
            callback(err, msg)

        while True:
            try:
                producer.produce(
                    topic, payload, key=key, headers=list(headers or ()), on_delivery=delivered
                )
                return
            except BufferError:
                # Local queue full: let the poll thread drain it.
                producer.poll(0.01)
            except KafkaException as exc:
                # A fatal error (the idempotent state is broken for good): this
                # client takes nothing more; the message goes through a fresh one.
                error = exc.args[0] if exc.args else None
                if not (
                    isinstance(error, KafkaError)
                    and (error.fatal() or error.code() == KafkaError._FATAL)
                ):
                    raise
                self._failed(generation)
                producer, generation = self._current()

    async def flush(self, timeout: float = 10.0) -> int:
        return int(await asyncio.to_thread(self._producer.flush, timeout))

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then release the client. Idempotent."""
        if self._stopping.is_set():
            return
        remaining = await self.flush(timeout)
        if remaining:
            log.warning("producer closed with undelivered messages", remaining=remaining)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, 2.0)
        # Release librdkafka's handles now (their threads would otherwise keep
        # reconnecting to a broker that is gone until the objects are collected).
        for client in [self._producer, *self._retired]:
            await asyncio.to_thread(_release, client)
        self._retired.clear()


def _release(client: Any) -> None:
    """Close a librdkafka client at once: what it still holds is purged first (their
    callbacks fire as failures), since close() would otherwise wait for each message
    to expire."""
    with contextlib.suppress(KafkaException, RuntimeError):
        if len(client):
            client.purge()
            client.poll(0)
        close = getattr(client, "close", None)
        if close is not None:
            close()


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exc(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# --------------------------------------------------------------------------- consumer


class InvalidMessage(Exception):
    """Raised by a handler for a message that can never succeed: it goes straight
    to the DLQ instead of being retried."""


class DlqLimitExceeded(Exception):
    """Too many messages went to the DLQ in a short window: the consumer stops so a
    bad deploy does not pour the whole topic into the DLQ."""


@dataclass(frozen=True)
class Envelope(Generic[M]):
    """One decoded message and where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: M
    headers: Mapping[str, str]
    timestamp_ms: int

    @property
    def tenant_id(self) -> str:
        return self.headers.get(H_TENANT, "")

    @property
    def idempotency_key(self) -> str:
        return self.headers.get(H_IDEMPOTENCY_KEY, "")


Handler = Callable[[Envelope[M]], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 10.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** (attempt - 1))
        return float(base / 2 + random.uniform(0, base / 2))


@dataclass(frozen=True)
class DlqLimit:
    """At most ``max_messages`` DLQ'd within ``window_seconds``."""

    max_messages: int = 100
    window_seconds: float = 60.0


class ConsumerLoop(Generic[M]):
    """Poll → decode → handle → (retry | DLQ) → store offsets, until stopped.

    Messages of one batch run concurrently across partition keys and in order
    within a key, bounded by ``concurrency``; offsets are stored after the whole
    batch is done and committed by librdkafka (and synchronously on shutdown).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Sequence[str],
        group_id: str,
        message_type: type[M],
        handler: Handler[M],
        dlq_producer: EventProducer,
        retry: RetryPolicy | None = None,
        dlq_limit: DlqLimit | None = None,
        batch_size: int = 100,
        concurrency: int = 32,
        auto_offset_reset: str = "earliest",
    ) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._group = group_id
        self._type = message_type
        self._handler = handler
        self._dlq = dlq_producer
        self._retry = retry or RetryPolicy()
        self._dlq_limit = dlq_limit or DlqLimit()
        self._batch_size = batch_size
        self._semaphore = asyncio.Semaphore(concurrency)
        self._dlq_times: list[float] = []
        self._consumer = Consumer(
            {
                **settings.base(),
                "group.id": group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.offset.reset": auto_offset_reset,
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        self._assigned = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def assigned(self) -> asyncio.Event:
        """Set once the group has given this consumer at least one partition."""
        return self._assigned

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and self._loop is not None:
            self._loop.call_soon_threadsafe(self._assigned.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit, close."""
        self._loop = asyncio.get_running_loop()
        self._consumer.subscribe(self._topics, on_assign=self._on_assign)
        log.info("consumer started", topics=self._topics, group=self._group)
        try:
            while not stop.is_set():
                batch = await asyncio.to_thread(self._fetch)
                if batch:
                    await self._handle_batch(batch)
        finally:
            await asyncio.to_thread(self._close)

    def _fetch(self, wait: float = 0.25) -> list[Message]:
        """What is ready now, up to a batch; else wait up to ``wait`` seconds for the
        first message and take what came with it (blocks: runs in a thread).

        ``consume(n, t)`` returns only when it has n messages or t has passed, so a
        lone message would sit for the whole timeout before its handler ran.
        """
        ready: list[Message] = self._consumer.consume(self._batch_size, 0)
        if ready:
            return ready
        first: list[Message] = self._consumer.consume(1, wait)
        if not first or self._batch_size == 1:
            return first
        rest: list[Message] = self._consumer.consume(self._batch_size - 1, 0)
        return first + rest

    def _close(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET):
                log.warning("final offset commit failed", error=str(exc))
        self._consumer.close()
        log.info("consumer stopped", topics=self._topics, group=self._group)

    async def _handle_batch(self, batch: list[Message]) -> None:
        lanes: dict[tuple[str, int, bytes | None], list[Message]] = defaultdict(list)
        highest: dict[tuple[str, int], int] = {}
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", error=str(err))
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None
            assert partition is not None
            assert offset is not None
            key = msg.key()
            lanes[(topic, partition, key if isinstance(key, bytes) else None)].append(msg)
            highest[(topic, partition)] = max(highest.get((topic, partition), -1), offset)
        await asyncio.gather(*(self._run_lane(msgs) for msgs in lanes.values()))
        if highest:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]
            )

    async def _run_lane(self, messages: list[Message]) -> None:
        async with self._semaphore:
            for msg in messages:
                await self._process(msg)

    async def _process(self, msg: Message) -> None:
        topic = msg.topic() or ""
        headers = headers_dict(msg.headers())
        parent = propagate.extract(headers)
        token = otel_context.attach(parent)
        try:
            with tracer.start_as_current_span(
                f"{topic} process",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": topic,
                    "messaging.kafka.consumer.group": self._group,
                    "messaging.kafka.message.offset": msg.offset() or 0,
                    "postd.tenant_id": headers.get(H_TENANT, ""),
                },
            ) as span:
                await self._process_in_span(msg, topic, headers, span)
        finally:
            otel_context.detach(token)

    async def _process_in_span(
        self, msg: Message, topic: str, headers: dict[str, str], span: trace.Span
    ) -> None:
        try:
            envelope = self._decode(msg, headers)
        except InvalidMessage as exc:
            await self._dead_letter(msg, headers, exc, attempts=0)
            span.set_status(Status(StatusCode.ERROR, "invalid message"))
            return
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                await self._handler(envelope)
            except InvalidMessage as exc:
                await self._dead_letter(msg, headers, exc, attempts=attempt)
                span.set_status(Status(StatusCode.ERROR, "invalid message"))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried
                if attempt >= self._retry.max_attempts:
                    await self._dead_letter(msg, headers, exc, attempts=attempt)
                    span.set_status(Status(StatusCode.ERROR, "retries exhausted"))
                    return
                delay = self._retry.delay(attempt)
                MESSAGES_HANDLED.labels(topic, self._group, "retried").inc()
                log.warning(
                    "handler failed; retrying",
                    topic=topic,
                    offset=msg.offset(),
                    attempt=attempt,
                    retry_in=round(delay, 3),
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(delay)
                continue
            finally:
                HANDLER_SECONDS.labels(topic, self._group).observe(time.perf_counter() - started)
            MESSAGES_HANDLED.labels(topic, self._group, "ok").inc()
            return

    def _decode(self, msg: Message, headers: dict[str, str]) -> Envelope[M]:
        expected = self._type.DESCRIPTOR.full_name
        declared = headers.get(H_TYPE)
        if declared and declared != expected:
            raise InvalidMessage(f"message type {declared!r} where {expected!r} was expected")
        value = msg.value()
        if value is None:
            raise InvalidMessage("message has no value")
        decoded = self._type()
        try:
            decoded.ParseFromString(value if isinstance(value, bytes) else value.encode())
        except DecodeError as exc:
            raise InvalidMessage(f"cannot decode {expected}: {exc}") from exc
        key = msg.key()
        _, timestamp = msg.timestamp()
        return Envelope(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.decode(errors="replace") if isinstance(key, bytes) else key,
            value=decoded,
            headers=headers,
            timestamp_ms=timestamp,
        )

    async def _dead_letter(
        self, msg: Message, headers: dict[str, str], exc: BaseException, *, attempts: int
    ) -> None:
        now = time.monotonic()
        window = self._dlq_limit.window_seconds
        self._dlq_times = [t for t in self._dlq_times if now - t < window] + [now]
        if len(self._dlq_times) > self._dlq_limit.max_messages:
            raise DlqLimitExceeded(
                f"more than {self._dlq_limit.max_messages} messages dead-lettered "
                f"within {window:.0f}s on {self._topics}; stopping"
            )
        topic = msg.topic() or ""
        error = redact_text(f"{exc}")[:1000]
        out_headers = [(k, v.encode()) for k, v in headers.items()] + [
            (H_DLQ_TOPIC, topic.encode()),
            (H_DLQ_PARTITION, str(msg.partition()).encode()),
            (H_DLQ_OFFSET, str(msg.offset()).encode()),
            (H_DLQ_ERROR, error.encode()),
            (H_DLQ_ERROR_CLASS, type(exc).__name__.encode()),
            (H_DLQ_ATTEMPTS, str(attempts).encode()),
            (H_DLQ_CONSUMER_GROUP, self._group.encode()),
        ]
        await self._dlq.produce(
            dlq_topic(topic), msg.value() or b"", key=msg.key(), headers=out_headers
        )
        MESSAGES_HANDLED.labels(topic, self._group, "dead_lettered").inc()
        log.error(
            "message dead-lettered",
            topic=topic,
            partition=msg.partition(),
            offset=msg.offset(),
            error_class=type(exc).__name__,
            error=error,
            attempts=attempts,
        )


async def run_consumers(loops: Sequence[ConsumerLoop[Any]], stop: asyncio.Event) -> None:
    """Run several loops; if one fails, stop the others and re-raise."""
    tasks = [asyncio.create_task(loop.run(stop)) for loop in loops]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
