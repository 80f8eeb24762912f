"""The ConnectorsClient port over gRPC (``postd.connectors.v1.ConnectorsService``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1.common_pb2 import (
    ConnectionStatus,
    PlatformError,
    PostContent,
    TimeRange,
    ValidationReport,
)
from postd.connectors.v1 import connectors_pb2 as pb
from postd.connectors.v1.connectors_pb2_grpc import ConnectorsServiceStub
from postd_common.errors import InvalidArgument, NotFound
from postd_publisher.domain.analytics import METRICS, Figures
from postd_publisher.domain.quota import (
    ACCOUNT_SCOPES,
    PUBLISH_LIMIT_NAMES,
    QuotaRule,
    window_words,
)
from postd_publisher.ports import (
    AccountFiguresReply,
    ConnectionGone,
    ConnectionInfo,
    ConnectorsRefused,
    ConnectorsUnavailable,
    FindQuery,
    FindReply,
    PostFiguresReply,
    PublishOutcomeUnknown,
    PublishReply,
    PublishRequest,
    TargetSpec,
    UsageReading,
)

# After these, a publish call may have reached the platform (proto contract).
_OUTCOME_UNKNOWN = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_STATUS_NAMES = {
    pb.PUBLISH_STATUS_PUBLISHED: "PUBLISHED",
    pb.PUBLISH_STATUS_PROCESSING: "PROCESSING",
    pb.PUBLISH_STATUS_FAILED: "FAILED",
}


def _ts(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


class GrpcConnectorsClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        publish_timeout: float = 30.0,
        call_timeout: float = 5.0,
    ) -> None:
        self._stub = ConnectorsServiceStub(channel)
        self._publish_timeout = publish_timeout
        self._call_timeout = call_timeout

    async def validate_post(
        self, tenant_id: str, targets: Sequence[TargetSpec], content: PostContent
    ) -> ValidationReport:
        request = pb.ValidatePostRequest(
            tenant_id=tenant_id,
            targets=[
                pb.ValidationTarget(connection_id=t.connection_id, content=t.override)
                for t in targets
            ],
            content=content,
        )
        try:
            reply = await self._stub.ValidatePost(request, timeout=self._call_timeout)
        except grpc.aio.AioRpcError as exc:
            raise _lookup_error(exc) from exc
        report: ValidationReport = reply.report
        return report

    async def get_connection(self, tenant_id: str, connection_id: str) -> ConnectionInfo:
        try:
            reply = await self._stub.GetConnection(
                pb.GetConnectionRequest(tenant_id=tenant_id, connection_id=connection_id),
                timeout=self._call_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _lookup_error(exc) from exc
        conn = reply.connection
        return ConnectionInfo(
            connection_id=conn.id or connection_id,
            platform=conn.platform,
            status=ConnectionStatus.Name(conn.status).removeprefix("CONNECTION_STATUS_"),
            account_name=conn.account_name,
        )

    async def publish_post(self, request: PublishRequest) -> PublishReply:
        message = pb.PublishPostRequest(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            idempotency_key=request.idempotency_key,
            content=request.content,
            attempt=request.attempt,
            job_id=request.job_id,
            post_id=request.post_id,
        )
        try:
            reply = await self._stub.PublishPost(message, timeout=self._publish_timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _OUTCOME_UNKNOWN:
                raise PublishOutcomeUnknown(f"connectors answered {code.name}") from exc
            if code is grpc.StatusCode.NOT_FOUND:
                raise ConnectionGone(exc.details() or "connection not found") from exc
            raise ConnectorsRefused(exc.details() or code.name) from exc
        return PublishReply(
            status=_STATUS_NAMES.get(reply.status, "FAILED"),
            platform_post_id=reply.platform_post_id,
            url=reply.url,
            error=_copy(reply.error) if reply.HasField("error") else None,
            usage=[_usage(u) for u in reply.usage],
            reconciled=reply.reconciled,
            platform_latency=(
                reply.platform_latency.ToTimedelta().total_seconds()
                if reply.HasField("platform_latency")
                else None
            ),
        )

    async def find_post(self, query: FindQuery) -> FindReply:
        message = pb.FindPostRequest(
            tenant_id=query.tenant_id,
            connection_id=query.connection_id,
            idempotency_key=query.idempotency_key,
            content=query.content,
            window=TimeRange(start_time=_ts(query.since), end_time=_ts(query.until)),
        )
        try:
            reply = await self._stub.FindPost(message, timeout=self._call_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise ConnectionGone(exc.details() or "connection not found") from exc
            raise ConnectorsUnavailable(f"FindPost failed: {exc.code().name}") from exc
        return FindReply(
            found=reply.found,
            status=_STATUS_NAMES.get(reply.status, ""),
            platform_post_id=reply.platform_post_id,
            url=reply.url,
            error=_copy(reply.error) if reply.HasField("error") else None,
            lookup_supported=reply.lookup_supported,
        )

    async def post_figures(
        self, tenant_id: str, connection_id: str, platform_post_ids: Sequence[str]
    ) -> Sequence[PostFiguresReply]:
        try:
            reply = await self._stub.GetPostAnalytics(
                pb.GetPostAnalyticsRequest(
                    tenant_id=tenant_id,
                    connection_id=connection_id,
                    platform_post_ids=list(platform_post_ids),
                ),
                timeout=self._publish_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _analytics_error(exc) from exc
        return [
            PostFiguresReply(
                platform_post_id=item.platform_post_id,
                figures=_figures(item.metrics) if item.HasField("metrics") else None,
                error=_copy(item.error) if item.HasField("error") else None,
            )
            for item in reply.posts
        ]

    async def account_figures(
        self, tenant_id: str, connection_id: str, since: date, until: date
    ) -> AccountFiguresReply:
        window = TimeRange(
            start_time=_ts(datetime.combine(since, time(), UTC)),
            end_time=_ts(datetime.combine(until, time(), UTC) + timedelta(days=1)),
        )
        try:
            reply = await self._stub.GetAccountAnalytics(
                pb.GetAccountAnalyticsRequest(
                    tenant_id=tenant_id, connection_id=connection_id, window=window
                ),
                timeout=self._publish_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _analytics_error(exc) from exc
        return AccountFiguresReply(
            days=[(date.fromisoformat(d.date), _figures(d.metrics)) for d in reply.days],
            totals=dict(reply.totals),
            error=_copy(reply.error) if reply.HasField("error") else None,
        )

    async def quota_rules(self) -> Sequence[QuotaRule]:
        try:
            reply = await self._stub.GetCapabilities(
                pb.GetCapabilitiesRequest(), timeout=self._call_timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise ConnectorsUnavailable(f"GetCapabilities failed: {exc.code().name}") from exc
        rules: list[QuotaRule] = []
        for platform in reply.platforms:
            for limit in platform.rate_limits:
                if limit.scope in ACCOUNT_SCOPES and limit.name in PUBLISH_LIMIT_NAMES:
                    window = limit.window.ToTimedelta()
                    name = platform.display_name or platform.platform
                    rules.append(
                        QuotaRule(
                            platform=platform.platform,
                            name=limit.name,
                            limit=int(limit.limit),
                            window=window,
                            description=f"{name} allows {limit.limit} posts per "
                            f"{limit.scope.replace('_', ' ')} in {window_words(window)}",
                        )
                    )
        return rules


def _figures(metrics: pb.PostMetrics) -> Figures:
    message: Any = metrics  # HasField by name, for each normalized metric
    return Figures.from_platform(
        {m: getattr(message, m) if message.HasField(m) else None for m in METRICS},
        dict(metrics.breakdown),
    )


def _analytics_error(exc: grpc.aio.AioRpcError) -> Exception:
    if exc.code() is grpc.StatusCode.NOT_FOUND:
        return ConnectionGone(exc.details() or "connection not found")
    return ConnectorsUnavailable(f"connectors answered {exc.code().name}")


def _copy(error: PlatformError) -> PlatformError:
    out = PlatformError()
    out.CopyFrom(error)
    return out


def _usage(usage: pb.RateLimitUsage) -> UsageReading:
    return UsageReading(
        name=usage.name,
        scope=usage.scope,
        remaining=usage.remaining if (usage.limit or usage.remaining) else None,
        used_percent=usage.used_percent,
        resets_at=(
            usage.resets_at.ToDatetime().replace(tzinfo=UTC)
            if usage.HasField("resets_at")
            else None
        ),
        retry_after=(
            usage.retry_after.ToTimedelta().total_seconds()
            if usage.HasField("retry_after")
            else None
        ),
    )


def _lookup_error(exc: grpc.aio.AioRpcError) -> Exception:
    code = exc.code()
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(exc.details() or "not found")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(exc.details() or "invalid request")
    return ConnectorsUnavailable(f"connectors answered {code.name}: {exc.details() or ''}".strip())
