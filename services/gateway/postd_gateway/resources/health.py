"""The health dashboard, connection health, checks, alerts and notifications (health)."""

from __future__ import annotations

from typing import Any

from postd.events.v1 import alert_pb2
from postd.health.v1 import health_pb2 as hp
from postd_gateway.protojson import SchemaRegistry, to_json
from postd_gateway.resources.common import (
    call_backend,
    enum_param,
    enums,
    ok,
    page_args,
    string_param,
)
from postd_gateway.routing import (
    ID_SCHEMA,
    Answer,
    Body,
    Call,
    Param,
    Reply,
    Route,
    page,
    page_query,
    page_schema,
)


async def dashboard(call: Call) -> Reply:
    request = hp.GetDashboardRequest(
        tenant_id=call.tenant.tenant_id, platforms=call.query.get("platform", [])
    )
    request.timeframe.seconds = int(call.query.get("timeframe_hours", 24)) * 3600
    if "resolution_minutes" in call.query:
        request.resolution.seconds = int(call.query["resolution_minutes"]) * 60
    response = await call_backend(
        call,
        call.ports.backends.health.GetDashboard,
        request,
        fields={"timeframe": "timeframe_hours", "resolution": "resolution_minutes"},
    )
    return Reply(body=to_json(response))


async def connection_health(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.health.GetConnectionHealth,
        hp.GetConnectionHealthRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            history_limit=int(call.query.get("history_limit", 20)),
            checks_limit=int(call.query.get("checks_limit", 10)),
        ),
    )
    return Reply(body=to_json(response.health))


async def run_check(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.health.RunCheckNow,
        hp.RunCheckNowRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            refresh=bool(body.get("refresh", False)),
            requested_by=call.tenant.actor,
        ),
        timeout=call.ports.settings.oauth_timeout_seconds,
    )
    return Reply(body=to_json(response))


async def list_checks(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.health.ListHealthChecks,
        hp.ListHealthChecksRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.query.get("connection_id", ""),
            platform=call.query.get("platform", ""),
            failures_only=bool(call.query.get("failures_only", False)),
            **page_args(call),
        ),
    )
    return Reply(body=page([to_json(c) for c in response.checks], response.next_page_token))


async def list_notifications(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.health.ListNotifications,
        hp.ListNotificationsRequest(
            tenant_id=call.tenant.tenant_id,
            unread_only=bool(call.query.get("unread_only", False)),
            **page_args(call),
        ),
    )
    body = page([to_json(n) for n in response.notifications], response.next_page_token)
    body["unread_count"] = response.unread_count
    return Reply(body=body)


async def mark_read(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.health.MarkNotificationRead,
        hp.MarkNotificationReadRequest(
            tenant_id=call.tenant.tenant_id,
            notification_ids=body.get("ids", []),
            all=bool(body.get("all", False)),
            read_by=call.tenant.actor,
        ),
        fields={"notification_ids": "ids"},
    )
    return Reply(body=to_json(response))


async def list_alerts(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.health.ListAlerts,
        hp.ListAlertsRequest(
            tenant_id=call.tenant.tenant_id,
            states=enums(call.query.get("state"), alert_pb2.AlertState.DESCRIPTOR),
            kinds=enums(call.query.get("kind"), alert_pb2.AlertKind.DESCRIPTOR),
            platform=call.query.get("platform", ""),
            **page_args(call),
        ),
        fields={"states": "state", "kinds": "kind"},
    )
    return Reply(body=page([to_json(a) for a in response.alerts], response.next_page_token))


def routes(reg: SchemaRegistry) -> list[Route]:
    notifications_page: dict[str, Any] = page_schema(reg.ref(hp.Notification.DESCRIPTOR))
    notifications_page["required"] = [*notifications_page["required"], "unread_count"]
    notifications_page["properties"]["unread_count"] = {"type": "integer", "minimum": 0}
    ids = ID_SCHEMA
    return [
        Route(
            "GET",
            "/v1/health/dashboard",
            dashboard,
            "getHealthDashboard",
            "Health dashboard data",
            "health",
            [ok(reg, hp.GetDashboardResponse.DESCRIPTOR, "Figures now and over the timeframe.")],
            query=(
                Param(
                    "timeframe_hours",
                    {"type": "integer", "minimum": 1, "maximum": 720, "default": 24},
                    "How far back the series go.",
                ),
                Param(
                    "resolution_minutes",
                    {"type": "integer", "minimum": 1, "maximum": 43200},
                    "Bucket width (default: timeframe / 48).",
                ),
                string_param("platform", "Only these platforms.", repeated=True),
            ),
        ),
        Route(
            "GET",
            "/v1/connections/{connection_id}/health",
            connection_health,
            "getConnectionHealth",
            "A connection's health, history and forecast",
            "health",
            [ok(reg, hp.ConnectionHealth.DESCRIPTOR, "Everything health knows about it.")],
            query=(
                Param(
                    "history_limit",
                    {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
                    "Most status changes to return.",
                ),
                Param(
                    "checks_limit",
                    {"type": "integer", "minimum": 1, "maximum": 200, "default": 10},
                    "Most checks to return.",
                ),
            ),
        ),
        Route(
            "POST",
            "/v1/connections/{connection_id}/check",
            run_check,
            "runHealthCheck",
            "Run a health check now",
            "health",
            [ok(reg, hp.RunCheckNowResponse.DESCRIPTOR, "The check and the status after it.")],
            role="editor",
            body=Body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"refresh": {"type": "boolean"}},
                },
                required=False,
            ),
        ),
        Route(
            "GET",
            "/v1/health/checks",
            list_checks,
            "listHealthChecks",
            "List health checks",
            "health",
            [
                Answer(
                    200,
                    "A page of checks, newest first.",
                    page_schema(reg.ref(hp.HealthCheck.DESCRIPTOR)),
                )
            ],
            query=page_query(
                (
                    string_param("connection_id", "Only this connection."),
                    string_param("platform", "Only this platform."),
                    Param("failures_only", {"type": "boolean"}, "Only failed checks."),
                )
            ),
        ),
        Route(
            "GET",
            "/v1/alerts",
            list_alerts,
            "listAlerts",
            "List alerts",
            "health",
            [
                Answer(
                    200,
                    "A page of alerts, most recently started first.",
                    page_schema(reg.ref(alert_pb2.Alert.DESCRIPTOR)),
                )
            ],
            query=page_query(
                (
                    enum_param("state", alert_pb2.AlertState.DESCRIPTOR, "Only these states."),
                    enum_param("kind", alert_pb2.AlertKind.DESCRIPTOR, "Only these kinds."),
                    string_param("platform", "Only this platform."),
                )
            ),
        ),
        Route(
            "GET",
            "/v1/notifications",
            list_notifications,
            "listNotifications",
            "List in-app notifications",
            "notifications",
            [Answer(200, "A page of notifications, newest first.", notifications_page)],
            query=page_query((Param("unread_only", {"type": "boolean"}, "Only unread ones."),)),
        ),
        Route(
            "POST",
            "/v1/notifications/read",
            mark_read,
            "markNotificationsRead",
            "Mark notifications read",
            "notifications",
            [ok(reg, hp.MarkNotificationReadResponse.DESCRIPTOR, "How many were marked.")],
            body=Body(
                {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["ids"],
                            "properties": {
                                "ids": {
                                    "type": "array",
                                    "items": ids,
                                    "minItems": 1,
                                    "maxItems": 500,
                                }
                            },
                        },
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["all"],
                            "properties": {"all": {"const": True}},
                        },
                    ]
                },
                description="Either `ids`, or `all: true`.",
            ),
        ),
    ]
