"""Wiring: adapters to the domain, by role (api, dispatcher, worker)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postd.events.v1.analytics_job_pb2 import AnalyticsJob
from postd.events.v1.connection_event_pb2 import ConnectionEvent
from postd.events.v1.publish_job_pb2 import PublishJob
from postd_common.bootstrap import BackgroundTask, Runtime, ServiceParts, ServiceSpec
from postd_common.kafka import ConsumerLoop, TopicSpec, dlq_topic
from postd_common.topics import spec as topic_spec
from postd_publisher.adapters.analytics_store import AnalyticsTopics, PostgresAnalyticsStore
from postd_publisher.adapters.connectors import GrpcConnectorsClient
from postd_publisher.adapters.events import Topics
from postd_publisher.adapters.kafka import (
    KafkaAnalyticsQueue,
    KafkaJobQueue,
    KafkaOutlet,
    OutboxRelay,
)
from postd_publisher.adapters.postgres import PostgresJobStore
from postd_publisher.analytics_servicer import (
    ANALYTICS_SERVICE,
    AnalyticsServicer,
    register_analytics,
)
from postd_publisher.config import Settings
from postd_publisher.consumers import (
    analytics_job_handler,
    connection_event_handler,
    publish_job_handler,
)
from postd_publisher.domain.collector import AnalyticsCollector, AnalyticsDispatch
from postd_publisher.domain.dispatch import Dispatcher, Reconciler
from postd_publisher.domain.posts import PostService, utc_now
from postd_publisher.domain.quota import DEFAULT_CALL_RULES, QuotaBook
from postd_publisher.domain.reports import AnalyticsReports
from postd_publisher.domain.retry import RetryPolicy
from postd_publisher.domain.worker import PublishWorker, WorkerSettings
from postd_publisher.servicer import SERVICE, PublisherServicer, access_policy, register

MIGRATIONS = Path(__file__).parent / "migrations"


def topic_specs(topics: Topics) -> list[TopicSpec]:
    """The publisher's topics, with the partition counts of the registry."""
    return [
        TopicSpec(topics.jobs, topic_spec("publish.jobs").partitions),
        TopicSpec(topics.results, topic_spec("publish.results").partitions),
        TopicSpec(topics.dlq, topic_spec("publish.dlq").partitions),
        TopicSpec(topics.connection_events, topic_spec("connection.events").partitions),
        TopicSpec(topics.analytics_jobs, topic_spec("analytics.jobs").partitions),
    ]


def service_spec(settings: Settings) -> ServiceSpec:
    return ServiceSpec(
        name="publisher",
        schema=settings.schema,
        migrations=MIGRATIONS,
        topics=topic_specs(settings.topics),
        grpc="api" in settings.roles,
        # Only transaction-level locks and no SET/LISTEN: pooled connections keep no
        # session state, so releases skip the reset query (a round trip per use).
        pool_session_reset=False,
    )


@dataclass
class Publisher:
    """The assembled service, for ``build`` and for tests that drive parts of it."""

    store: PostgresJobStore
    posts: PostService
    dispatcher: Dispatcher
    reconciler: Reconciler
    worker: PublishWorker
    relay: OutboxRelay
    outlet: KafkaOutlet
    quotas: QuotaBook
    servicer: PublisherServicer
    analytics_store: PostgresAnalyticsStore
    collector: AnalyticsCollector
    analytics: AnalyticsServicer
    consumers: list[ConsumerLoop[Any]] = field(default_factory=list)
    tasks: list[BackgroundTask] = field(default_factory=list)


