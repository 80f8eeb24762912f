"""The ports health's domain needs; adapters implement them.

Every method is a coroutine and may block on I/O. Unless a method says otherwise:
a PostgreSQL failure surfaces as :class:`StoreUnavailable`, a peer service that
cannot answer as :class:`PeerUnavailable` (both mean "nothing changed, retry later").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from postd_common.errors import Unavailable
from postd_health.domain.model import (
    Alert,
    AlertKind,
    AlertSpec,
    Category,
    Channel,
    CheckRecord,
    ConnectionInfo,
    Delivery,
    Failure,
    MissedJobs,
    Notification,
    NotificationRoutes,
    Status,
    StatusChange,
    Watch,
)

Clock = Callable[[], datetime]


class StoreUnavailable(Unavailable):
    """PostgreSQL could not be reached or refused; nothing was written."""


class PeerUnavailable(Unavailable):
    """A peer service (connectors, publisher) did not answer; nothing is known."""


class ConnectionGone(Exception):
    """Connectors does not know the connection (NOT_FOUND) or it is disconnected."""

    def __init__(self, message: str, *, disconnected: bool = False) -> None:
        super().__init__(message)
        self.disconnected = disconnected


class StatusConflict(Exception):
    """UpdateConnectionStatus refused: the status was no longer the expected one."""


class DeliveryFailed(Exception):
    """An email or Slack message was not accepted. ``permanent``: retrying will not
    help (a removed Slack hook, a refused address)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


# --------------------------------------------------------------------------- peers


class RefreshOutcome(StrEnum):
    REFRESHED = "refreshed"
    NOT_DUE = "not_due"
    CHECKED = "checked"
    FAILED = "failed"


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    checked_at: datetime
    latency: timedelta | None = None
    failure: Failure | None = None
    granted_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefreshReport:
    outcome: RefreshOutcome
    connection: ConnectionInfo | None
    failure: Failure | None = None
    check: CheckReport | None = None
    joined_in_flight: bool = False
    latency: timedelta | None = None


@dataclass(frozen=True)
class StatusUpdate:
    connection: ConnectionInfo
    previous_status: Status
    changed: bool


@dataclass(frozen=True)
class ReconnectLink:
    url: str
    scopes: tuple[str, ...] = ()


class Connectors(Protocol):
    """The connectors service: the only one that holds tokens and talks to platforms.

    Raises PeerUnavailable when it cannot answer, ConnectionGone for an unknown or
    disconnected connection (where the method says so)."""

    async def get_connection(self, tenant_id: str, connection_id: str) -> ConnectionInfo:
        """Raises ConnectionGone (unknown)."""
        ...

    async def refresh(
        self, tenant_id: str, connection_id: str, *, reason: str, force: bool
    ) -> RefreshReport:
        """Refresh where the platform allows it, single-flight across connectors'
        replicas. Platform failures are in the report. Raises ConnectionGone."""
        ...

    async def check(self, tenant_id: str, connection_id: str) -> CheckReport:
        """The platform's cheap "who am I" call. Raises ConnectionGone."""
        ...

    async def list_expiring(
        self, expires_before: datetime, page_token: str, page_size: int
    ) -> tuple[list[ConnectionInfo], str]:
        """Connections of all tenants expiring before a time; (page, next token)."""
        ...

    async def update_status(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        status: Status,
        expected: Status,
        reason: str,
        category: Category | None,
        failure: Failure | None,
        source: str,
    ) -> StatusUpdate:
        """Compare-and-swap the status; connectors emits ``connection.events``.
        Raises StatusConflict, ConnectionGone (unknown or disconnected)."""
        ...

    async def reconnect_link(
        self, tenant_id: str, connection_id: str, platform: str, capabilities: Sequence[str]
    ) -> ReconnectLink:
        """A link a person follows to reconnect with the exact scopes needed. Raises
        ConnectionGone."""
        ...


class Publisher(Protocol):
    async def count_missed(self, tenant_id: str, connection_id: str) -> MissedJobs:
        """Jobs that fell due while the connection was paused. Raises ConnectionGone."""
        ...


class EmailSender(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None:
        """Hand one message to the SMTP server. Raises DeliveryFailed."""
        ...


class SlackSender(Protocol):
    async def send(self, webhook_url: str, text: str) -> None:
        """POST one message to an incoming webhook. Raises DeliveryFailed."""
        ...


# --------------------------------------------------------------------------- storage


WatchMutation = Callable[[Watch | None], Watch | None]


class WatchStore(Protocol):
    async def get_watch(self, connection_id: str, tenant_id: str | None = None) -> Watch | None:
        """The watch row; with ``tenant_id``, None unless it belongs to that tenant."""
        ...

    async def mutate_watch(
        self, connection_id: str, mutate: WatchMutation, *, claim_id: str | None = None
    ) -> Watch | None:
        """Read the row under a lock, let ``mutate`` (pure) return the new row (or None
        to leave it), write it; returns what is stored. While another worker holds a
        claim, ``due_at`` and the claim stay as they are; passing the holder's
        ``claim_id`` releases the claim."""
        ...

    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta, worker: str
    ) -> list[Watch]:
        """Claim up to ``limit`` rows due by ``now`` (soonest first) that nobody holds,
        pushing their ``due_at`` past the lease; each gets a ``claim_id``."""
        ...

    async def claim_one(
        self, connection_id: str, tenant_id: str, now: datetime, lease: timedelta, worker: str
    ) -> Watch | None:
        """Claim one row now, due or not; None while another worker holds it. Raises
        LookupError when the tenant has no such row."""
        ...

    async def tenants_on_platform(self, platform: str) -> list[str]:
        """Tenants with a connection on ``platform`` that is not disconnected."""
        ...


