"""Analytics: aggregated figures, one post's, one connection's, and insights
(publisher's AnalyticsService)."""

from __future__ import annotations

from typing import Any, Final

from postd.publisher.v1 import analytics_pb2 as apb
from postd_gateway.protojson import SchemaRegistry, to_json
from postd_gateway.resources.common import call_backend, ok, string_param
from postd_gateway.routing import ID_SCHEMA, Call, Param, Reply, Route

DATE: Final = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
# IANA names: "UTC", "Asia/Kolkata", "America/Argentina/Buenos_Aires", "Etc/GMT+5".
ZONE: Final = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_+/-]{0,63}$"}
GRANULARITY: Final = {
    "day": apb.GRANULARITY_DAY,
    "week": apb.GRANULARITY_WEEK,
    "month": apb.GRANULARITY_MONTH,
}
DIMENSION: Final = {
    "platform": apb.DIMENSION_PLATFORM,
    "connection": apb.DIMENSION_CONNECTION,
    "content_type": apb.DIMENSION_CONTENT_TYPE,
}
CONTENT_TYPES: Final = ["text", "image", "video", "carousel"]
# Backend field names as this route names them.
FIELDS: Final = {
    "time_zone": "time_zone",
    "from_date": "from",
    "to_date": "to",
    "group_by": "group_by",
    "content_types": "content_type",
    "days": "days",
}


def _range_params() -> tuple[Param, ...]:
    return (
        Param(
            "time_zone",
            ZONE,
            "IANA time zone of the day, week and month buckets (e.g. Asia/Kolkata); UTC by "
            "default. Daylight saving time and half-hour offsets are followed.",
        ),
        Param("from", DATE, "First local date (YYYY-MM-DD); default 29 days before `to`."),
        Param("to", DATE, "Last local date, inclusive; default today in `time_zone`."),
    )


async def query(call: Call) -> Reply:
    q = call.query
    request = apb.QueryAnalyticsRequest(
        tenant_id=call.tenant.tenant_id,
        time_zone=q.get("time_zone", ""),
        from_date=q.get("from", ""),
        to_date=q.get("to", ""),
        granularity=GRANULARITY.get(q.get("granularity", ""), apb.GRANULARITY_UNSPECIFIED),
        group_by=[DIMENSION[d] for d in q.get("group_by", [])],
        platforms=q.get("platform", []),
        connection_ids=q.get("connection_id", []),
        content_types=q.get("content_type", []),
    )
    response = await call_backend(
        call, call.ports.backends.analytics.QueryAnalytics, request, fields=FIELDS
    )
    return Reply(body=to_json(response))


async def post_analytics(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.analytics.GetPostAnalytics,
        apb.GetPostAnalyticsRequest(tenant_id=call.tenant.tenant_id, post_id=call.path["post_id"]),
    )
    return Reply(body=to_json(response))


async def connection_analytics(call: Call) -> Reply:
    q = call.query
    response = await call_backend(
        call,
        call.ports.backends.analytics.GetConnectionAnalytics,
        apb.GetConnectionAnalyticsRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            time_zone=q.get("time_zone", ""),
            from_date=q.get("from", ""),
            to_date=q.get("to", ""),
        ),
        fields=FIELDS,
    )
    return Reply(body=to_json(response))


async def insights(call: Call) -> Reply:
    q = call.query
    response = await call_backend(
        call,
        call.ports.backends.analytics.GetInsights,
        apb.GetInsightsRequest(
            tenant_id=call.tenant.tenant_id,
            time_zone=q.get("time_zone", ""),
            days=int(q.get("days", 90)),
            platforms=q.get("platform", []),
        ),
        fields=FIELDS,
    )
    return Reply(body=to_json(response))


def routes(reg: SchemaRegistry) -> list[Route]:
    group_by: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string", "enum": list(DIMENSION)},
        "maxItems": len(DIMENSION),
        "uniqueItems": True,
    }
    content_types: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string", "enum": CONTENT_TYPES},
        "maxItems": len(CONTENT_TYPES),
        "uniqueItems": True,
    }
    ids = {"type": "array", "items": ID_SCHEMA, "maxItems": 50}
    return [
        Route(
            "GET",
            "/v1/analytics",
            query,
            "queryAnalytics",
            "Aggregated analytics",
            "analytics",
            [
                ok(
                    reg,
                    apb.QueryAnalyticsResponse.DESCRIPTOR,
                    "Figures gained per bucket and group, with totals.",
                )
            ],
            query=(
                *_range_params(),
                Param(
                    "granularity",
                    {"type": "string", "enum": list(GRANULARITY)},
                    "Time buckets; none: one row for the whole range.",
                ),
                Param(
                    "group_by",
                    group_by,
                    "Group by platform, connection and/or content type. Repeat for several.",
                    repeated=True,
                ),
                string_param("platform", "Only these platforms.", repeated=True),
                Param(
                    "connection_id",
                    ids,
                    "Only these connections. Repeat for several.",
                    repeated=True,
                ),
                Param(
                    "content_type",
                    content_types,
                    "Only these content types. Repeat for several.",
                    repeated=True,
                ),
            ),
            description="Figures are what the platforms counted in each bucket (deltas "
            "between a post's snapshots), from rollups kept as snapshots arrive: reach is "
            "summed over posts, not de-duplicated. Definitions per platform: "
            "docs/analytics-metrics.md.",
        ),
        Route(
            "GET",
            "/v1/analytics/insights",
            insights,
            "getAnalyticsInsights",
            "Insights from your own history",
            "analytics",
            [
                ok(
                    reg,
                    apb.GetInsightsResponse.DESCRIPTOR,
                    "Findings first, each with its sample sizes and confidence.",
                )
            ],
            query=(
                _range_params()[0],
                Param(
                    "days",
                    {"type": "integer", "minimum": 1, "maximum": 365, "default": 90},
                    "Posts published in the last this many days.",
                ),
                string_param("platform", "Only these platforms.", repeated=True),
            ),
            description="Best hours to post, content types that do better, week-over-week "
            "changes and standout posts, each tested (Mann-Whitney U, Welch) with its n, "
            "interval and p-value; too little data is reported as such, never guessed.",
        ),
        Route(
            "GET",
            "/v1/posts/{post_id}/analytics",
            post_analytics,
            "getPostAnalytics",
            "A post's analytics",
            "analytics",
            [
                ok(
                    reg,
                    apb.GetPostAnalyticsResponse.DESCRIPTOR,
                    "Per target: the latest figures and every snapshot.",
                )
            ],
        ),
        Route(
            "GET",
            "/v1/connections/{connection_id}/analytics",
            connection_analytics,
            "getConnectionAnalytics",
            "A connection's analytics",
            "analytics",
            [
                ok(
                    reg,
                    apb.GetConnectionAnalyticsResponse.DESCRIPTOR,
                    "The account's own daily figures, its posts' by day, its best posts.",
                )
            ],
            query=_range_params(),
        ),
    ]