def assemble(runtime: Runtime, settings: Settings) -> Publisher:
    collection = settings.collection
    store = PostgresJobStore(
        runtime.require_pool(),
        topics=settings.topics,
        schema=settings.schema,
        analytics=collection.schedule if settings.analytics_enabled else None,
    )
    analytics_store = PostgresAnalyticsStore(
        runtime.require_pool(),
        topics=AnalyticsTopics(
            settings.topics.analytics_jobs, dlq_topic(settings.topics.analytics_jobs)
        ),
        schema=settings.schema,
    )
    connectors = GrpcConnectorsClient(
        runtime.channel("connectors", settings.connectors_addr),
        publish_timeout=settings.publish_timeout,
        call_timeout=settings.call_timeout,
    )
    outlet = KafkaOutlet(
        settings.common.kafka, topic_specs(settings.topics), send_timeout=settings.send_timeout
    )
    quotas = QuotaBook(
        overrides=settings.quota_overrides,
        calls=DEFAULT_CALL_RULES,
        call_overrides=settings.call_overrides,
    )
    dispatcher = Dispatcher(
        store,
        KafkaJobQueue(outlet, settings.topics.jobs),
        quotas=quotas,
        breaker=settings.breaker,
        settings=settings.dispatch,
        clock=utc_now,
        analytics=AnalyticsDispatch(
            analytics_store,
            KafkaAnalyticsQueue(outlet, settings.topics.analytics_jobs),
            quotas=quotas,
            settings=collection,
        )
        if settings.analytics_enabled
        else None,
    )
    posts = PostService(
        store,
        connectors,
        max_attempts=settings.max_attempts,
        wake_dispatcher=dispatcher.wake.set,
    )
    reconciler = Reconciler(
        store,
        connectors,
        quotas=quotas,
        settings=settings.dispatch,
        clock=utc_now,
        wake=dispatcher.wake.set,
        analytics=analytics_store if settings.analytics_enabled else None,
    )
    worker = PublishWorker(
        store,
        connectors,
        retry=RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds),
        breaker=settings.breaker,
        settings=WorkerSettings(
            worker_id=settings.worker_id,
            lease_seconds=settings.worker_lease_seconds,
            platform_concurrency=settings.platform_concurrency,
        ),
        clock=utc_now,
    )
    relay = OutboxRelay(store, outlet)
    collector = AnalyticsCollector(analytics_store, connectors, settings=collection, clock=utc_now)
    publisher = Publisher(
        store=store,
        posts=posts,
        dispatcher=dispatcher,
        reconciler=reconciler,
        worker=worker,
        relay=relay,
        outlet=outlet,
        quotas=quotas,
        servicer=PublisherServicer(posts, store),
        analytics_store=analytics_store,
        collector=collector,
        analytics=AnalyticsServicer(
            AnalyticsReports(analytics_store, utc_now, rules=settings.insight_rules)
        ),
    )
    producer = runtime.require_producer()
    kafka = settings.consumer_kafka
    if "worker" in settings.roles:
        publisher.consumers.append(
            ConsumerLoop(
                kafka,
                topics=[settings.topics.jobs],
                group_id=settings.worker_group,
                message_type=PublishJob,
                handler=publish_job_handler(worker),
                dlq_producer=producer,
                batch_size=settings.consumer_batch,
                concurrency=settings.consumer_concurrency,
            )
        )
    if "worker" in settings.roles and settings.analytics_enabled:
        publisher.consumers.append(
            ConsumerLoop(
                kafka,
                topics=[settings.topics.analytics_jobs],
                group_id=settings.analytics_group,
                message_type=AnalyticsJob,
                handler=analytics_job_handler(collector),
                dlq_producer=producer,
                concurrency=settings.analytics_concurrency,
            )
        )

    async def track(tenant_id: str, connection_id: str, platform: str) -> None:
        await analytics_store.track_connection(tenant_id, connection_id, platform, utc_now())

    if "dispatcher" in settings.roles:
        publisher.consumers.append(
            ConsumerLoop(
                kafka,
                topics=[settings.topics.connection_events],
                group_id=settings.events_group,
                message_type=ConnectionEvent,
                handler=connection_event_handler(
                    posts, track if settings.analytics_enabled else None
                ),
                dlq_producer=producer,
            )
        )
        publisher.tasks += [dispatcher.run, reconciler.run]
    publisher.tasks.append(relay.run)
    return publisher


async def build(runtime: Runtime, settings: Settings) -> ServiceParts:
    publisher = assemble(runtime, settings)
    on_close: list[Callable[[], Awaitable[None]]] = [publisher.outlet.close]
    if "api" not in settings.roles:
        return ServiceParts(consumers=publisher.consumers, tasks=publisher.tasks, on_close=on_close)
    return ServiceParts(
        register=[register(publisher.servicer), register_analytics(publisher.analytics)],
        service_names=[SERVICE, ANALYTICS_SERVICE],
        policy=access_policy(),
        consumers=publisher.consumers,
        tasks=publisher.tasks,
        on_close=on_close,
    )