@dataclass(frozen=True)
class CheckQuery:
    tenant_id: str  # empty: all tenants
    connection_id: str = ""
    platform: str = ""
    failures_only: bool = False
    since: datetime | None = None
    until: datetime | None = None


class HealthLog(Protocol):
    async def record_check(self, check: CheckRecord) -> None: ...

    async def list_checks(
        self, query: CheckQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[CheckRecord]:
        """Newest first, strictly older than ``after`` (checked_at, id)."""
        ...

    async def record_status_change(self, change: StatusChange) -> bool:
        """Store a transition once (by event id); False when already stored."""
        ...

    async def history(
        self, tenant_id: str, connection_id: str, limit: int
    ) -> list[StatusChange]: ...


@dataclass(frozen=True)
class CallSample:
    """One platform call, for the rollups: a check, a refresh or a publish attempt."""

    at: datetime
    tenant_id: str
    platform: str
    source: str  # "check", "refresh", "publish"
    ok: bool
    failure: Failure | None = None
    latency: timedelta | None = None


@dataclass(frozen=True)
class PublishObservation:
    """What health keeps of one ``publish.results`` message."""

    job_id: str
    attempt: int
    outcome: str  # published, failed, retry_scheduled, dead_lettered, cancelled
    sample: CallSample
    connection_id: str
    due_at: datetime | None = None


class Metrics(Protocol):
    async def add_sample(self, sample: CallSample) -> None:
        """Count one call in the minute and hour rollups."""
        ...

    async def record_publish(self, observation: PublishObservation) -> bool:
        """Count a publish attempt once (by job, attempt and outcome) in the rollups and
        the job ledger; False when already counted."""
        ...


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: str
    value: bytes
    tenant_id: str


class AlertStore(Protocol):
    async def open_alert(self, spec: AlertSpec, now: datetime, topic: str) -> Alert | None:
        """Open an incident for ``spec.dedupe_key`` unless one is open, and put its
        FIRING message in the outbox in the same transaction. An open incident whose
        severity rises is escalated (and announced again). None: no news."""
        ...

    async def resolve_alert(
        self, dedupe_key: str, message: str, now: datetime, topic: str, *, action_url: str = ""
    ) -> Alert | None:
        """Resolve the open incident for the key (RESOLVED message in the outbox, with
        ``message`` and, when given, a new ``action_url``); None when none is open."""
        ...

    async def open_alerts(self, kind: AlertKind, prefix: str) -> list[Alert]:
        """Open incidents of a kind whose dedupe key starts with ``prefix``."""
        ...

    async def relay_outbox(
        self, limit: int, publish: Callable[[Sequence[OutboxMessage]], Awaitable[None]]
    ) -> int:
        """Hand up to ``limit`` outbox messages, oldest first, to ``publish`` and delete
        them once it returned (a crash in between relays them again: consumers are
        idempotent). Returns how many were relayed."""
        ...


@dataclass(frozen=True)
class DeliveryRequest:
    channel: Channel
    target: str
    subject: str
    body: str


class NotificationStore(Protocol):
    async def add_notification(
        self, alert: Alert, tenant_id: str, deliveries: Sequence[DeliveryRequest], now: datetime
    ) -> Notification | None:
        """Store the in-app notification of ``alert`` for ``tenant_id`` and queue its
        deliveries, once per (alert, state, severity); None when already stored or a
        firing of equal or higher severity was already told."""
        ...

    async def list_notifications(
        self, tenant_id: str, unread_only: bool, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Notification], int]:
        """Newest first; plus the tenant's unread count."""
        ...

    async def mark_read(
        self, tenant_id: str, ids: Sequence[str], all_unread: bool, by: str, now: datetime
    ) -> int:
        """Raises LookupError (nothing marked) when a listed id is not the tenant's."""
        ...

    async def claim_deliveries(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[Delivery]: ...

    async def finish_delivery(
        self,
        delivery_id: str,
        *,
        sent: bool,
        error: str,
        retry_at: datetime | None,
        now: datetime,
    ) -> None:
        """Mark sent, failed for good (``retry_at`` None), or to retry at a time."""
        ...

    async def sent_since(self, tenant_id: str, channel: Channel, since: datetime) -> int:
        """Messages sent on a channel for a tenant since a time (rate limiting)."""
        ...

    async def routes(self, tenant_id: str) -> NotificationRoutes: ...

    async def set_routes(self, routes: NotificationRoutes) -> None: ...
