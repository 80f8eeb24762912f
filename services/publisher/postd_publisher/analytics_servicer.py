"""``postd.publisher.v1.AnalyticsService``: proto in, report calls, proto out.

Domain errors become status codes here only (``map_domain_errors``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from postd.publisher.v1 import analytics_pb2 as pb
from postd.publisher.v1.analytics_pb2_grpc import (
    AnalyticsServiceServicer,
    add_AnalyticsServiceServicer_to_server,
)
from postd_common.grpcutil import map_domain_errors
from postd_publisher.domain.analytics import ROLLUP_METRICS, Figures
from postd_publisher.domain.insights import Insight
from postd_publisher.domain.reports import (
    AnalyticsReports,
    CollectionStatus,
    Filters,
    RollupRow,
    TargetFigures,
    total_of,
)

ANALYTICS_SERVICE = "postd.publisher.v1.AnalyticsService"

_GRANULARITY = {
    pb.GRANULARITY_UNSPECIFIED: "",
    pb.GRANULARITY_DAY: "day",
    pb.GRANULARITY_WEEK: "week",
    pb.GRANULARITY_MONTH: "month",
}
_DIMENSION = {
    pb.DIMENSION_PLATFORM: "platform",
    pb.DIMENSION_CONNECTION: "connection",
    pb.DIMENSION_CONTENT_TYPE: "content_type",
}


def _ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def metrics_proto(figures: Figures | None, posts: int = 0) -> pb.Metrics:
    message = pb.Metrics(posts=posts)
    if figures is not None:
        target: Any = message  # optional fields set by name
        for name in ROLLUP_METRICS:
            value = figures.value(name)
            if value is not None:
                setattr(target, name, value)
    return message


def row_proto(row: RollupRow) -> pb.AnalyticsRow:
    return pb.AnalyticsRow(
        period=row.period.isoformat() if row.period is not None else "",
        platform=row.platform,
        connection_id=row.connection_id,
        content_type=row.content_type,
        metrics=metrics_proto(row.figures, row.posts),
    )


def collection_proto(status: CollectionStatus | None) -> pb.Collection | None:
    if status is None:
        return None
    return pb.Collection(
        state=status.state,
        reason=status.reason,
        next_at=_ts(status.next_at),
        last_collected_at=_ts(status.last_collected_at),
        collections=status.collections,
        dead_letters=status.dead_letters,
    )


def target_proto(target: TargetFigures) -> pb.TargetAnalytics:
    return pb.TargetAnalytics(
        job_id=target.job_id,
        connection_id=target.connection_id,
        platform=target.platform,
        platform_post_id=target.platform_post_id,
        content_type=target.content_type,
        published_at=_ts(target.published_at),
        latest=metrics_proto(target.latest),
        breakdown=dict(target.latest.breakdown),
        snapshots=[
            pb.Snapshot(taken_at=_ts(at), metrics=metrics_proto(figures))
            for at, figures in target.snapshots
        ],
        collection=collection_proto(target.collection),
    )


def _finite(value: float) -> float:
    # JSON has no infinity: a ratio over a zero baseline is reported as 0 (unknown).
    return value if math.isfinite(value) else 0.0


def insight_proto(insight: Insight) -> pb.Insight:
    return pb.Insight(
        kind=pb.InsightKind.Value(f"INSIGHT_KIND_{insight.kind.value}"),
        verdict=pb.Verdict.Value(f"VERDICT_{insight.verdict.value}"),
        platform=insight.platform,
        connection_id=insight.connection_id,
        post_id=insight.post_id,
        metric=insight.metric,
        summary=insight.summary,
        subject=insight.subject,
        baseline=insight.baseline,
        n=insight.n,
        baseline_n=insight.baseline_n,
        ratio=_finite(insight.ratio),
        ci_low=_finite(insight.ci_low),
        ci_high=_finite(insight.ci_high),
        p_value=insight.p_value,
        confidence=insight.confidence,
        method=insight.method,
    )


def _names(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(v for v in values if v)


class AnalyticsServicer(AnalyticsServiceServicer):
    def __init__(self, reports: AnalyticsReports) -> None:
        self.reports = reports

    @map_domain_errors
    async def QueryAnalytics(
        self, request: pb.QueryAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryAnalyticsResponse:
        report = await self.reports.query(
            request.tenant_id,
            time_zone=request.time_zone,
            from_date=request.from_date,
            to_date=request.to_date,
            granularity=_GRANULARITY.get(request.granularity, "?"),
            group_by=[_DIMENSION.get(d, "?") for d in request.group_by],
            filters=Filters(
                platforms=_names(request.platforms),
                connection_ids=_names(request.connection_ids),
                content_types=_names(request.content_types),
            ),
        )
        return pb.QueryAnalyticsResponse(
            rows=[row_proto(r) for r in report.rows],
            totals=metrics_proto(report.totals.figures, report.totals.posts),
            time_zone=report.range.zone_name,
            from_date=report.range.first.isoformat(),
            to_date=report.range.last.isoformat(),
            source=report.source,
        )

    @map_domain_errors
    async def GetPostAnalytics(
        self, request: pb.GetPostAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPostAnalyticsResponse:
        targets = await self.reports.post(request.tenant_id, request.post_id)
        totals = total_of(
            [RollupRow(None, "", "", "", 0, t.latest) for t in targets if t.collection.collections]
        )
        return pb.GetPostAnalyticsResponse(
            post_id=request.post_id,
            targets=[target_proto(t) for t in targets],
            totals=metrics_proto(totals.figures, 1 if targets else 0),
        )

    @map_domain_errors
    async def GetConnectionAnalytics(
        self, request: pb.GetConnectionAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConnectionAnalyticsResponse:
        report = await self.reports.connection(
            request.tenant_id,
            request.connection_id,
            time_zone=request.time_zone,
            from_date=request.from_date,
            to_date=request.to_date,
        )
        account = report.account
        return pb.GetConnectionAnalyticsResponse(
            connection_id=report.connection_id,
            platform=account.platform or (report.top_posts[0].platform if report.top_posts else ""),
            account_days=[
                pb.AccountDayFigures(date=day.isoformat(), metrics=metrics_proto(figures))
                for day, figures in account.days
            ],
            totals=dict(account.totals),
            posts_by_day=[row_proto(r) for r in report.posts_by_day],
            top_posts=[
                pb.PostSummary(
                    post_id=t.post_id,
                    job_id=t.job_id,
                    platform_post_id=t.platform_post_id,
                    content_type=t.content_type,
                    published_at=_ts(t.published_at),
                    latest=metrics_proto(t.latest),
                )
                for t in report.top_posts
            ],
            collection=collection_proto(account.collection),
        )

    @map_domain_errors
    async def GetInsights(
        self, request: pb.GetInsightsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInsightsResponse:
        report = await self.reports.insights(
            request.tenant_id,
            time_zone=request.time_zone,
            days=request.days,
            platforms=_names(request.platforms),
        )
        return pb.GetInsightsResponse(
            insights=[insight_proto(i) for i in report.insights],
            time_zone=report.zone_name,
            posts_considered=report.posts_considered,
            rules=report.rules,
        )


def register_analytics(servicer: AnalyticsServicer) -> Callable[[grpc.aio.Server], None]:
    def add(server: grpc.aio.Server) -> None:
        add_AnalyticsServiceServicer_to_server(servicer, server)

    return add
