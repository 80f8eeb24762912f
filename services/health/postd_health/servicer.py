"""ConnectionHealthService over gRPC: proto ↔ domain, domain errors → status codes.

Callers: the gateway (on behalf of a tenant) and operators. An empty tenant_id means
"all tenants" and is allowed to the operator identity only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime
from typing import Final

import grpc

from postd.common.v1 import common_pb2
from postd.health.v1 import health_pb2, health_pb2_grpc
from postd_common import errors, identity
from postd_common.grpcutil import AccessPolicy, map_domain_errors
from postd_health.adapters import protos
from postd_health.adapters.postgres import PostgresStore
from postd_health.domain.dashboard import Dashboard, DashboardData, Series
from postd_health.domain.forecast import forecast
from postd_health.domain.model import (
    AlertKind,
    CheckKind,
    CheckRecord,
    Notification,
    NotificationRoutes,
    Severity,
    Status,
    StatusChange,
)
from postd_health.domain.monitor import ConnectionMonitor
from postd_health.domain.playbook import Playbook
from postd_health.domain.rules import PlatformRules
from postd_health.ports import CheckQuery, Clock

SERVICE_NAME: Final = "postd.health.v1.ConnectionHealthService"
GATEWAY = "gateway"
OPERATOR = "operator"

POLICY: Final = AccessPolicy(
    methods={f"/{SERVICE_NAME}/": frozenset({GATEWAY, OPERATOR})},
    default=frozenset(),
)

_KINDS = {
    CheckKind.SCHEDULED: health_pb2.HEALTH_CHECK_KIND_SCHEDULED,
    CheckKind.ON_DEMAND: health_pb2.HEALTH_CHECK_KIND_ON_DEMAND,
    CheckKind.REFRESH: health_pb2.HEALTH_CHECK_KIND_REFRESH,
}
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def _tenant(tenant_id: str, *, allow_all: bool = False) -> str:
    if tenant_id:
        return tenant_id
    if allow_all and identity.caller() == OPERATOR:
        return ""
    raise errors.InvalidArgument("tenant_id is required", field="tenant_id")


def _page_size(value: int) -> int:
    if value < 0:
        raise errors.InvalidArgument("page_size must not be negative", field="page_size")
    return min(value or 50, 500)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _token(last: tuple[datetime, str], filters: str) -> str:
    raw = json.dumps({"t": last[0].isoformat(), "i": last[1], "f": filters})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _after(token: str, filters: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["f"] != filters:
            raise ValueError("filters changed")
        return datetime.fromisoformat(data["t"]), str(data["i"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise errors.InvalidArgument(
            "page_token is malformed or was issued for other filters", field="page_token"
        ) from exc


def _window(window: common_pb2.TimeRange, present: bool) -> tuple[datetime | None, datetime | None]:
    if not present:
        return None, None
    return (
        protos.from_ts(window.start_time, window.HasField("start_time")),
        protos.from_ts(window.end_time, window.HasField("end_time")),
    )


def check_pb(check: CheckRecord) -> health_pb2.HealthCheck:
    return health_pb2.HealthCheck(
        id=check.id,
        tenant_id=check.tenant_id,
        connection_id=check.connection_id,
        platform=check.platform,
        kind=_KINDS[check.kind],
        ok=check.ok,
        checked_at=protos.ts(check.checked_at),
        latency=protos.duration(check.latency),
        error=protos.failure_to_proto(check.failure),
        status_after=protos.status_to_proto(check.status_after),  # type: ignore[arg-type]
    )


def change_pb(change: StatusChange) -> health_pb2.StatusChange:
    return health_pb2.StatusChange(
        previous_status=protos.status_to_proto(change.previous_status),  # type: ignore[arg-type]
        status=protos.status_to_proto(change.status),  # type: ignore[arg-type]
        reason=change.reason,
        category=protos.category_to_proto(change.category),  # type: ignore[arg-type]
        source=change.source,
        occurred_at=protos.ts(change.occurred_at),
    )


def notification_pb(n: Notification) -> health_pb2.Notification:
    return health_pb2.Notification(
        id=n.id,
        tenant_id=n.tenant_id,
        alert_id=n.alert_id,
        kind=protos.kind_to_proto(n.kind),  # type: ignore[arg-type]
        severity=int(n.severity),  # type: ignore[arg-type]
        alert_state=protos.alert_state_to_proto(n.alert_state),  # type: ignore[arg-type]
        title=n.title,
        message=n.message,
        platform=n.platform,
        connection_id=n.connection_id,
        action_url=n.action_url,
        created_at=protos.ts(n.created_at),
        read_at=protos.ts(n.read_at),
        read_by=n.read_by,
    )


def _metric(series: Series) -> health_pb2.Metric:
    return health_pb2.Metric(
        current=series.current,
        points=[health_pb2.Point(time=protos.ts(t), value=v) for t, v in series.points],
    )


def dashboard_pb(data: DashboardData) -> health_pb2.GetDashboardResponse:
    t = data.token_health
    q = data.queue_health
    return health_pb2.GetDashboardResponse(
        generated_at=protos.ts(data.generated_at),
        timeframe=protos.duration(data.timeframe),
        resolution=protos.duration(data.resolution),
        token_health=health_pb2.TokenHealth(
            total=_metric(t["total"]),
            healthy=_metric(t["healthy"]),
            expiring_within_7d=_metric(t["expiring_7d"]),
            expiring_within_24h=_metric(t["expiring_24h"]),
            failed_refreshes_24h=_metric(t["failed_refreshes_24h"]),
            attention=_metric(t["attention"]),
            revoked=_metric(t["revoked"]),
        ),
        api_performance=[
            health_pb2.PlatformPerformance(
                platform=p.platform,
                request_count=_metric(p.request_count),
                success_rate_percent=_metric(p.success_rate_percent),
                p50_latency_ms=_metric(p.p50_latency_ms),
                p95_latency_ms=_metric(p.p95_latency_ms),
            )
            for p in data.api_performance
        ],
        error_distribution=[
            health_pb2.ErrorDistribution(
                platform=e.platform,
                unauthorized=_metric(e.unauthorized),
                rate_limited=_metric(e.rate_limited),
                server_errors=_metric(e.server_errors),
                timeouts=_metric(e.timeouts),
                other_client_errors=_metric(e.other_client_errors),
            )
            for e in data.error_distribution
        ],
        queue_health=health_pb2.QueueHealth(
            pending=_metric(q["pending"]),
            published_24h=_metric(q["published_24h"]),
            failed_24h=_metric(q["failed_24h"]),
            dlq_size=_metric(q["dlq_size"]),
            dispatch_lag_p99_ms=_metric(q["dispatch_lag_p99_ms"]),
        ),
    )


def _hint(url: str) -> str:
    if not url:
        return ""
    head = url.split("/services/", 1)[0]
    return head + "/services/…" if "/services/" in url else url[:24] + "…"


class ConnectionHealthServicer(health_pb2_grpc.ConnectionHealthServiceServicer):
    def __init__(
        self,
        store: PostgresStore,
        monitor: ConnectionMonitor,
        playbook: Playbook,
        dashboard: Dashboard,
        rules: PlatformRules,
        *,
        clock: Clock,
        allow_http_slack: bool = False,
    ) -> None:
        self._store = store
        self._monitor = monitor
        self._playbook = playbook
        self._dashboard = dashboard
        self._rules = rules
        self._clock = clock
        self._allow_http_slack = allow_http_slack

    @map_domain_errors
    async def GetDashboard(
        self, request: health_pb2.GetDashboardRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.GetDashboardResponse:
        tenant = _tenant(request.tenant_id, allow_all=True)
        query = Dashboard.query(
            tenant,
            protos.from_duration(request.timeframe, request.HasField("timeframe")),
            protos.from_duration(request.resolution, request.HasField("resolution")),
            list(request.platforms),
            self._clock(),
        )
        return dashboard_pb(await self._dashboard.build(query))

    @map_domain_errors
    async def GetConnectionHealth(
        self, request: health_pb2.GetConnectionHealthRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.GetConnectionHealthResponse:
        tenant = _tenant(request.tenant_id)
        watch = await self._store.get_watch(request.connection_id, tenant)
        if watch is None:
            raise errors.NotFound("No such connection.", code="connection_not_found")
        history = await self._store.history(
            tenant, watch.connection_id, request.history_limit or 20
        )
        checks = await self._store.list_checks(
            CheckQuery(tenant, connection_id=watch.connection_id), request.checks_limit or 10, None
        )
        now = self._clock()
        rule = self._rules.for_platform(watch.platform)
        outlook = forecast(watch, rule, now)
        reconnect = ""
        if outlook.needs_person_at is not None and watch.status is not Status.DISCONNECTED:
            reconnect = await self._playbook.reconnect_url(watch)
        return health_pb2.GetConnectionHealthResponse(
            health=health_pb2.ConnectionHealth(
                connection_id=watch.connection_id,
                tenant_id=watch.tenant_id,
                platform=watch.platform,
                account_name=watch.account_name,
                status=protos.status_to_proto(watch.status),  # type: ignore[arg-type]
                status_reason=watch.status_reason,
                status_since=protos.ts(watch.status_since),
                history=[change_pb(c) for c in history],
                recent_checks=[check_pb(c) for c in checks],
                forecast=health_pb2.Forecast(
                    needs_person_at=protos.ts(outlook.needs_person_at),
                    explanation=outlook.explanation,
                    reason_code=outlook.reason_code,
                    next_refresh_at=protos.ts(outlook.next_refresh_at),
                    reconnect_url=reconnect,
                ),
                consecutive_failures=watch.consecutive_failures,
                expires_at=protos.ts(watch.expires_at),
                refresh_expires_at=protos.ts(watch.refresh_expires_at),
                last_refreshed_at=protos.ts(watch.last_refreshed_at),
                next_check_at=protos.ts(watch.next_check_at),
                publishing_paused=watch.status.publishing_paused,
            )
        )

    @map_domain_errors
    async def ListHealthChecks(
        self, request: health_pb2.ListHealthChecksRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.ListHealthChecksResponse:
        tenant = _tenant(request.tenant_id, allow_all=True)
        if (
            request.connection_id
            and tenant
            and await self._store.get_watch(request.connection_id, tenant) is None
        ):
            raise errors.NotFound("No such connection.", code="connection_not_found")
        since, until = _window(request.checked_window, request.HasField("checked_window"))
        query = CheckQuery(
            tenant,
            connection_id=request.connection_id,
            platform=request.platform,
            failures_only=request.failures_only,
            since=since,
            until=until,
        )
        size = _page_size(request.page_size)
        filters = _fingerprint(query)
        rows = await self._store.list_checks(query, size + 1, _after(request.page_token, filters))
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _token((rows[-1].checked_at, rows[-1].id), filters)
        return health_pb2.ListHealthChecksResponse(
            checks=[check_pb(c) for c in rows], next_page_token=token
        )

    @map_domain_errors
    async def RunCheckNow(
        self, request: health_pb2.RunCheckNowRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.RunCheckNowResponse:
        tenant = _tenant(request.tenant_id)
        if not request.connection_id:
            raise errors.InvalidArgument("connection_id is required", field="connection_id")
        result = await self._monitor.run_check_now(
            tenant,
            request.connection_id,
            refresh=request.refresh,
            requested_by=request.requested_by or "unknown",
        )
        return health_pb2.RunCheckNowResponse(
            check=check_pb(result.check),
            refreshed=result.refreshed,
            status=protos.status_to_proto(result.status),  # type: ignore[arg-type]
            status_reason=result.status_reason,
        )

    @map_domain_errors
    async def ListNotifications(
        self, request: health_pb2.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.ListNotificationsResponse:
        tenant = _tenant(request.tenant_id)
        size = _page_size(request.page_size)
        filters = _fingerprint(tenant, request.unread_only)
        rows, unread = await self._store.list_notifications(
            tenant, request.unread_only, size + 1, _after(request.page_token, filters)
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _token((rows[-1].created_at, rows[-1].id), filters)
        return health_pb2.ListNotificationsResponse(
            notifications=[notification_pb(n) for n in rows],
            next_page_token=token,
            unread_count=unread,
        )

    @map_domain_errors
    async def MarkNotificationRead(
        self, request: health_pb2.MarkNotificationReadRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.MarkNotificationReadResponse:
        tenant = _tenant(request.tenant_id)
        ids = list(request.notification_ids)
        if not ids and not request.all:
            raise errors.InvalidArgument(
                "give notification_ids or set all", field="notification_ids"
            )
        for value in ids:
            if not _is_uuid(value):
                raise errors.NotFound("No such notification.", code="notification_not_found")
        try:
            marked = await self._store.mark_read(
                tenant, ids, request.all, request.read_by, self._clock()
            )
        except LookupError as exc:
            raise errors.NotFound(
                "No such notification; nothing was marked.", code="notification_not_found"
            ) from exc
        return health_pb2.MarkNotificationReadResponse(marked_count=marked)

    @map_domain_errors
    async def ListAlerts(
        self, request: health_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.ListAlertsResponse:
        tenant = _tenant(request.tenant_id, allow_all=True)
        states = [s for s in (protos.alert_state_from_proto(v) for v in request.states) if s]
        kinds = [protos.kind_from_proto(v) for v in request.kinds]
        since, until = _window(request.started_window, request.HasField("started_window"))
        size = _page_size(request.page_size)
        filters = _fingerprint(tenant, states, kinds, request.platform, since, until)
        rows = await self._store.list_alerts(
            tenant_id=tenant,
            states=states,
            kinds=[k for k in kinds if k is not AlertKind.UNKNOWN],
            platform=request.platform,
            since=since,
            until=until,
            limit=size + 1,
            after=_after(request.page_token, filters),
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = _token((rows[-1].started_at, rows[-1].alert_id), filters)
        return health_pb2.ListAlertsResponse(
            alerts=[protos.alert_to_proto(a) for a in rows], next_page_token=token
        )

    @map_domain_errors
    async def GetNotificationSettings(
        self,
        request: health_pb2.GetNotificationSettingsRequest,
        context: grpc.aio.ServicerContext,
    ) -> health_pb2.GetNotificationSettingsResponse:
        routes = await self._store.routes(_tenant(request.tenant_id))
        return health_pb2.GetNotificationSettingsResponse(settings=_settings_pb(routes))

    @map_domain_errors
    async def UpdateNotificationSettings(
        self,
        request: health_pb2.UpdateNotificationSettingsRequest,
        context: grpc.aio.ServicerContext,
    ) -> health_pb2.UpdateNotificationSettingsResponse:
        tenant = _tenant(request.tenant_id)
        emails = tuple(e.strip() for e in request.email_recipients if e.strip())
        for i, email in enumerate(emails):
            if not _EMAIL.match(email):
                raise errors.InvalidArgument("not an email address", field=f"email_recipients[{i}]")
        current = await self._store.routes(tenant)
        url = current.slack_webhook_url
        if request.clear_slack_webhook:
            url = ""
        elif request.slack_webhook_url:
            url = request.slack_webhook_url.strip()
            if not (
                url.startswith("https://") or (self._allow_http_slack and url.startswith("http://"))
            ):
                raise errors.InvalidArgument(
                    "the Slack webhook URL must be https", field="slack_webhook_url"
                )
        severity = Severity(request.min_severity) if request.min_severity else Severity.INFO
        routes = NotificationRoutes(tenant, emails, url, severity)
        await self._store.set_routes(routes)
        return health_pb2.UpdateNotificationSettingsResponse(settings=_settings_pb(routes))


def _settings_pb(routes: NotificationRoutes) -> health_pb2.NotificationSettings:
    return health_pb2.NotificationSettings(
        tenant_id=routes.tenant_id,
        email_recipients=list(routes.emails),
        slack_configured=bool(routes.slack_webhook_url),
        slack_webhook_hint=_hint(routes.slack_webhook_url),
        min_severity=int(routes.min_severity),  # type: ignore[arg-type]
    )


def _is_uuid(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F-]{36}", value))
