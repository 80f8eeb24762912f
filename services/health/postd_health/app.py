"""Wiring: adapters to the domain, into the parts run_service serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from postd.events.v1 import alert_pb2, connection_event_pb2, publish_result_pb2, webhook_event_pb2
from postd.health.v1 import health_pb2_grpc
from postd_common import topics
from postd_common.bootstrap import Runtime, ServiceParts, ServiceSpec
from postd_common.kafka import ConsumerLoop, EventProducer, message_headers
from postd_health.adapters.channels import HttpSlackSender, SmtpEmailSender
from postd_health.adapters.peers import GrpcConnectors, GrpcPublisher
from postd_health.adapters.postgres import LAG_BOUNDS_MS, LATENCY_BOUNDS_MS, PostgresStore
from postd_health.config import SERVICE, Settings
from postd_health.consumers import (
    AlertHandler,
    ConnectionEventHandler,
    PublishResultHandler,
    WebhookEventHandler,
)
from postd_health.domain.alerts import AlertEngine
from postd_health.domain.dashboard import Dashboard
from postd_health.domain.detectors import DetectorPolicy, Detectors
from postd_health.domain.model import Watch
from postd_health.domain.monitor import ConnectionMonitor, MonitorPolicy
from postd_health.domain.notify import (
    DeliveryPolicy,
    DeliveryWorker,
    GlobalRoutes,
    Notifier,
    RateLimit,
)
from postd_health.domain.playbook import ConnectionEvents, Playbook
from postd_health.domain.rules import PlatformRules
from postd_health.domain.status import TransientBudget
from postd_health.metrics import export_figures
from postd_health.ports import (
    Clock,
    Connectors,
    DeliveryFailed,
    EmailSender,
    OutboxMessage,
    Publisher,
    SlackSender,
)
from postd_health.servicer import POLICY, SERVICE_NAME, ConnectionHealthServicer
from postd_health.workers import Wakeup, loop

MIGRATIONS = Path(__file__).parent / "migrations"

SPEC = ServiceSpec(
    name=SERVICE,
    schema="health",
    migrations=MIGRATIONS,
    topics=tuple(
        topics.spec(name)
        for name in (
            topics.ALERTS,
            topics.PUBLISH_RESULTS,
            topics.WEBHOOK_EVENTS,
            topics.CONNECTION_EVENTS,
        )
    ),
)

RELAY_BATCH = 200
SNAPSHOT_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class TopicNames:
    alerts: str = topics.ALERTS
    publish_results: str = topics.PUBLISH_RESULTS
    webhook_events: str = topics.WEBHOOK_EVENTS
    connection_events: str = topics.CONNECTION_EVENTS


def utcnow() -> datetime:
    return datetime.now(UTC)


class NoEmail:
    """Email is not configured: deliveries by email fail for good (and say why)."""

    async def send(self, to: str, subject: str, body: str) -> None:
        raise DeliveryFailed("email is not configured (POSTD_SMTP_HOST)", permanent=True)


@dataclass
class Overrides:
    """What a test may replace: the clock, topic names, the schema, peers (fakes only
    in unit tests), and the worker's identity."""

    clock: Clock = utcnow
    topics: TopicNames = field(default_factory=TopicNames)
    schema: str = "health"
    connectors: Connectors | None = None
    publisher: Publisher | None = None
    email: EmailSender | None = None
    slack: SlackSender | None = None
    worker_id: str | None = None
    allow_http_slack: bool | None = None


@dataclass
class HealthService:
    """The domain objects of one running health service (tests drive them directly)."""

    store: PostgresStore
    monitor: ConnectionMonitor
    playbook: Playbook
    events: ConnectionEvents
    notifier: Notifier
    deliveries: DeliveryWorker
    detectors: Detectors
    alerts: AlertEngine
    servicer: ConnectionHealthServicer
    relay_once: Callable[[], Awaitable[int]]
    sync_once: Callable[[], Awaitable[int]]
    relay_wake: Wakeup
    delivery_wake: Wakeup


