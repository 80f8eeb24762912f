"""After the answer: normalise, route, and put the events in the outbox.

A worker claims due stored deliveries (leased, so replicas share the work and a
crashed worker's claims come back), normalises each, routes it to tenant and
connection, and writes the normalised events and their ``webhook.events`` messages
in one transaction. A failure is retried with backoff; after ``max_attempts`` (or at
once for a body that can never be read) the delivery goes to ``webhook.dlq``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from postd.events.v1 import webhook_event_pb2
from postd.webhook_router.v1 import webhook_router_pb2
from postd_common.kafka import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR,
    H_DLQ_ERROR_CLASS,
    H_DLQ_TOPIC,
    message_headers,
)
from postd_common.logging import get_logger, redact_text
from postd_webhook_router import metrics
from postd_webhook_router.domain.model import NormalizedItem, PendingInbound, Route
from postd_webhook_router.domain.normalize import MalformedPayload, normalize
from postd_webhook_router.domain.routing import CachedResolver, routes_for
from postd_webhook_router.ports import (
    OutboxMessage,
    ProcessedInbound,
    StoreUnavailable,
    WebhookStore,
)

log = get_logger(__name__)

_EVENT_NAMESPACE = uuid.UUID("7d0c8f5e-2a51-4c1e-9a77-3c1f0e6b9b21")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ProcessingPolicy:
    batch_size: int
    max_attempts: int
    retry_base_seconds: float
    lease_seconds: float = 60.0
    events_topic: str = "webhook.events"
    dlq_topic: str = "webhook.dlq"


def normalized_event_id(raw_id: str, seq: int) -> str:
    """Stable per (stored delivery, position): the same on every replay."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{raw_id}:{seq}"))


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """``Timestamp.FromDatetime`` (a naive value is UTC), without its per-call checks
    and time tuple: two per event, the most of building one."""
    if value is None:
        return None
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000
    )


def event_message(record: Mapping[str, Any], topic: str) -> OutboxMessage:
    """The ``webhook.events`` message for a normalised event record."""
    payload = struct_pb2.Struct()
    # A JSON round trip makes every value Struct-compatible (ints become numbers).
    payload.update(json.loads(json.dumps(record["payload"], default=str)))
    event = webhook_event_pb2.WebhookEvent(
        event_id=record["event_id"],
        platform=record["platform"],
        type=record["type"],
        tenant_id=record["tenant_id"],
        connection_id=record["connection_id"],
        external_account_id=record["external_account_id"],
        occurred_at=_timestamp(record.get("occurred_at")),
        received_at=_timestamp(record["received_at"]),
        payload=payload,
        raw_event_ref=record["raw_event_id"],
        platform_event_id=record["platform_event_id"],
        replay_count=record.get("replay_count", 0),
    )
    key = record["connection_id"] or (
        f"unrouted:{record['platform']}:{record['external_account_id']}"
    )
    headers = message_headers(
        event, tenant_id=record["tenant_id"], idempotency_key=record["event_id"]
    )
    return OutboxMessage(topic, key, event.SerializeToString(), headers)


