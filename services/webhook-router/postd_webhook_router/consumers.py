"""Kafka handlers: POSTD's own events → outbound deliveries (and routing-cache upkeep).

Each handler is idempotent: a delivery is unique per (endpoint, source event id).
"""

from __future__ import annotations

from datetime import UTC

from postd.common.v1 import common_pb2
from postd.events.v1 import connection_event_pb2, publish_result_pb2
from postd_common.kafka import Envelope
from postd_webhook_router.domain.outbound import OutboundEvents
from postd_webhook_router.domain.routing import CachedResolver

_OUTCOME_TYPES = {
    publish_result_pb2.PUBLISH_OUTCOME_PUBLISHED: "post.published",
    publish_result_pb2.PUBLISH_OUTCOME_FAILED: "post.failed",
    publish_result_pb2.PUBLISH_OUTCOME_DEAD_LETTERED: "post.failed",
    publish_result_pb2.PUBLISH_OUTCOME_CANCELLED: "post.cancelled",
}


class PublishResultHandler:
    def __init__(self, outbound: OutboundEvents) -> None:
        self._outbound = outbound

    async def __call__(self, envelope: Envelope[publish_result_pb2.PublishResult]) -> None:
        result = envelope.value
        event_type = _OUTCOME_TYPES.get(result.outcome)
        if event_type is None:
            return  # retries in progress are not news for the tenant
        outcome = publish_result_pb2.PublishOutcome.Name(result.outcome)
        data = {
            "post_id": result.post_id,
            "job_id": result.job_id,
            "connection_id": result.connection_id,
            "platform": result.platform,
            "outcome": outcome.removeprefix("PUBLISH_OUTCOME_").lower(),
            "platform_post_id": result.platform_post_id,
            "url": result.url,
            "attempt": result.attempt,
        }
        if result.HasField("error"):
            data["error"] = {
                "category": common_pb2.ErrorCategory.Name(result.error.category),
                "message": result.error.message,
            }
        await self._outbound.publish(
            result.tenant_id,
            event_type,
            f"publish:{result.job_id}:{result.attempt}:{outcome}",
            data,
            result.finished_at.ToDatetime(UTC) if result.HasField("finished_at") else None,
        )


class ConnectionEventHandler:
    def __init__(self, outbound: OutboundEvents, resolver: CachedResolver) -> None:
        self._outbound = outbound
        self._resolver = resolver

    async def __call__(self, envelope: Envelope[connection_event_pb2.ConnectionEvent]) -> None:
        event = envelope.value
        if event.external_id:
            # Routing may have changed (connected, disconnected): ask connectors again.
            self._resolver.forget(event.platform, event.external_id)
        status = common_pb2.ConnectionStatus.Name
        await self._outbound.publish(
            event.tenant_id,
            "connection.status_changed",
            f"connection:{event.event_id or envelope.offset}",
            {
                "connection_id": event.connection_id,
                "platform": event.platform,
                "account_name": event.account_name,
                "previous_status": status(event.previous_status)
                .removeprefix("CONNECTION_STATUS_")
                .lower(),
                "status": status(event.status).removeprefix("CONNECTION_STATUS_").lower(),
                "reason": event.reason,
                "reconnect_url": event.reconnect_url,
            },
            event.occurred_at.ToDatetime(UTC) if event.HasField("occurred_at") else None,
        )
