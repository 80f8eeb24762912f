"""Kafka handlers: one decoded message each, translated into the domain's terms.

Every handler is idempotent: publish results count once per (job, attempt, outcome),
webhook events once per event id, connection events write history once per event id
and apply connectors' latest word, alerts notify once per (alert, state, severity).
"""

from __future__ import annotations

from datetime import UTC, datetime

from postd.events.v1 import alert_pb2, connection_event_pb2, publish_result_pb2, webhook_event_pb2
from postd_common.kafka import Envelope, InvalidMessage
from postd_common.logging import get_logger
from postd_health.adapters import protos
from postd_health.adapters.postgres import PostgresStore
from postd_health.domain.model import Category, Failure, Source, StatusChange
from postd_health.domain.monitor import ConnectionMonitor
from postd_health.domain.notify import Notifier
from postd_health.domain.playbook import ConnectionEvents
from postd_health.domain.status import Signal, SignalKind
from postd_health.ports import CallSample, Clock, PublishObservation

log = get_logger(__name__)

DEAUTHORIZED = "connection.deauthorized"
PERMISSIONS_CHANGED = "connection.permissions_changed"

_OUTCOMES = {
    publish_result_pb2.PUBLISH_OUTCOME_PUBLISHED: "published",
    publish_result_pb2.PUBLISH_OUTCOME_FAILED: "failed",
    publish_result_pb2.PUBLISH_OUTCOME_RETRY_SCHEDULED: "retry_scheduled",
    publish_result_pb2.PUBLISH_OUTCOME_DEAD_LETTERED: "dead_lettered",
    publish_result_pb2.PUBLISH_OUTCOME_CANCELLED: "cancelled",
}


class PublishResultHandler:
    """Rollups of every attempt, and the status machine's view of publish outcomes."""

    def __init__(self, store: PostgresStore, monitor: ConnectionMonitor, *, clock: Clock) -> None:
        self._store = store
        self._monitor = monitor
        self._clock = clock

    async def __call__(self, envelope: Envelope[publish_result_pb2.PublishResult]) -> None:
        r = envelope.value
        outcome = _OUTCOMES.get(r.outcome)
        if outcome is None or not r.job_id or not r.connection_id or not r.tenant_id:
            raise InvalidMessage("publish result without job, connection, tenant or outcome")
        at = protos.from_ts(r.finished_at, r.HasField("finished_at")) or self._clock()
        failure = protos.failure_from_proto(r.error) if r.HasField("error") else None
        if failure is None and outcome in ("failed", "retry_scheduled", "dead_lettered"):
            failure = Failure(Category.UNKNOWN, platform=r.platform)
        published = outcome == "published"
        sample = CallSample(
            at=at,
            tenant_id=r.tenant_id,
            platform=r.platform,
            source="publish",
            ok=published,
            failure=None if published else failure,
            latency=protos.from_duration(r.latency, r.HasField("latency")),
        )
        fresh = await self._store.record_publish(
            PublishObservation(
                job_id=r.job_id,
                attempt=r.attempt,
                outcome=outcome,
                sample=sample,
                connection_id=r.connection_id,
                due_at=protos.from_ts(r.due_at, r.HasField("due_at")),
            )
        )
        if not fresh or outcome == "cancelled":
            return
        if published:
            signal = Signal.success(Source.PUBLISH_RESULT, at)
        else:
            assert failure is not None
            signal = Signal.failed(Source.PUBLISH_RESULT, at, failure)
        await self._monitor.observe(r.tenant_id, r.connection_id, signal)


class WebhookEventHandler:
    """Deauthorizations and permission changes the platforms report."""

    def __init__(self, store: PostgresStore, monitor: ConnectionMonitor, *, clock: Clock) -> None:
        self._store = store
        self._monitor = monitor
        self._clock = clock

    async def __call__(self, envelope: Envelope[webhook_event_pb2.WebhookEvent]) -> None:
        event = envelope.value
        if event.type not in (DEAUTHORIZED, PERMISSIONS_CHANGED):
            return
        if not event.connection_id or not event.tenant_id:
            log.info("unrouted webhook event ignored", type=event.type, platform=event.platform)
            return
        if not event.event_id:
            raise InvalidMessage("webhook event without event_id")
        if await self._store.processed("webhook_events", event.event_id):
            return
        at = protos.from_ts(event.received_at, event.HasField("received_at")) or self._clock()
        kind = (
            SignalKind.DEAUTHORIZED
            if event.type == DEAUTHORIZED
            else SignalKind.PERMISSIONS_CHANGED
        )
        await self._monitor.observe(
            event.tenant_id, event.connection_id, Signal(kind, Source.WEBHOOK, at)
        )
        # Remembered after acting: a crash in between acts again on redelivery, which
        # the status machine and connectors' compare-and-swap make harmless.
        await self._store.first_time("webhook_events", event.event_id)


class ConnectionEventHandler:
    def __init__(self, events: ConnectionEvents) -> None:
        self._events = events

    async def __call__(self, envelope: Envelope[connection_event_pb2.ConnectionEvent]) -> None:
        e = envelope.value
        if not e.event_id or not e.connection_id or not e.tenant_id:
            raise InvalidMessage("connection event without event_id, connection or tenant")
        await self._events.handle(
            StatusChange(
                event_id=e.event_id,
                tenant_id=e.tenant_id,
                connection_id=e.connection_id,
                platform=e.platform,
                previous_status=protos.status_from_proto(e.previous_status),
                status=protos.status_from_proto(e.status),
                reason=e.reason,
                category=protos.category_from_proto(e.category) if e.category else None,
                source=e.source,
                occurred_at=protos.from_ts(e.occurred_at, e.HasField("occurred_at"))
                or datetime.now(UTC),
                account_name=e.account_name,
            )
        )


class AlertHandler:
    """Every alert on the topic (health's own, the webhook router's) reaches people."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def __call__(self, envelope: Envelope[alert_pb2.Alert]) -> None:
        alert = protos.alert_from_proto(envelope.value)
        if alert is None:
            raise InvalidMessage("alert without id or state")
        await self._notifier.handle(alert)