class Handoff:
    """Deliveries this process stored and processes itself, without claiming them.

    When ingest and processing share a process, a delivery is stored already leased
    to it (due only ``lease_seconds`` later) and handed over in memory once its row is
    committed, so the processor need not claim it back from PostgreSQL (an update of
    the row and a read of its body). A graceful stop makes what still waits due at
    once (:meth:`release`); if the process dies first, the lease runs out and any
    worker claims the row, as a crashed worker's claims come back. At most
    ``limit`` deliveries wait here; beyond that they are stored due at once and
    claimed as usual.
    """

    def __init__(self, lease_seconds: float, limit: int, *, clock: Callable[[], datetime]) -> None:
        self._lease = timedelta(seconds=lease_seconds)
        self._limit = limit
        self._clock = clock
        self._waiting: list[PendingInbound] = []

    def due_at(self) -> datetime | None:
        """When a delivery stored now and handed over is due; None: no room here."""
        if len(self._waiting) >= self._limit:
            return None
        return self._clock() + self._lease

    def put(self, item: PendingInbound) -> None:
        """A delivery stored with ``due_at()`` (call only after its commit)."""
        self._waiting.append(item)

    def take(self, limit: int) -> list[PendingInbound]:
        taken, self._waiting = self._waiting[:limit], self._waiting[limit:]
        return taken

    async def release(self, store: WebhookStore, now: datetime) -> int:
        """On a graceful stop: what still waits here is made due at once in the store,
        so the next worker takes it now rather than when its lease runs out. Returns
        how many; with the store unreachable, none (their leases run out instead)."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return 0
        try:
            await store.release_pending([item.id for item in waiting], now)
        except StoreUnavailable as exc:
            log.warning(
                "handed-off deliveries not released: their leases run out instead",
                count=len(waiting),
                error=str(exc),
            )
            return 0
        log.info("handed-off deliveries released", count=len(waiting))
        return len(waiting)


class EventProcessor:
    def __init__(
        self,
        store: WebhookStore,
        resolver: CachedResolver,
        policy: ProcessingPolicy,
        *,
        clock: Callable[[], datetime],
        handoff: Handoff | None = None,
    ) -> None:
        self._store = store
        self._resolver = resolver
        self._policy = policy
        self._clock = clock
        self._handoff = handoff

    async def run_once(self) -> int:
        """Process one batch: deliveries handed over by this process's ingest first,
        then due ones claimed from the store; returns how many were taken."""
        now = self._clock()
        size = self._policy.batch_size
        pending = self._handoff.take(size) if self._handoff is not None else []
        if len(pending) < size:
            pending += await self._store.claim_pending(
                size - len(pending), now, self._policy.lease_seconds
            )
        done: list[ProcessedInbound] = []
        for item in pending:
            try:
                done.append(await self._process(item))
            except MalformedPayload as exc:
                await self._failed(item, exc, retryable=False)
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then DLQ'd
                await self._failed(item, exc, retryable=True)
        if done:
            await self._store.complete(done)
            metrics.PROCESSED.labels("emitted").inc(len(done))
        return len(pending)

    async def _process(self, item: PendingInbound) -> ProcessedInbound:
        items = normalize(item.platform, item.body, item.headers, item.source)
        routed: list[tuple[NormalizedItem, Route | None]] = []
        all_routes: list[Route] = []
        for normalized in items:
            routes = await routes_for(
                self._resolver, normalized.platform, normalized.external_account_id, item.source
            )
            all_routes.extend(r for r in routes if r not in all_routes)
            if routes:
                routed.extend((normalized, r) for r in routes)
            else:
                routed.append((normalized, None))
        records: list[dict[str, Any]] = []
        for seq, (normalized, route) in enumerate(routed):
            records.append(
                {
                    "event_id": normalized_event_id(item.id, seq),
                    "raw_event_id": item.id,
                    "seq": seq,
                    "tenant_id": route.tenant_id if route else "",
                    "connection_id": route.connection_id if route else "",
                    "platform": normalized.platform,
                    "type": normalized.type,
                    "external_account_id": normalized.external_account_id,
                    "occurred_at": normalized.occurred_at,
                    "received_at": item.received_at,
                    "payload": dict(normalized.payload),
                    "platform_event_id": normalized.platform_event_id or item.platform_event_id,
                }
            )
        messages = [event_message(r, self._policy.events_topic) for r in records]
        return ProcessedInbound(
            raw_id=item.id,
            types=sorted({r["type"] for r in records}),
            external_account_id=items[0].external_account_id,
            routes=all_routes,
            normalized=records,
            messages=messages,
        )

    async def _failed(self, item: PendingInbound, exc: BaseException, *, retryable: bool) -> None:
        error = redact_text(f"{type(exc).__name__}: {exc}")[:500]
        attempts = item.attempts + 1
        if retryable and attempts < self._policy.max_attempts:
            delay = self._policy.retry_base_seconds * 2 ** (attempts - 1)
            delay = delay / 2 + random.uniform(0, delay / 2)
            next_at = self._clock() + timedelta(seconds=delay)
            await self._store.fail(item.id, error, next_at, None)
            metrics.PROCESSED.labels("retried").inc()
            log.warning(
                "webhook processing failed; retrying",
                event_id=item.id,
                error=error,
                attempt=attempts,
            )
            return
        record = webhook_router_pb2.WebhookEvent(
            id=item.id,
            platform=item.platform,
            verdict=webhook_router_pb2.WEBHOOK_VERDICT_ACCEPTED,
            platform_event_id=item.platform_event_id,
            processing_state=webhook_router_pb2.PROCESSING_STATE_DEAD_LETTERED,
            received_at=_timestamp(item.received_at),
            body_size=len(item.body),
        )
        headers = [
            *message_headers(record, tenant_id=item.source.tenant_id if item.source else ""),
            (H_DLQ_TOPIC, self._policy.events_topic.encode()),
            (H_DLQ_ERROR, error.encode()),
            (H_DLQ_ERROR_CLASS, type(exc).__name__.encode()),
            (H_DLQ_ATTEMPTS, str(attempts).encode()),
        ]
        dead = OutboxMessage(self._policy.dlq_topic, item.id, record.SerializeToString(), headers)
        await self._store.fail(item.id, error, None, dead)
        metrics.PROCESSED.labels("dead_lettered").inc()
        log.error(
            "webhook processing dead-lettered", event_id=item.id, error=error, attempts=attempts
        )


def replay_messages(records: Sequence[Mapping[str, Any]], topic: str) -> list[OutboxMessage]:
    return [event_message(r, topic) for r in records]
