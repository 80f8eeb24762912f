"""Protobuf ↔ domain: statuses, categories, failures, connections, alerts, times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2
from postd.events.v1 import alert_pb2
from postd_health.domain.model import (
    Alert,
    AlertKind,
    AlertState,
    Category,
    ConnectionInfo,
    Failure,
    Severity,
    Status,
)

_STATUS_TO_PROTO: Mapping[Status, int] = {
    Status.UNKNOWN: common_pb2.CONNECTION_STATUS_UNSPECIFIED,
    Status.HEALTHY: common_pb2.CONNECTION_STATUS_HEALTHY,
    Status.EXPIRING_SOON: common_pb2.CONNECTION_STATUS_EXPIRING_SOON,
    Status.ATTENTION: common_pb2.CONNECTION_STATUS_ATTENTION,
    Status.REVOKED: common_pb2.CONNECTION_STATUS_REVOKED,
    Status.DISCONNECTED: common_pb2.CONNECTION_STATUS_DISCONNECTED,
}
_STATUS_FROM_PROTO: Mapping[int, Status] = {v: k for k, v in _STATUS_TO_PROTO.items()}

_CATEGORY_TO_PROTO: Mapping[Category, int] = {
    Category.UNKNOWN: common_pb2.ERROR_CATEGORY_UNKNOWN,
    Category.AUTH_REVOKED: common_pb2.ERROR_CATEGORY_AUTH_REVOKED,
    Category.AUTH_EXPIRED: common_pb2.ERROR_CATEGORY_AUTH_EXPIRED,
    Category.PERMISSION_MISSING: common_pb2.ERROR_CATEGORY_PERMISSION_MISSING,
    Category.RATE_LIMITED: common_pb2.ERROR_CATEGORY_RATE_LIMITED,
    Category.CONTENT_REJECTED: common_pb2.ERROR_CATEGORY_CONTENT_REJECTED,
    Category.TRANSIENT: common_pb2.ERROR_CATEGORY_TRANSIENT,
    Category.PLATFORM_OUTAGE: common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE,
    Category.INVALID_REQUEST: common_pb2.ERROR_CATEGORY_INVALID_REQUEST,
    Category.QUOTA_EXCEEDED: common_pb2.ERROR_CATEGORY_QUOTA_EXCEEDED,
    Category.NOT_FOUND: common_pb2.ERROR_CATEGORY_NOT_FOUND,
}
_CATEGORY_FROM_PROTO: Mapping[int, Category] = {v: k for k, v in _CATEGORY_TO_PROTO.items()}

_KIND_TO_PROTO: Mapping[AlertKind, int] = {
    AlertKind.UNKNOWN: alert_pb2.ALERT_KIND_UNSPECIFIED,
    AlertKind.TOKEN_REFRESH_FAILED: alert_pb2.ALERT_KIND_TOKEN_REFRESH_FAILED,
    AlertKind.API_ERROR_RATE: alert_pb2.ALERT_KIND_API_ERROR_RATE,
    AlertKind.WEBHOOK_DELIVERY_FAILURES: alert_pb2.ALERT_KIND_WEBHOOK_DELIVERY_FAILURES,
    AlertKind.QUEUE_BACKLOG: alert_pb2.ALERT_KIND_QUEUE_BACKLOG,
    AlertKind.PLATFORM_OUTAGE: alert_pb2.ALERT_KIND_PLATFORM_OUTAGE,
    AlertKind.CONNECTION_ATTENTION: alert_pb2.ALERT_KIND_CONNECTION_ATTENTION,
}
_KIND_FROM_PROTO: Mapping[int, AlertKind] = {v: k for k, v in _KIND_TO_PROTO.items()}

_STATE_TO_PROTO: Mapping[AlertState, int] = {
    AlertState.FIRING: alert_pb2.ALERT_STATE_FIRING,
    AlertState.RESOLVED: alert_pb2.ALERT_STATE_RESOLVED,
}
_STATE_FROM_PROTO: Mapping[int, AlertState] = {v: k for k, v in _STATE_TO_PROTO.items()}


def status_to_proto(status: Status) -> int:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: int) -> Status:
    return _STATUS_FROM_PROTO.get(value, Status.UNKNOWN)


def category_to_proto(category: Category | None) -> int:
    if category is None:
        return common_pb2.ERROR_CATEGORY_UNSPECIFIED
    return _CATEGORY_TO_PROTO[category]


def category_from_proto(value: int) -> Category:
    return _CATEGORY_FROM_PROTO.get(value, Category.UNKNOWN)


def kind_to_proto(kind: AlertKind) -> int:
    return _KIND_TO_PROTO[kind]


def kind_from_proto(value: int) -> AlertKind:
    return _KIND_FROM_PROTO.get(value, AlertKind.UNKNOWN)


def alert_state_to_proto(state: AlertState) -> int:
    return _STATE_TO_PROTO[state]


def alert_state_from_proto(value: int) -> AlertState | None:
    return _STATE_FROM_PROTO.get(value)


def severity_from_proto(value: int) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        return Severity.UNKNOWN


# --------------------------------------------------------------------------- times


def ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def from_ts(stamp: Timestamp, present: bool) -> datetime | None:
    """A Timestamp field's value, or None when the field is unset."""
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def duration(delta: timedelta | None) -> Duration | None:
    if delta is None:
        return None
    out = Duration()
    out.FromTimedelta(delta)
    return out


