"""Wiring: adapters to the domain, into the parts run_service serves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from postd.events.v1 import connection_event_pb2, publish_result_pb2
from postd.webhook_router.v1 import webhook_router_pb2_grpc
from postd_common import topics
from postd_common.bootstrap import Runtime, ServiceParts, ServiceSpec
from postd_common.kafka import ConsumerLoop
from postd_webhook_router.adapters.connectors import ConnectorsAccountResolver
from postd_webhook_router.adapters.http_sender import (
    HttpDeliverySender,
    SystemAddressResolver,
    public_session,
)
from postd_webhook_router.adapters.jwks import HttpJwks
from postd_webhook_router.adapters.postgres import GroupCommit, PostgresStore
from postd_webhook_router.adapters.vault import GrpcSecretVault
from postd_webhook_router.config import SERVICE, Settings
from postd_webhook_router.consumers import ConnectionEventHandler, PublishResultHandler
from postd_webhook_router.domain.ingest import IngestPolicy, IngestService
from postd_webhook_router.domain.outbound import (
    DeliveryWorker,
    EndpointService,
    OutboundEvents,
    OutboundPolicy,
    SigningKeys,
)
from postd_webhook_router.domain.processing import EventProcessor, Handoff, ProcessingPolicy
from postd_webhook_router.domain.routing import CachedResolver
from postd_webhook_router.domain.verifiers import PlatformSecrets, build_verifiers
from postd_webhook_router.ports import AccountResolver, AddressResolver, OutboxMessage
from postd_webhook_router.servicer import POLICY, SERVICE_NAME, WebhookRouterServicer
from postd_webhook_router.workers import Wakeup, worker

SPEC = ServiceSpec(
    name=SERVICE,
    schema="webhooks",
    migrations=Path(__file__).parent / "migrations",
    # No session state on pooled connections (no SET, LISTEN or session locks): skip
    # the reset round trip on every release.
    pool_session_reset=False,
    topics=tuple(
        topics.spec(name)
        for name in (
            topics.WEBHOOK_EVENTS,
            topics.WEBHOOK_DLQ,
            topics.ALERTS,
            topics.PUBLISH_RESULTS,
            topics.CONNECTION_EVENTS,
        )
    ),
)

RELAY_BATCH = 500


@dataclass(frozen=True)
class TopicNames:
    webhook_events: str = topics.WEBHOOK_EVENTS
    webhook_dlq: str = topics.WEBHOOK_DLQ
    alerts: str = topics.ALERTS
    publish_results: str = topics.PUBLISH_RESULTS
    connection_events: str = topics.CONNECTION_EVENTS


@dataclass
class Overrides:
    """Ports a test may replace (fakes only in unit tests; see tests/)."""

    resolver: AccountResolver | None = None
    addresses: AddressResolver | None = None
    topics: TopicNames = field(default_factory=TopicNames)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def build(
    runtime: Runtime, settings: Settings, overrides: Overrides | None = None
) -> ServiceParts:
    """The parts of ``settings.role``: "all" (API and background work in one process,
    the default), "api" (inbound and the API: verify and store only, so that loop
    answers webhooks and nothing else) or "worker" (processing, outbox relay,
    outbound deliveries and the Kafka consumers)."""
    over = overrides or Overrides()
    names = over.topics
    inbound = settings.inbound
    out = settings.outbound
    serves_api = settings.role in ("all", "api")
    works = settings.role in ("all", "worker")
    store = PostgresStore(
        runtime.require_pool(),
        GroupCommit(inbound.commit_batch_rows, inbound.commit_concurrency),
    )
    producer = runtime.require_producer()

    jwks_session = aiohttp.ClientSession()
    delivery_session = public_session(out.allow_loopback, out.request_timeout_seconds)

    verifiers = build_verifiers(
        PlatformSecrets(
            client_secrets=inbound.client_secrets,
            slack_signing_secrets=inbound.slack_signing_secrets,
            meta_verify_token=inbound.meta_verify_token,
            standard_webhooks_secrets=inbound.standard_webhooks_secrets,
            google_audience=inbound.google_audience,
            google_service_account=inbound.google_service_account,
            tolerance_seconds=inbound.tolerance_seconds,
        ),
        HttpJwks(jwks_session, inbound.google_jwks_url, inbound.jwks_ttl_seconds),
    )
    process_wake, relay_wake, delivery_wake = Wakeup(), Wakeup(), Wakeup()
    proc = settings.processing
    processing_policy = ProcessingPolicy(
        batch_size=proc.batch_size,
        max_attempts=proc.max_attempts,
        retry_base_seconds=proc.retry_base_seconds,
        events_topic=names.webhook_events,
        dlq_topic=names.webhook_dlq,
    )
    # Ingest and processing in one process ("all"): accepted deliveries go straight
    # to the processor, which need not claim them back from PostgreSQL.
    handoff = (
        Handoff(processing_policy.lease_seconds, proc.batch_size * 4, clock=utcnow)
        if works and serves_api
        else None
    )
    ingest = IngestService(
        verifiers,
        store,
        IngestPolicy(inbound.max_body_bytes, inbound.dedupe_window_seconds),
        clock=utcnow,
        # In "api" the worker is another process: it finds new rows by polling.
        on_accepted=process_wake if works else lambda: None,
        handoff=handoff,
    )
    resolver = CachedResolver(
        over.resolver
        or ConnectorsAccountResolver(runtime.channel("connectors", settings.connectors_addr)),
        settings.processing.resolve_cache_seconds,
    )
    processor = EventProcessor(store, resolver, processing_policy, clock=utcnow, handoff=handoff)

    async def process_once() -> int:
        claimed = await processor.run_once()
        if claimed:
            relay_wake()
        return claimed

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        await producer.produce_many((m.topic, m.value, m.key, m.headers) for m in messages)

    async def relay_once() -> int:
        return await store.relay_outbox(RELAY_BATCH, publish)

    vault = GrpcSecretVault(runtime.channel("vault", settings.vault_addr))
    policy = OutboundPolicy(
        allow_http=out.allow_http,
        allow_loopback=out.allow_loopback,
        retry_base_seconds=out.retry_base_seconds,
        retry_max_delay_seconds=out.retry_max_delay_seconds,
        retry_window_seconds=out.retry_window_seconds,
        disable_after_seconds=out.disable_after_seconds,
        disable_min_failures=out.disable_min_failures,
        alert_after_failures=out.alert_after_failures,
        secret_overlap_seconds=out.secret_overlap_seconds,
        alerts_topic=names.alerts,
    )
    endpoints = EndpointService(
        store, vault, over.addresses or SystemAddressResolver(), policy, clock=utcnow
    )
    outbound_events = OutboundEvents(store, clock=utcnow, on_enqueued=delivery_wake)
    deliveries = DeliveryWorker(
        store, SigningKeys(vault), HttpDeliverySender(delivery_session), policy, clock=utcnow
    )

    async def deliver_once() -> int:
        done = await deliveries.run_once()
        if done:
            relay_wake()  # alerts may be in the outbox
        return done

    servicer = WebhookRouterServicer(
        ingest,
        store,
        endpoints,
        events_topic=names.webhook_events,
        clock=utcnow,
        on_enqueued=relay_wake,
    )

    def register(server: grpc.aio.Server) -> None:
        webhook_router_pb2_grpc.add_WebhookRouterServiceServicer_to_server(servicer, server)

    kafka = settings.common.kafka
    consumers: list[ConsumerLoop[Any]] = [
        ConsumerLoop(
            kafka,
            topics=[names.publish_results],
            group_id=f"{settings.consumer_group}.publish-results",
            message_type=publish_result_pb2.PublishResult,
            handler=PublishResultHandler(outbound_events),
            dlq_producer=producer,
        ),
        ConsumerLoop(
            kafka,
            topics=[names.connection_events],
            group_id=f"{settings.consumer_group}.connection-events",
            message_type=connection_event_pb2.ConnectionEvent,
            handler=ConnectionEventHandler(outbound_events, resolver),
            dlq_producer=producer,
        ),
    ]

    async def close() -> None:
        await jwks_session.close()
        await delivery_session.close()
        if handoff is not None:
            # Stopped (API drained, workers done): what this process had accepted but
            # not yet processed goes to the next worker now, not after its lease.
            await handoff.release(store, utcnow())

    return ServiceParts(
        register=[register] if serves_api else [],
        service_names=[SERVICE_NAME] if serves_api else [],
        policy=POLICY,
        consumers=consumers if works else [],
        tasks=[
            worker(
                "processing",
                process_once,
                process_wake,
                proc.poll_seconds,
                full_batch=proc.batch_size,
                linger=proc.linger_seconds,
            ),
            worker("outbox relay", relay_once, relay_wake, proc.poll_seconds),
            worker("deliveries", deliver_once, delivery_wake, out.poll_seconds),
        ]
        if works
        else [],
        on_close=[close],
    )
