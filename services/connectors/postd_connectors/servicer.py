"""gRPC servicer of postd.connectors.v1.ConnectorsService: proto in, domain call,
proto out. Domain errors become status codes through ``map_domain_errors``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from opentelemetry import trace

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd.connectors.v1 import connectors_pb2_grpc
from postd_common import identity
from postd_common.errors import InvalidArgument
from postd_common.grpcutil import AccessPolicy, map_domain_errors
from postd_connectors import convert
from postd_connectors.domain.model import ConnectionStatus
from postd_connectors.domain.service import (
    ConnectorsService,
    RefreshOutcome,
    ValidationTarget,
)
from postd_connectors.platforms.base import MatchKind, PublishState

SERVICE = "postd.connectors.v1.ConnectorsService"
tracer = trace.get_tracer("postd_connectors")


def _m(name: str) -> str:
    return f"/{SERVICE}/{name}"


GATEWAY = frozenset({"gateway"})
POLICY = AccessPolicy(
    methods={
        _m("StartAuth"): GATEWAY,
        _m("CompleteAuth"): GATEWAY,
        _m("ListConnections"): frozenset({"gateway", "health", "publisher"}),
        _m("GetConnection"): frozenset({"gateway", "health", "publisher", "webhook-router"}),
        _m("RefreshConnection"): frozenset({"gateway", "health"}),
        _m("DisconnectConnection"): GATEWAY,
        _m("CheckConnection"): frozenset({"gateway", "health"}),
        _m("GetCapabilities"): frozenset({"gateway", "publisher"}),
        _m("ValidatePost"): frozenset({"gateway", "publisher"}),
        _m("PublishPost"): frozenset({"publisher"}),
        _m("FindPost"): frozenset({"publisher", "gateway"}),
        _m("DeletePost"): frozenset({"publisher", "gateway"}),
        _m("GetPostAnalytics"): frozenset({"gateway", "health", "publisher"}),
        _m("GetAccountAnalytics"): frozenset({"gateway", "publisher"}),
        _m("ResolveAccount"): frozenset({"webhook-router"}),
        _m("ListConnectionAudit"): frozenset({"gateway", "health"}),
        _m("ListExpiringConnections"): frozenset({"health"}),
        _m("UpdateConnectionStatus"): frozenset({"health"}),
        _m("ListReviews"): GATEWAY,
        _m("ReplyToReview"): GATEWAY,
    },
    # Anything not listed (a method added later) is refused until it is listed.
    default=frozenset(),
)

_REFRESH = {
    RefreshOutcome.REFRESHED: pb.REFRESH_OUTCOME_REFRESHED,
    RefreshOutcome.NOT_DUE: pb.REFRESH_OUTCOME_NOT_DUE,
    RefreshOutcome.CHECKED: pb.REFRESH_OUTCOME_CHECKED,
    RefreshOutcome.FAILED: pb.REFRESH_OUTCOME_FAILED,
}
_PUBLISH = {
    "published": pb.PUBLISH_STATUS_PUBLISHED,
    "processing": pb.PUBLISH_STATUS_PROCESSING,
    "failed": pb.PUBLISH_STATUS_FAILED,
}


def _actor(default: str = "") -> str:
    caller = identity.caller()
    return f"service:{caller}" if caller else default or "service:unknown"


def _statuses(values: list[int]) -> list[ConnectionStatus]:
    return [s for v in values if (s := convert.status_from_proto(v)) is not None]


class ConnectorsServicer(connectors_pb2_grpc.ConnectorsServiceServicer):
    def __init__(self, service: ConnectorsService) -> None:
        self.service = service

    @map_domain_errors
    async def StartAuth(
        self, request: pb.StartAuthRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartAuthResponse:
        start = await self.service.start_auth(
            tenant_id=request.tenant_id,
            user_id=request.user_id,
            platform=request.platform,
            capabilities=list(request.capabilities),
            redirect_uri=request.redirect_uri,
            reconnect_connection_id=request.reconnect_connection_id,
            return_url=request.return_url,
        )
        return pb.StartAuthResponse(
            authorize_url=start.authorize_url,
            state=start.state,
            expires_at=convert.ts(start.expires_at),
            requested_scopes=list(start.requested_scopes),
        )

    @map_domain_errors
    async def CompleteAuth(
        self, request: pb.CompleteAuthRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteAuthResponse:
        result = await self.service.complete_auth(
            tenant_id=request.tenant_id,
            platform=request.platform,
            state=request.state,
            code=request.code,
            error=request.error,
            error_description=request.error_description,
            params=dict(request.params),
        )
        return pb.CompleteAuthResponse(
            tenant_id=result.tenant_id,
            user_id=result.user_id,
            connections=[
                pb.AuthorizedConnection(
                    connection=convert.connection_to_proto(c.connection), created=c.created
                )
                for c in result.connections
            ],
            granted_scopes=list(result.granted_scopes),
            missing_scopes=list(result.missing_scopes),
            return_url=result.return_url,
        )

    @map_domain_errors
    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionsResponse:
        page = await self.service.list_connections(
            request.tenant_id,
            platforms=list(request.platforms),
            statuses=_statuses(list(request.statuses)),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListConnectionsResponse(
            connections=[convert.connection_to_proto(c) for c in page.items],
            next_page_token=page.next_token,
        )

    @map_domain_errors
    async def GetConnection(
        self, request: pb.GetConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConnectionResponse:
        found = await self.service.get_connection(request.tenant_id, request.connection_id)
        return pb.GetConnectionResponse(connection=convert.connection_to_proto(found))

    @map_domain_errors
    async def RefreshConnection(
        self, request: pb.RefreshConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshConnectionResponse:
        result = await self.service.refresh(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            force=request.force,
            reason=request.reason,
            actor=_actor(),
        )
        reply = pb.RefreshConnectionResponse(
            outcome=_REFRESH[result.outcome],
            connection=convert.connection_to_proto(result.connection),
            joined_in_flight=result.joined_in_flight,
        )
        if result.error is not None:
            reply.error.CopyFrom(convert.error_to_proto(result.error))
        if result.check is not None:
            reply.check.CopyFrom(
                convert.health_to_proto(result.connection.id, result.check, datetime.now(UTC))
            )
        return reply

    @map_domain_errors
    async def DisconnectConnection(
        self, request: pb.DisconnectConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisconnectConnectionResponse:
        result = await self.service.disconnect(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            revoke_at_platform=request.revoke_at_platform,
            reason=request.reason,
            actor=_actor(),
        )
        return pb.DisconnectConnectionResponse(
            connection=convert.connection_to_proto(result.connection),
            shredded_count=result.shredded,
            revoked_at_platform=result.revoked_at_platform,
        )

    @map_domain_errors
    async def CheckConnection(
        self, request: pb.CheckConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckConnectionResponse:
        started = datetime.now(UTC)
        result = await self.service.check(request.tenant_id, request.connection_id)
        return pb.CheckConnectionResponse(
            result=convert.health_to_proto(request.connection_id, result, started)
        )

    @map_domain_errors
    async def GetCapabilities(
        self, request: pb.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCapabilitiesResponse:
        found = await self.service.get_capabilities(
            request.tenant_id, list(request.platforms), request.connection_id
        )
        return pb.GetCapabilitiesResponse(
            platforms=[convert.capabilities_to_proto(c) for c in found]
        )

    @map_domain_errors
    async def ValidatePost(
        self, request: pb.ValidatePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidatePostResponse:
        targets = [
            ValidationTarget(
                connection_id=t.connection_id,
                platform=t.platform,
                content=convert.content_from_proto(t.content)
                if convert.has_content(t.content)
                else None,
            )
            for t in request.targets
        ]
        reports = await self.service.validate_post(
            request.tenant_id, targets, convert.content_from_proto(request.content)
        )
        return pb.ValidatePostResponse(
            report=common_pb2.ValidationReport(
                valid=all(r.valid for r in reports),
                targets=[
                    common_pb2.TargetValidation(
                        connection_id=r.connection_id,
                        platform=r.platform,
                        valid=r.valid,
                        violations=[convert.violation_to_proto(v) for v in r.violations],
                    )
                    for r in reports
                ],
            )
        )

    @map_domain_errors
    async def PublishPost(
        self, request: pb.PublishPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishPostResponse:
        # The domain adds the platform (postd.platform) once it has the connection.
        with tracer.start_as_current_span(
            "connectors.publish",
            attributes={
                "postd.tenant_id": request.tenant_id,
                "postd.connection_id": request.connection_id,
                "postd.job_id": request.job_id,
                "postd.attempt": request.attempt,
            },
            record_exception=False,
        ) as span:
            result = await self.service.publish(
                tenant_id=request.tenant_id,
                connection_id=request.connection_id,
                idempotency_key=request.idempotency_key,
                content=convert.content_from_proto(request.content),
                attempt=request.attempt,
                job_id=request.job_id,
            )
            span.set_attribute("postd.outcome", result.status)
        reply = pb.PublishPostResponse(
            status=_PUBLISH[result.status],
            platform_post_id=result.platform_post_id,
            url=result.url,
            usage=[convert.usage_to_proto(u) for u in result.usage],
            reconciled=result.reconciled,
            content_fingerprint=result.fingerprint,
            platform_latency=convert.duration(result.platform_latency),
        )
        if result.error is not None:
            reply.error.CopyFrom(convert.error_to_proto(result.error))
        stamp = convert.ts(result.published_at)
        if stamp is not None:
            reply.published_at.CopyFrom(stamp)
        return reply

    @map_domain_errors
    async def FindPost(
        self, request: pb.FindPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindPostResponse:
        window = request.window
        result = await self.service.find_post(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            idempotency_key=request.idempotency_key,
            fingerprint=request.content_fingerprint,
            content=convert.content_from_proto(request.content)
            if convert.has_content(request.content)
            else None,
            since=convert.dt(window.start_time) if window.HasField("start_time") else None,
            until=convert.dt(window.end_time) if window.HasField("end_time") else None,
        )
        reply = pb.FindPostResponse(found=result.found, lookup_supported=result.lookup_supported)
        if result.post is not None:
            post = result.post
            reply.platform_post_id = post.platform_post_id
            reply.url = post.url
            reply.status = (
                pb.PUBLISH_STATUS_PUBLISHED
                if post.state is PublishState.PUBLISHED
                else pb.PUBLISH_STATUS_PROCESSING
            )
            reply.matched_by = (
                pb.POST_MATCH_IDEMPOTENCY_KEY
                if post.matched_by is MatchKind.IDEMPOTENCY_KEY
                else pb.POST_MATCH_CONTENT_FINGERPRINT
            )
            stamp = convert.ts(post.published_at)
            if stamp is not None:
                reply.published_at.CopyFrom(stamp)
        if result.error is not None:
            reply.error.CopyFrom(convert.error_to_proto(result.error))
        return reply

    @map_domain_errors
    async def DeletePost(
        self, request: pb.DeletePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePostResponse:
        deleted, error = await self.service.delete_post(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            platform_post_id=request.platform_post_id,
        )
        reply = pb.DeletePostResponse(deleted=deleted)
        if error is not None:
            reply.error.CopyFrom(convert.error_to_proto(error))
        return reply

    @map_domain_errors
    async def GetPostAnalytics(
        self, request: pb.GetPostAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPostAnalyticsResponse:
        fetched = datetime.now(UTC)
        results = await self.service.analytics(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            post_ids=list(request.platform_post_ids),
        )
        posts = []
        for item in results:
            entry = pb.PostAnalytics(
                platform_post_id=item.platform_post_id, fetched_at=convert.ts(fetched)
            )
            if item.metrics is not None:
                entry.metrics.CopyFrom(convert.metrics_to_proto(item.metrics))
            if item.error is not None:
                entry.error.CopyFrom(convert.error_to_proto(item.error))
            posts.append(entry)
        return pb.GetPostAnalyticsResponse(posts=posts)

    @map_domain_errors
    async def GetAccountAnalytics(
        self, request: pb.GetAccountAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAccountAnalyticsResponse:
        fetched = datetime.now(UTC)
        until = fetched.date()
        since = until - timedelta(days=1)
        if request.HasField("window"):
            if request.window.HasField("start_time"):
                since = request.window.start_time.ToDatetime().date()
            if request.window.HasField("end_time"):
                # The end is exclusive: the last day is the one before it.
                end = request.window.end_time.ToDatetime()
                until = (end - timedelta(microseconds=1)).date()
        figures, error = await self.service.account_analytics(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            since=since,
            until=until,
        )
        reply = pb.GetAccountAnalyticsResponse(
            days=[
                pb.AccountDay(date=d.day.isoformat(), metrics=convert.metrics_to_proto(d.metrics))
                for d in figures.days
            ],
            totals=dict(figures.totals),
            fetched_at=convert.ts(fetched),
        )
        if error is not None:
            reply.error.CopyFrom(convert.error_to_proto(error))
        return reply

    @map_domain_errors
    async def ResolveAccount(
        self, request: pb.ResolveAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveAccountResponse:
        found = await self.service.resolve_account(
            request.platform,
            request.external_account_id,
            include_disconnected=request.include_disconnected,
        )
        return pb.ResolveAccountResponse(
            matches=[
                pb.AccountMatch(
                    tenant_id=c.tenant_id,
                    connection_id=c.id,
                    status=convert.status_to_proto(c.status),
                )
                for c in found
            ]
        )

    @map_domain_errors
    async def ListConnectionAudit(
        self, request: pb.ListConnectionAuditRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionAuditResponse:
        page = await self.service.list_audit(
            request.tenant_id,
            request.connection_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListConnectionAuditResponse(
            entries=[convert.audit_to_proto(e) for e in page.entries],
            next_page_token=page.next_token,
        )

    @map_domain_errors
    async def ListExpiringConnections(
        self, request: pb.ListExpiringConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExpiringConnectionsResponse:
        before = (
            convert.dt(request.expires_before)
            if request.HasField("expires_before")
            else datetime.now(UTC)
        )
        page = await self.service.list_expiring(
            request.tenant_id,
            before=before,
            platforms=list(request.platforms),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListExpiringConnectionsResponse(
            connections=[convert.connection_to_proto(c) for c in page.items],
            next_page_token=page.next_token,
        )

    @map_domain_errors
    async def UpdateConnectionStatus(
        self, request: pb.UpdateConnectionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConnectionStatusResponse:
        status = convert.status_from_proto(request.status)
        if status is None:
            raise InvalidArgument("status is required", field="status")
        result = await self.service.update_status(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            status=status,
            reason=request.reason,
            source=request.source,
            actor=_actor(),
            category=convert.category_from_proto(request.category),
            error=convert.error_from_proto(request.error) if request.HasField("error") else None,
            expected_status=convert.status_from_proto(request.expected_status),
        )
        return pb.UpdateConnectionStatusResponse(
            connection=convert.connection_to_proto(result.connection),
            previous_status=convert.status_to_proto(result.previous),
            changed=result.changed,
        )

    @map_domain_errors
    async def ListReviews(
        self, request: pb.ListReviewsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReviewsResponse:
        page = await self.service.list_reviews(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            page_token=request.page_token,
        )
        reply = pb.ListReviewsResponse(
            reviews=[
                pb.Review(
                    review_id=r.review_id,
                    reviewer=r.reviewer,
                    star_rating=r.star_rating,
                    comment=r.comment,
                    create_time=convert.ts(r.created_at),
                    reply=r.reply,
                )
                for r in page.reviews
            ],
            next_page_token=page.next_page_token,
            average_rating=page.average_rating,
        )
        if page.error is not None:
            reply.error.CopyFrom(convert.error_to_proto(page.error))
        return reply

    @map_domain_errors
    async def ReplyToReview(
        self, request: pb.ReplyToReviewRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplyToReviewResponse:
        error = await self.service.reply_to_review(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            review_id=request.review_id,
            comment=request.comment,
        )
        reply = pb.ReplyToReviewResponse(replied=error is None)
        if error is not None:
            reply.error.CopyFrom(convert.error_to_proto(error))
        return reply


def register(servicer: ConnectorsServicer) -> Callable[[grpc.aio.Server], None]:
    def add(server: grpc.aio.Server) -> None:
        connectors_pb2_grpc.add_ConnectorsServiceServicer_to_server(servicer, server)

    return add