def assemble(
    runtime: Runtime, settings: Settings, over: Overrides, session: aiohttp.ClientSession
) -> HealthService:
    clock = over.clock
    store = PostgresStore(runtime.require_pool(), schema=over.schema)
    producer: EventProducer = runtime.require_producer()
    rules = PlatformRules.load()
    connectors: Connectors = over.connectors or GrpcConnectors(
        runtime.channel("connectors", settings.connectors_addr), public_url=settings.public_url
    )
    publisher: Publisher = over.publisher or GrpcPublisher(
        runtime.channel("publisher", settings.publisher_addr)
    )
    relay_wake = Wakeup()
    alerts = AlertEngine(store, topic=over.topics.alerts, clock=clock, on_outbox=relay_wake)

    def backfill_url(watch: Watch) -> str:
        return f"{settings.public_url}/v1/connections/{watch.connection_id}/missed-jobs"

    playbook = Playbook(connectors, publisher, alerts, rules, backfill_url=backfill_url)
    policy = MonitorPolicy(
        budget=TransientBudget(
            settings.transient_failures, timedelta(minutes=settings.transient_span_minutes)
        ),
        lease=timedelta(seconds=settings.lease_seconds),
        batch_size=settings.batch_size,
        refresh_alert_after=settings.refresh_alert_after,
    )
    if over.worker_id:
        policy = replace(policy, worker_id=over.worker_id)
    monitor = ConnectionMonitor(
        store,
        connectors,
        rules,
        alerts,
        policy=policy,
        clock=clock,
        reconnect_url=playbook.reconnect_url,
    )
    events = ConnectionEvents(store, store, connectors, rules, playbook, clock=clock)
    global_routes = GlobalRoutes(settings.global_emails, settings.global_slack_webhook_url.reveal())
    delivery_wake = Wakeup()
    notifier = Notifier(
        store, store, global_routes=global_routes, clock=clock, on_queued=delivery_wake
    )
    email: EmailSender = over.email or (
        SmtpEmailSender(
            settings.smtp.host,
            settings.smtp.port,
            settings.smtp.sender,
            username=settings.smtp.username,
            password=settings.smtp.password,
            starttls=settings.smtp.starttls,
        )
        if settings.smtp
        else NoEmail()
    )
    deliveries = DeliveryWorker(
        store,
        email,
        over.slack or HttpSlackSender(session),
        global_routes=global_routes,
        policy=DeliveryPolicy(
            email_limit=RateLimit(settings.email_per_hour, timedelta(hours=1)),
            slack_limit=RateLimit(settings.slack_per_hour, timedelta(hours=1)),
        ),
        clock=clock,
    )
    d = settings.detectors
    detectors = Detectors(
        store,
        alerts,
        rules,
        policy=DetectorPolicy(
            error_rate_threshold=d.error_rate_threshold,
            window=timedelta(minutes=d.error_rate_window_minutes),
            min_requests=d.error_rate_min_requests,
            outage_error_rate=d.outage_error_rate,
            outage_min_tenants=d.outage_min_tenants,
            outage_min_requests=d.outage_min_requests,
            queue_backlog=d.queue_backlog_threshold,
        ),
        clock=clock,
    )
    dashboard = Dashboard(store, latency_bounds=LATENCY_BOUNDS_MS, lag_bounds=LAG_BOUNDS_MS)
    servicer = ConnectionHealthServicer(
        store,
        monitor,
        playbook,
        dashboard,
        rules,
        clock=clock,
        allow_http_slack=settings.common.is_development
        if over.allow_http_slack is None
        else over.allow_http_slack,
    )

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        await producer.produce_many(
            (
                m.topic,
                m.value,
                m.key,
                message_headers(alert_pb2.Alert.FromString(m.value), tenant_id=m.tenant_id),
            )
            for m in messages
        )

    async def relay_once() -> int:
        return await store.relay_outbox(RELAY_BATCH, publish)

    async def sync_once() -> int:
        """Adopt connections expiring within the horizon that no event told us of."""
        horizon = clock() + timedelta(days=settings.sync_horizon_days)
        token, seen = "", 0
        while True:
            page, token = await connectors.list_expiring(horizon, token, 200)
            for info in page:
                if await store.get_watch(info.connection_id) is None:
                    await monitor.track(info)
                    seen += 1
            if not token:
                return seen

    return HealthService(
        store=store,
        monitor=monitor,
        playbook=playbook,
        events=events,
        notifier=notifier,
        deliveries=deliveries,
        detectors=detectors,
        alerts=alerts,
        servicer=servicer,
        relay_once=relay_once,
        sync_once=sync_once,
        relay_wake=relay_wake,
        delivery_wake=delivery_wake,
    )


