"""What health talks about: watched connections, checks, failures, alerts, notifications.

Plain dataclasses; adapters translate them to and from protobuf and SQL rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any


class Status(StrEnum):
    """A connection's health as people see it (common.v1.ConnectionStatus)."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    EXPIRING_SOON = "expiring_soon"
    ATTENTION = "attention"
    REVOKED = "revoked"
    DISCONNECTED = "disconnected"

    @property
    def needs_person(self) -> bool:
        return self in (Status.ATTENTION, Status.REVOKED)

    @property
    def publishing_paused(self) -> bool:
        """The publisher pauses a connection's jobs in these states (connection.events)."""
        return self in (Status.ATTENTION, Status.REVOKED, Status.DISCONNECTED)


class Category(StrEnum):
    """The error catalogue's category of a platform failure (common.v1.ErrorCategory)."""

    UNKNOWN = "unknown"
    AUTH_REVOKED = "auth_revoked"
    AUTH_EXPIRED = "auth_expired"
    PERMISSION_MISSING = "permission_missing"
    RATE_LIMITED = "rate_limited"
    CONTENT_REJECTED = "content_rejected"
    TRANSIENT = "transient"
    PLATFORM_OUTAGE = "platform_outage"
    INVALID_REQUEST = "invalid_request"
    QUOTA_EXCEEDED = "quota_exceeded"
    NOT_FOUND = "not_found"

    @property
    def passing(self) -> bool:
        """A failure that says nothing about the connection itself and may pass."""
        return self in (Category.TRANSIENT, Category.PLATFORM_OUTAGE, Category.UNKNOWN)


class ErrorClass(StrEnum):
    """How the dashboard splits failed calls."""

    UNAUTHORIZED = "unauthorized"  # 401
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_errors"  # 5xx
    TIMEOUT = "timeouts"  # no response in time
    OTHER_CLIENT_ERROR = "other_client_errors"  # other 4xx


@dataclass(frozen=True)
class Failure:
    """A platform failure as the error catalogue described it. Never holds a secret."""

    category: Category
    platform: str = ""
    http_status: int = 0
    platform_code: str = ""
    message: str = ""
    action_message: str = ""
    missing_scopes: tuple[str, ...] = ()
    retry_after: timedelta | None = None

    @property
    def error_class(self) -> ErrorClass:
        status = self.http_status
        if status == 401:
            return ErrorClass.UNAUTHORIZED
        if status == 429 or self.category is Category.RATE_LIMITED:
            return ErrorClass.RATE_LIMITED
        if status >= 500:
            return ErrorClass.SERVER_ERROR
        if status == 0 and self.category.passing:
            return ErrorClass.TIMEOUT
        if status == 0 and self.category in (Category.AUTH_REVOKED, Category.AUTH_EXPIRED):
            return ErrorClass.UNAUTHORIZED
        return ErrorClass.OTHER_CLIENT_ERROR

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["category"] = self.category.value
        data["missing_scopes"] = list(self.missing_scopes)
        data["retry_after"] = self.retry_after.total_seconds() if self.retry_after else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        retry = data.get("retry_after")
        return cls(
            category=Category(data.get("category", "unknown")),
            platform=str(data.get("platform", "")),
            http_status=int(data.get("http_status", 0)),
            platform_code=str(data.get("platform_code", "")),
            message=str(data.get("message", "")),
            action_message=str(data.get("action_message", "")),
            missing_scopes=tuple(data.get("missing_scopes") or ()),
            retry_after=timedelta(seconds=float(retry)) if retry else None,
        )


class Cause(StrEnum):
    """Why a connection has its status; decides what may heal it."""

    NONE = ""
    TRANSIENT_BUDGET = "transient_budget"  # heals on the next success
    PERMISSION = "permission"  # needs a reconnect with the missing scopes
    AUTH = "auth"  # access withdrawn: needs a reconnect
    EXPIRY = "expiry"  # token expires or expired without refresh
    REFRESH_FAILED = "refresh_failed"  # refresh keeps failing; heals on a refresh
    WEBHOOK = "webhook"  # the platform told us (deauthorized)
    CONNECTORS = "connectors"  # set by connectors (connect, reconnect, disconnect)


HEALS_ON_SUCCESS = frozenset({Cause.TRANSIENT_BUDGET, Cause.REFRESH_FAILED})


class Source(StrEnum):
    """What drove a status change (StatusChange.source)."""

    HEALTH_CHECK = "health_check"
    REFRESH = "refresh"
    PUBLISH_RESULT = "publish_result"
    WEBHOOK = "webhook"
    RECONNECT = "reconnect"


class CheckKind(StrEnum):
    SCHEDULED = "scheduled"
    ON_DEMAND = "on_demand"
    REFRESH = "refresh"


@dataclass(frozen=True)
class ConnectionInfo:
    """What connectors says about a connection (never a token)."""

    connection_id: str
    tenant_id: str
    platform: str
    status: Status
    account_name: str = ""
    external_id: str = ""
    status_reason: str = ""
    status_changed_at: datetime | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    created_at: datetime | None = None
    has_refresh_token: bool = False
    scopes: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()