def from_duration(value: Duration, present: bool) -> timedelta | None:
    return value.ToTimedelta() if present else None


# --------------------------------------------------------------------------- messages


def failure_from_proto(error: common_pb2.PlatformError) -> Failure:
    return Failure(
        category=category_from_proto(error.category),
        platform=error.platform,
        http_status=error.http_status,
        platform_code=error.platform_code,
        message=error.message,
        action_message=error.action_message,
        missing_scopes=tuple(error.missing_scopes),
        retry_after=from_duration(error.retry_after, error.HasField("retry_after")),
    )


def failure_to_proto(failure: Failure | None) -> common_pb2.PlatformError | None:
    if failure is None:
        return None
    return common_pb2.PlatformError(
        category=category_to_proto(failure.category),  # type: ignore[arg-type]
        platform=failure.platform,
        http_status=failure.http_status,
        platform_code=failure.platform_code,
        message=failure.message,
        action_message=failure.action_message,
        missing_scopes=list(failure.missing_scopes),
        retry_after=duration(failure.retry_after),
        retryable=failure.category.passing or failure.category is Category.RATE_LIMITED,
    )


def connection_from_proto(conn: connectors_pb2.Connection) -> ConnectionInfo:
    return ConnectionInfo(
        connection_id=conn.id,
        tenant_id=conn.tenant_id,
        platform=conn.platform,
        status=status_from_proto(conn.status),
        account_name=conn.account_name,
        external_id=conn.external_id,
        status_reason=conn.status_reason,
        status_changed_at=from_ts(conn.status_changed_at, conn.HasField("status_changed_at")),
        expires_at=from_ts(conn.expires_at, conn.HasField("expires_at")),
        refresh_expires_at=from_ts(conn.refresh_expires_at, conn.HasField("refresh_expires_at")),
        last_refreshed_at=from_ts(conn.last_refreshed_at, conn.HasField("last_refreshed_at")),
        created_at=from_ts(conn.created_at, conn.HasField("created_at")),
        has_refresh_token=conn.has_refresh_token,
        scopes=tuple(conn.scopes),
        capabilities=tuple(conn.capabilities),
    )


def alert_to_proto(alert: Alert) -> alert_pb2.Alert:
    return alert_pb2.Alert(
        alert_id=alert.alert_id,
        tenant_id=alert.tenant_id,
        kind=kind_to_proto(alert.kind),  # type: ignore[arg-type]
        severity=int(alert.severity),  # type: ignore[arg-type]
        state=alert_state_to_proto(alert.state),  # type: ignore[arg-type]
        title=alert.title,
        message=alert.message,
        platform=alert.platform,
        connection_id=alert.connection_id,
        started_at=ts(alert.started_at),
        resolved_at=ts(alert.resolved_at),
        dedupe_key=alert.dedupe_key,
        action_url=alert.action_url,
    )


def alert_from_proto(message: alert_pb2.Alert) -> Alert | None:
    """The domain alert, or None for a message without a state (cannot be acted on)."""
    state = alert_state_from_proto(message.state)
    if state is None or not message.alert_id:
        return None
    started = from_ts(message.started_at, message.HasField("started_at"))
    return Alert(
        alert_id=message.alert_id,
        tenant_id=message.tenant_id,
        kind=kind_from_proto(message.kind),
        severity=severity_from_proto(message.severity),
        state=state,
        title=message.title,
        message=message.message,
        dedupe_key=message.dedupe_key or message.alert_id,
        started_at=started or datetime.now(UTC),
        platform=message.platform,
        connection_id=message.connection_id,
        action_url=message.action_url,
        resolved_at=from_ts(message.resolved_at, message.HasField("resolved_at")),
    )