def consumer_loops(
    svc: HealthService, settings: Settings, over: Overrides, producer: EventProducer
) -> list[ConsumerLoop[Any]]:
    """The four consumers: connection events, publish results, webhook events, alerts."""
    kafka = settings.common.kafka
    group = settings.consumer_group
    names = over.topics
    return [
        ConsumerLoop(
            kafka,
            topics=[names.connection_events],
            group_id=f"{group}.connection-events",
            message_type=connection_event_pb2.ConnectionEvent,
            handler=ConnectionEventHandler(svc.events),
            dlq_producer=producer,
        ),
        ConsumerLoop(
            kafka,
            topics=[names.publish_results],
            group_id=f"{group}.publish-results",
            message_type=publish_result_pb2.PublishResult,
            handler=PublishResultHandler(svc.store, svc.monitor, clock=over.clock),
            dlq_producer=producer,
        ),
        ConsumerLoop(
            kafka,
            topics=[names.webhook_events],
            group_id=f"{group}.webhook-events",
            message_type=webhook_event_pb2.WebhookEvent,
            handler=WebhookEventHandler(svc.store, svc.monitor, clock=over.clock),
            dlq_producer=producer,
        ),
        ConsumerLoop(
            kafka,
            topics=[names.alerts],
            group_id=f"{group}.alerts",
            message_type=alert_pb2.Alert,
            handler=AlertHandler(svc.notifier),
            dlq_producer=producer,
        ),
    ]


async def build(
    runtime: Runtime, settings: Settings, overrides: Overrides | None = None
) -> ServiceParts:
    over = overrides or Overrides()
    session = aiohttp.ClientSession()
    svc = assemble(runtime, settings, over, session)
    producer = runtime.require_producer()
    clock = over.clock

    def register(server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_ConnectionHealthServiceServicer_to_server(svc.servicer, server)

    consumers = consumer_loops(svc, settings, over, producer)

    async def detect_once() -> int:
        await svc.detectors.run_once()
        await export_figures(svc.store, clock())
        return 0

    async def snapshot_once() -> int:
        await svc.store.take_snapshots(clock(), SNAPSHOT_EVERY)
        await svc.store.prune(clock(), timedelta(days=settings.retention_days))
        return 0

    async def sync_once() -> int:
        await svc.sync_once()
        return 0

    async def close() -> None:
        await session.close()

    poll = settings.poll_seconds
    return ServiceParts(
        register=[register],
        service_names=[SERVICE_NAME],
        policy=POLICY,
        consumers=consumers,
        tasks=[
            loop("scheduler", svc.monitor.run_once, poll),
            loop("outbox relay", svc.relay_once, poll, svc.relay_wake),
            loop("deliveries", svc.deliveries.run_once, poll, svc.delivery_wake),
            loop("detectors", detect_once, settings.detectors.interval_seconds),
            loop("snapshots", snapshot_once, SNAPSHOT_EVERY.total_seconds()),
            loop("sync", sync_once, settings.sync_interval_seconds),
        ],
        on_close=[close],
    )