@dataclass
class Watch:
    """Health's own view of one connection: the row of ``health.connection_watch``."""

    connection_id: str
    tenant_id: str
    platform: str
    status: Status
    account_name: str = ""
    external_id: str = ""
    status_reason: str = ""
    status_cause: Cause = Cause.NONE
    status_since: datetime | None = None
    scopes: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    has_refresh_token: bool = False
    token_issued_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    consecutive_failures: int = 0
    first_failure_at: datetime | None = None
    last_failure_category: Category | None = None
    refresh_failures: int = 0
    last_check_at: datetime | None = None
    next_refresh_at: datetime | None = None
    next_check_at: datetime | None = None
    next_warn_at: datetime | None = None
    warn_deadline: datetime | None = None
    warned_days: tuple[int, ...] = ()
    retry_at: datetime | None = None
    refresh_requested_at: datetime | None = None
    due_at: datetime | None = None
    claim_id: str | None = None

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> Watch:
        watch = cls(
            connection_id=info.connection_id,
            tenant_id=info.tenant_id,
            platform=info.platform,
            status=info.status,
        )
        watch.absorb(info)
        return watch

    def absorb(self, info: ConnectionInfo) -> None:
        """Take connectors' facts (the source of truth for tokens and status)."""
        self.platform = info.platform or self.platform
        self.account_name = info.account_name or self.account_name
        self.external_id = info.external_id or self.external_id
        if info.status is not Status.UNKNOWN and info.status is not self.status:
            self.status = info.status
            self.status_reason = info.status_reason
            self.status_since = info.status_changed_at or self.status_since
            self.status_cause = Cause.CONNECTORS
        if info.expires_at != self.expires_at:
            self.warned_days = ()
        self.expires_at = info.expires_at
        self.refresh_expires_at = info.refresh_expires_at
        self.has_refresh_token = info.has_refresh_token
        self.last_refreshed_at = info.last_refreshed_at or self.last_refreshed_at
        self.token_issued_at = info.last_refreshed_at or info.created_at or self.token_issued_at
        if info.scopes:
            self.scopes = info.scopes
        if info.capabilities:
            self.capabilities = info.capabilities


@dataclass(frozen=True)
class CheckRecord:
    """One row of the health log."""

    id: str
    tenant_id: str
    connection_id: str
    platform: str
    kind: CheckKind
    ok: bool
    checked_at: datetime
    latency: timedelta | None
    failure: Failure | None
    status_after: Status


@dataclass(frozen=True)
class StatusChange:
    """One transition in a connection's history (from ``connection.events``)."""

    event_id: str
    tenant_id: str
    connection_id: str
    platform: str
    previous_status: Status
    status: Status
    reason: str
    category: Category | None
    source: str
    occurred_at: datetime
    account_name: str = ""


class AlertKind(StrEnum):
    TOKEN_REFRESH_FAILED = "token_refresh_failed"  # noqa: S105 - a kind, not a secret
    API_ERROR_RATE = "api_error_rate"
    WEBHOOK_DELIVERY_FAILURES = "webhook_delivery_failures"
    QUEUE_BACKLOG = "queue_backlog"
    PLATFORM_OUTAGE = "platform_outage"
    CONNECTION_ATTENTION = "connection_attention"
    UNKNOWN = "unknown"


class Severity(IntEnum):
    UNKNOWN = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """An incident firing or resolved: what travels on the ``alerts`` topic."""

    alert_id: str
    tenant_id: str  # empty: operator-wide
    kind: AlertKind
    severity: Severity
    state: AlertState
    title: str
    message: str
    dedupe_key: str
    started_at: datetime
    platform: str = ""
    connection_id: str = ""
    action_url: str = ""
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class AlertSpec:
    """What a detector wants said; the alert engine decides whether it is news."""

    dedupe_key: str
    tenant_id: str
    kind: AlertKind
    severity: Severity
    title: str
    message: str
    platform: str = ""
    connection_id: str = ""
    action_url: str = ""


@dataclass(frozen=True)
class Notification:
    id: str
    tenant_id: str
    alert_id: str
    kind: AlertKind
    severity: Severity
    alert_state: AlertState
    title: str
    message: str
    created_at: datetime
    platform: str = ""
    connection_id: str = ""
    action_url: str = ""
    read_at: datetime | None = None
    read_by: str = ""


class Channel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"


@dataclass(frozen=True)
class Delivery:
    """One message to one external channel target (email address, Slack hook)."""

    id: str
    tenant_id: str
    alert_id: str
    channel: Channel
    target: str  # email address, or "tenant" / "global" for a Slack hook
    subject: str
    body: str
    attempts: int = 0


@dataclass(frozen=True)
class NotificationRoutes:
    """Where a tenant's alerts go besides the in-app list. The Slack URL is a secret."""

    tenant_id: str
    emails: tuple[str, ...] = ()
    slack_webhook_url: str = field(default="", repr=False)
    min_severity: Severity = Severity.INFO


@dataclass(frozen=True)
class MissedJobs:
    count: int
    oldest_due_at: datetime | None = None
    newest_due_at: datetime | None = None
    paused: bool = False
