"""Kafka handlers: one decoded message each; the loop around them is libs/common's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from postd.common.v1.common_pb2 import ConnectionStatus, ErrorCategory
from postd.events.v1.analytics_job_pb2 import AnalyticsJob
from postd.events.v1.connection_event_pb2 import ConnectionEvent
from postd.events.v1.publish_job_pb2 import PublishJob
from postd_common.kafka import Envelope, Handler, InvalidMessage
from postd_publisher.domain.analytics import ACCOUNT, POST
from postd_publisher.domain.collector import AnalyticsCollector, RoundDelivery
from postd_publisher.domain.posts import PostService
from postd_publisher.domain.worker import Delivery, PublishWorker


def publish_job_handler(worker: PublishWorker) -> Handler[PublishJob]:
    """``publish.jobs`` → one attempt. Idempotent: the attempt is claimed in
    PostgreSQL first, so a duplicate delivery finds nothing to claim."""

    async def handle(envelope: Envelope[PublishJob]) -> None:
        job = envelope.value
        if not job.job_id or not job.tenant_id or job.attempt < 1:
            raise InvalidMessage("PublishJob without job_id, tenant_id or attempt")
        await worker.handle(Delivery(job.tenant_id, job.job_id, job.attempt))

    return handle


Track = Callable[[str, str, str], Awaitable[None]]
# Statuses under which an account's own figures can be read.
READABLE = ("HEALTHY", "EXPIRING_SOON")


def analytics_job_handler(collector: AnalyticsCollector) -> Handler[AnalyticsJob]:
    """``analytics.jobs`` → one collection round. Idempotent: the round's tasks are
    claimed in PostgreSQL by its token first, so a duplicate claims nothing."""

    async def handle(envelope: Envelope[AnalyticsJob]) -> None:
        job = envelope.value
        if not job.tenant_id or not job.task_ids or not job.dispatch_token:
            raise InvalidMessage("AnalyticsJob without tenant_id, task_ids or dispatch_token")
        if job.kind not in (POST, ACCOUNT):
            raise InvalidMessage(f"AnalyticsJob of unknown kind {job.kind!r}")
        await collector.handle(
            RoundDelivery(
                tenant_id=job.tenant_id,
                connection_id=job.connection_id,
                kind=job.kind,
                task_ids=list(job.task_ids),
                round_id=job.dispatch_token,
            )
        )

    return handle


def connection_event_handler(
    posts: PostService, track: Track | None = None
) -> Handler[ConnectionEvent]:
    """``connection.events`` → pause or resume the connection's jobs, and start the
    account's daily analytics (``track``) once it works. Idempotent on event_id, and
    pausing/resuming or tracking twice changes nothing."""

    async def handle(envelope: Envelope[ConnectionEvent]) -> None:
        event = envelope.value
        if not event.tenant_id or not event.connection_id:
            raise InvalidMessage("ConnectionEvent without tenant_id or connection_id")
        category = ""
        if event.category != ErrorCategory.ERROR_CATEGORY_UNSPECIFIED:
            category = ErrorCategory.Name(event.category).removeprefix("ERROR_CATEGORY_")
        await posts.on_connection_status(
            event_id=event.event_id,
            tenant_id=event.tenant_id,
            connection_id=event.connection_id,
            platform=event.platform,
            status=ConnectionStatus.Name(event.status).removeprefix("CONNECTION_STATUS_"),
            reason=event.reason,
            category=category,
            source=event.source,
        )
        status = ConnectionStatus.Name(event.status).removeprefix("CONNECTION_STATUS_")
        if track is not None and event.platform and status in READABLE:
            await track(event.tenant_id, event.connection_id, event.platform)

    return handle
