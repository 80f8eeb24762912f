"""Protobuf <-> domain for the connectors contract (and the ConnectionEvent)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd.events.v1 import connection_event_pb2
from postd_common.kafka import message_headers
from postd_connectors.adapters.postgres import EventEncoder
from postd_connectors.domain.capabilities import (
    MediaConstraints,
    PlatformCapabilities,
    PostFormat,
)
from postd_connectors.domain.model import (
    AuditEntry,
    Connection,
    ConnectionStatus,
    ErrorAction,
    ErrorCategory,
    MediaItem,
    MediaKind,
    PlatformError,
    PostContent,
    StatusChange,
)
from postd_connectors.domain.validation import Severity, Violation
from postd_connectors.platforms.base import HealthResult, PostMetrics, RateUsage


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def dt(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    value = Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def status_to_proto(status: ConnectionStatus | None) -> common_pb2.ConnectionStatus.ValueType:
    if status is None:
        return common_pb2.CONNECTION_STATUS_UNSPECIFIED
    return common_pb2.ConnectionStatus.Value("CONNECTION_STATUS_" + status.value.upper())


def status_from_proto(value: int) -> ConnectionStatus | None:
    if value == common_pb2.CONNECTION_STATUS_UNSPECIFIED:
        return None
    name = common_pb2.ConnectionStatus.Name(value)  # type: ignore[arg-type]
    return ConnectionStatus(name.removeprefix("CONNECTION_STATUS_").lower())


def category_to_proto(category: ErrorCategory | None) -> common_pb2.ErrorCategory.ValueType:
    if category is None:
        return common_pb2.ERROR_CATEGORY_UNSPECIFIED
    return common_pb2.ErrorCategory.Value("ERROR_CATEGORY_" + category.value.upper())


def category_from_proto(value: int) -> ErrorCategory | None:
    if value == common_pb2.ERROR_CATEGORY_UNSPECIFIED:
        return None
    name = common_pb2.ErrorCategory.Name(value)  # type: ignore[arg-type]
    return ErrorCategory(name.removeprefix("ERROR_CATEGORY_").lower())


def error_to_proto(error: PlatformError) -> common_pb2.PlatformError:
    message = common_pb2.PlatformError(
        category=category_to_proto(error.category),
        platform=error.platform,
        http_status=error.http_status,
        platform_code=error.platform_code,
        platform_subcode=error.platform_subcode,
        message=error.message,
        platform_message=error.platform_message,
        action=common_pb2.ErrorAction.Value("ERROR_ACTION_" + error.action.value.upper()),
        action_message=error.action_message,
        retryable=error.retryable,
        missing_scopes=list(error.missing_scopes),
        platform_request_id=error.platform_request_id,
    )
    wait = duration(error.retry_after)
    if wait is not None:
        message.retry_after.CopyFrom(wait)
    return message


def error_from_proto(message: common_pb2.PlatformError) -> PlatformError:
    action_name = common_pb2.ErrorAction.Name(message.action).removeprefix("ERROR_ACTION_").lower()
    return PlatformError(
        category=category_from_proto(message.category) or ErrorCategory.UNKNOWN,
        platform=message.platform,
        message=message.message,
        action=ErrorAction(action_name) if action_name != "unspecified" else ErrorAction.NONE,
        retryable=message.retryable,
        http_status=message.http_status,
        platform_code=message.platform_code,
        platform_subcode=message.platform_subcode,
        platform_message=message.platform_message,
        action_message=message.action_message,
        retry_after=message.retry_after.ToTimedelta().total_seconds()
        if message.HasField("retry_after")
        else None,
        missing_scopes=tuple(message.missing_scopes),
        platform_request_id=message.platform_request_id,
    )


def connection_to_proto(c: Connection) -> pb.Connection:
    message = pb.Connection(
        id=c.id,
        tenant_id=c.tenant_id,
        platform=c.platform,
        external_id=c.external_id,
        account_name=c.account_name,
        avatar_url=c.avatar_url,
        scopes=list(c.scopes),
        status=status_to_proto(c.status),
        has_refresh_token=c.has_refresh_token,
        account_kind=c.account_kind,
        username=c.username,
        status_reason=c.status_reason,
        missing_scopes=list(c.missing_scopes),
        connected_by=c.connected_by,
        capabilities=list(c.capabilities),
    )
    for name in (
        "expires_at",
        "refresh_expires_at",
        "last_refreshed_at",
        "created_at",
        "updated_at",
        "status_changed_at",
    ):
        stamp = ts(getattr(c, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    if c.last_error is not None:
        message.last_error.CopyFrom(error_to_proto(c.last_error))
    return message


_KIND_FROM = {
    common_pb2.MEDIA_KIND_UNSPECIFIED: MediaKind.UNSPECIFIED,
    common_pb2.MEDIA_KIND_IMAGE: MediaKind.IMAGE,
    common_pb2.MEDIA_KIND_VIDEO: MediaKind.VIDEO,
    common_pb2.MEDIA_KIND_GIF: MediaKind.GIF,
    common_pb2.MEDIA_KIND_DOCUMENT: MediaKind.DOCUMENT,
}
_KIND_TO = {v: k for k, v in _KIND_FROM.items()}


def content_from_proto(message: common_pb2.PostContent) -> PostContent:
    return PostContent(
        text=message.text,
        link=message.link,
        title=message.title,
        options=dict(message.options),
        media=tuple(
            MediaItem(
                url=m.url,
                kind=_KIND_FROM.get(m.kind, MediaKind.UNSPECIFIED),
                mime_type=m.mime_type,
                size_bytes=m.size_bytes,
                width=m.width,
                height=m.height,
                duration_seconds=m.duration.ToTimedelta().total_seconds()
                if m.HasField("duration")
                else None,
                alt_text=m.alt_text,
                thumbnail_url=m.thumbnail_url,
            )
            for m in message.media
        ),
    )


def has_content(message: common_pb2.PostContent) -> bool:
    return bool(message.text or message.link or message.media or message.title or message.options)


def violation_to_proto(v: Violation) -> common_pb2.Violation:
    return common_pb2.Violation(
        field=v.field,
        code=v.code,
        message=v.message,
        severity=common_pb2.VIOLATION_SEVERITY_ERROR
        if v.severity is Severity.ERROR
        else common_pb2.VIOLATION_SEVERITY_WARNING,
    )


def _media_to_proto(m: MediaConstraints) -> pb.MediaConstraints:
    message = pb.MediaConstraints(
        kind=_KIND_TO[m.kind],
        mime_types=list(m.mime_types),
        max_size_bytes=m.max_size_bytes,
        min_width=m.min_width,
        max_width=m.max_width,
        min_height=m.min_height,
        max_height=m.max_height,
        min_aspect_ratio=m.min_aspect_ratio,
        max_aspect_ratio=m.max_aspect_ratio,
    )
    for name, value in (("min_duration", m.min_duration), ("max_duration", m.max_duration)):
        d = duration(value)
        if d is not None:
            getattr(message, name).CopyFrom(d)
    return message


def _format_to_proto(f: PostFormat) -> pb.PostFormat:
    return pb.PostFormat(
        format=f.format,
        max_text_length=f.max_text_length,
        max_title_length=f.max_title_length,
        min_media_count=f.min_media_count,
        max_media_count=f.max_media_count,
        media=[_media_to_proto(m) for m in f.media],
        supports_link=f.supports_link,
        options=list(f.options),
        option_choices=[
            pb.OptionChoices(option=k, values=list(v)) for k, v in sorted(f.option_values.items())
        ],
    )


def capabilities_to_proto(c: PlatformCapabilities) -> pb.PlatformCapabilities:
    return pb.PlatformCapabilities(
        platform=c.platform,
        display_name=c.display_name,
        formats=[_format_to_proto(f) for f in c.formats],
        max_text_length=c.max_text_length,
        supports_scheduling=c.supports_scheduling,
        supports_edit=c.supports_edit,
        supports_delete=c.supports_delete,
        supports_analytics=c.supports_analytics,
        supports_webhooks=c.supports_webhooks,
        supports_refresh=c.supports_refresh,
        supports_post_lookup=c.supports_post_lookup,
        rate_limits=[
            pb.RateLimit(
                name=r.name,
                scope=r.scope,
                limit=r.limit,
                window=duration(r.window_seconds),
                description=r.description,
            )
            for r in c.rate_limits
        ],
        capability_scopes=[
            pb.CapabilityScopes(capability=k, scopes=list(v))
            for k, v in sorted(c.capability_scopes.items())
        ],
    )


def usage_to_proto(u: RateUsage) -> pb.RateLimitUsage:
    message = pb.RateLimitUsage(
        name=u.name,
        scope=u.scope,
        used=u.used,
        limit=u.limit,
        remaining=u.remaining,
        used_percent=u.used_percent,
    )
    stamp = ts(u.resets_at)
    if stamp is not None:
        message.resets_at.CopyFrom(stamp)
    wait = duration(u.retry_after)
    if wait is not None:
        message.retry_after.CopyFrom(wait)
    return message


def metrics_to_proto(m: PostMetrics) -> pb.PostMetrics:
    message = pb.PostMetrics(breakdown=dict(m.breakdown))
    for name in ("impressions", "reach", "engagements", "clicks", "video_views", "conversions"):
        value = getattr(m, name)
        if value is not None:
            setattr(message, name, value)
    return message


def health_to_proto(
    connection_id: str, result: HealthResult, checked_at: datetime
) -> pb.HealthCheckResult:
    message = pb.HealthCheckResult(
        connection_id=connection_id,
        ok=result.ok,
        checked_at=ts(checked_at),
        latency=duration(result.latency_seconds),
        granted_scopes=list(result.granted_scopes),
    )
    if result.error is not None:
        message.error.CopyFrom(error_to_proto(result.error))
    return message


def audit_to_proto(e: AuditEntry) -> pb.ConnectionAuditEntry:
    def status(value: str) -> common_pb2.ConnectionStatus.ValueType:
        return status_to_proto(ConnectionStatus(value)) if value else status_to_proto(None)

    return pb.ConnectionAuditEntry(
        id=e.id,
        tenant_id=e.tenant_id,
        connection_id=e.connection_id,
        action=e.action,
        actor=e.actor,
        reason=e.reason,
        previous_status=status(e.previous_status),
        status=status(e.status),
        details=dict(e.details),
        occurred_at=ts(e.occurred_at),
    )


def connection_event(
    connection: Connection, change: StatusChange, event_id: str, occurred_at: datetime
) -> connection_event_pb2.ConnectionEvent:
    return connection_event_pb2.ConnectionEvent(
        tenant_id=connection.tenant_id,
        connection_id=connection.id,
        platform=connection.platform,
        previous_status=status_to_proto(change.previous),
        status=status_to_proto(change.status),
        reason=change.reason,
        category=category_to_proto(change.category),
        occurred_at=ts(occurred_at),
        reconnect_url=change.reconnect_url,
        event_id=event_id,
        source=change.source,
        account_name=connection.account_name,
        external_id=connection.external_id,
    )


def event_encoder(topic: str) -> EventEncoder:
    """An EventEncoder for the outbox: (connection, change, event id) -> row."""

    def encode(
        connection: Connection, change: StatusChange, event_id: str
    ) -> tuple[str, str, bytes, list[tuple[str, str]]]:
        event = connection_event(connection, change, event_id, datetime.now(UTC))
        headers = [
            (k, v.decode())
            for k, v in message_headers(
                event, tenant_id=connection.tenant_id, idempotency_key=event_id
            )
        ]
        return topic, connection.id, event.SerializeToString(), headers

    return encode
