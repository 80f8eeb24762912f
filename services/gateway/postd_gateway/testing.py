"""In-memory stand-ins of the backends' gRPC contracts, for the gateway's own tests and
benchmark (fakes of ports: the real services are tested in their own suites).

Each fake keeps its objects per tenant and follows the contracts' conventions: another
tenant's object is NOT_FOUND, page sizes and tokens are checked, domain errors carry
the POSTD trailing metadata (through the shared ``map_domain_errors``). They run on
real ``grpc.aio`` servers that verify the gateway's service identity.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2  # type: ignore[import-untyped]

from postd.common.v1 import common_pb2 as common
from postd.connectors.v1 import connectors_pb2 as cx
from postd.connectors.v1 import connectors_pb2_grpc as cx_grpc
from postd.events.v1 import alert_pb2
from postd.health.v1 import health_pb2 as hp
from postd.health.v1 import health_pb2_grpc as hp_grpc
from postd.publisher.v1 import analytics_pb2 as apb
from postd.publisher.v1 import analytics_pb2_grpc as apb_grpc
from postd.publisher.v1 import publisher_pb2 as pub
from postd.publisher.v1 import publisher_pb2_grpc as pub_grpc
from postd.webhook_router.v1 import webhook_router_pb2 as wr
from postd.webhook_router.v1 import webhook_router_pb2_grpc as wr_grpc
from postd_common import errors
from postd_common.grpcutil import (
    AccessPolicy,
    GrpcServer,
    create_server,
    error_metadata,
    map_domain_errors,
    status_for,
)
from postd_common.identity import IdentityVerifier

T = TypeVar("T")

CAPABILITIES: dict[str, tuple[str, int]] = {
    "facebook": ("Facebook Page", 63206),
    "instagram": ("Instagram", 2200),
    "linkedin": ("LinkedIn", 3000),
    "tiktok": ("TikTok", 2200),
    "google_business": ("Google Business Profile", 1500),
}
WEBHOOK_SECRET = b"fake-webhook-secret"
VERIFY_TOKEN = "fake-verify-token"  # noqa: S105 - the fake's own test value


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def _tenant(request: Any) -> str:
    tenant_id: str = request.tenant_id
    if not tenant_id:
        raise errors.InvalidArgument("tenant_id is required", field="tenant_id")
    return tenant_id


def paginate(
    items: Sequence[T], page_size: int, page_token: str, scope: str
) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next (empty on the last page)."""
    if page_size < 0:
        raise errors.InvalidArgument("page_size must not be negative", field="page_size")
    size = min(page_size or 50, 500)
    start = 0
    digest = hashlib.sha256(scope.encode()).hexdigest()[:12]
    if page_token:
        try:
            raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode()
            offset, token_scope = raw.split(":", 1)
            start = int(offset)
        except (ValueError, UnicodeDecodeError):
            raise errors.InvalidArgument("page_token is malformed", field="page_token") from None
        if token_scope != digest or start < 0:
            raise errors.InvalidArgument("page_token belongs to another query", field="page_token")
    chunk = list(items[start : start + size])
    end = start + len(chunk)
    token = ""
    if end < len(items):
        token = base64.urlsafe_b64encode(f"{end}:{digest}".encode()).decode().rstrip("=")
    return chunk, token


@dataclass
class FakeWorld:
    """Every backend's state, per tenant."""

    connections: dict[str, cx.Connection] = field(default_factory=dict)
    audit: list[cx.ConnectionAuditEntry] = field(default_factory=list)
    states: dict[str, cx.StartAuthRequest] = field(default_factory=dict)
    posts: dict[str, pub.Post] = field(default_factory=dict)
    post_requests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    jobs: dict[str, pub.Job] = field(default_factory=dict)
    events: dict[str, wr.WebhookEvent] = field(default_factory=dict)
    endpoints: dict[str, wr.Endpoint] = field(default_factory=dict)
    deliveries: dict[str, wr.Delivery] = field(default_factory=dict)
    notifications: dict[str, hp.Notification] = field(default_factory=dict)
    alerts: dict[str, alert_pb2.Alert] = field(default_factory=dict)
    checks: dict[str, hp.HealthCheck] = field(default_factory=dict)
    ingested: list[wr.IngestWebhookRequest] = field(default_factory=list)
    ingest_batches: list[int] = field(default_factory=list)  # IngestWebhooks call sizes
    inbound_keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> tenant, key
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, tenant_id)
    # Per tenant: ListConnections raises this (or waits this long) instead of answering.
    faults: dict[str, BaseException] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)

    # ----------------------------------------------------------------- seeding

    def add_connection(
        self,
        tenant_id: str,
        platform: str = "facebook",
        *,
        name: str = "Acme",
        status: int = common.CONNECTION_STATUS_HEALTHY,
    ) -> cx.Connection:
        connection = cx.Connection(
            id=_id("conn"),
            tenant_id=tenant_id,
            platform=platform,
            external_id=uuid.uuid4().hex[:10],
            account_name=name,
            scopes=["publish"],
            status=cast("Any", status),
            has_refresh_token=True,
            created_at=_now(),
            updated_at=_now(),
            capabilities=["publish"],
            account_kind="page",
        )
        self.connections[connection.id] = connection
        self.audit.append(
            cx.ConnectionAuditEntry(
                id=_id("aud"),
                tenant_id=tenant_id,
                connection_id=connection.id,
                action="connect",
                actor="test",
                status=cast("Any", status),
                occurred_at=_now(),
            )
        )
        return connection

    def add_dead_letter(self, tenant_id: str, connection: cx.Connection) -> pub.Job:
        job = pub.Job(
            id=_id("job"),
            post_id=_id("post"),
            tenant_id=tenant_id,
            connection_id=connection.id,
            platform=connection.platform,
            idempotency_key=uuid.uuid4().hex,
            state=pub.JOB_STATE_FAILED,
            dead_lettered=True,
            last_error=common.PlatformError(
                category=common.ERROR_CATEGORY_TRANSIENT,
                platform=connection.platform,
                message="The platform kept failing.",
            ),
            created_at=_now(),
            updated_at=_now(),
        )
        self.jobs[job.id] = job
        return job

    def add_webhook_event(self, tenant_id: str, platform: str = "facebook") -> wr.WebhookEvent:
        event = wr.WebhookEvent(
            id=_id("whe"),
            platform=platform,
            tenant_id=tenant_id,
            verdict=wr.WEBHOOK_VERDICT_ACCEPTED,
            types=["post.published"],
            processing_state=wr.PROCESSING_STATE_EMITTED,
            received_at=_now(),
            http_method="POST",
            body=b'{"hello":"world"}',
            body_size=17,
        )
        self.events[event.id] = event
        return event

    def add_endpoint(self, tenant_id: str) -> wr.Endpoint:
        endpoint = wr.Endpoint(
            id=_id("wep"),
            tenant_id=tenant_id,
            url="https://hooks.example.com/postd",
            state=wr.ENDPOINT_STATE_ENABLED,
            secret_hint="whsec_Ab12",  # noqa: S106 - a hint, not a secret
            created_at=_now(),
            updated_at=_now(),
        )
        self.endpoints[endpoint.id] = endpoint
        self.deliveries[_id("dlv")] = wr.Delivery(
            id=_id("dlv"),
            tenant_id=tenant_id,
            endpoint_id=endpoint.id,
            message_id=_id("msg"),
            event_type="post.published",
            state=wr.DELIVERY_STATE_SUCCEEDED,
            attempt_count=1,
            last_http_status=200,
            created_at=_now(),
        )
        return endpoint

    def add_notification(self, tenant_id: str) -> hp.Notification:
        notification = hp.Notification(
            id=_id("ntf"),
            tenant_id=tenant_id,
            alert_id=_id("alr"),
            kind=alert_pb2.ALERT_KIND_CONNECTION_ATTENTION,
            severity=alert_pb2.ALERT_SEVERITY_WARNING,
            alert_state=alert_pb2.ALERT_STATE_FIRING,
            title="Reconnect Acme",
            message="Facebook revoked access.",
            created_at=_now(),
        )
        self.notifications[notification.id] = notification
        alert = alert_pb2.Alert(
            alert_id=notification.alert_id,
            tenant_id=tenant_id,
            kind=notification.kind,
            severity=notification.severity,
            state=notification.alert_state,
            title=notification.title,
            started_at=_now(),
        )
        self.alerts[alert.alert_id] = alert
        return notification

    def add_check(
        self, tenant_id: str, connection: cx.Connection, ok: bool = True
    ) -> hp.HealthCheck:
        check = hp.HealthCheck(
            id=_id("chk"),
            tenant_id=tenant_id,
            connection_id=connection.id,
            platform=connection.platform,
            kind=hp.HEALTH_CHECK_KIND_SCHEDULED,
            ok=ok,
            checked_at=_now(),
            status_after=connection.status,
        )
        self.checks[check.id] = check
        return check

    def seed_tenant(self, tenant_id: str) -> dict[str, str]:
        """One of everything for ``tenant_id``; returns the ids by resource."""
        connection = self.add_connection(tenant_id)
        job = self.add_dead_letter(tenant_id, connection)
        post = pub.Post(
            id=_id("post"),
            tenant_id=tenant_id,
            idempotency_key=uuid.uuid4().hex,
            content=common.PostContent(text="hello"),
            status=pub.POST_STATUS_AWAITING_APPROVAL,
            requires_approval=True,
            created_at=_now(),
        )
        scheduled = pub.Job(
            id=_id("job"),
            post_id=post.id,
            tenant_id=tenant_id,
            connection_id=connection.id,
            platform=connection.platform,
            state=pub.JOB_STATE_AWAITING_APPROVAL,
            created_at=_now(),
        )
        post.jobs.append(scheduled)
        self.posts[post.id] = post
        self.jobs[scheduled.id] = scheduled
        return {
            "connection_id": connection.id,
            "dead_job_id": job.id,
            "job_id": scheduled.id,
            "post_id": post.id,
            "event_id": self.add_webhook_event(tenant_id).id,
            "endpoint_id": self.add_endpoint(tenant_id).id,
            "notification_id": self.add_notification(tenant_id).id,
            "check_id": self.add_check(tenant_id, connection).id,
        }

    # ----------------------------------------------------------------- lookups

    def connection(self, tenant_id: str, connection_id: str, field_name: str = "") -> cx.Connection:
        found = self.connections.get(connection_id)
        if found is None or found.tenant_id != tenant_id:
            raise errors.NotFound("no such connection", field=field_name or None)
        return found

    def post(self, tenant_id: str, post_id: str) -> pub.Post:
        found = self.posts.get(post_id)
        if found is None or found.tenant_id != tenant_id:
            raise errors.NotFound("no such post")
        return found

    def owned(self, items: Iterable[T], tenant_id: str) -> list[T]:
        return [i for i in items if getattr(i, "tenant_id", None) == tenant_id]


def _validate(
    world: FakeWorld, tenant_id: str, content: common.PostContent, targets: Sequence[Any]
) -> common.ValidationReport:
    report = common.ValidationReport(valid=True)
    for index, target in enumerate(targets):
        platform = target.platform
        connection_id = getattr(target, "connection_id", "")
        if connection_id:
            platform = world.connection(
                tenant_id, connection_id, f"targets[{index}].connection_id"
            ).platform
        if platform not in CAPABILITIES:
            raise errors.InvalidArgument("unknown platform", field=f"targets[{index}].platform")
        text = target.content.text or content.text
        limit = CAPABILITIES[platform][1]
        result = common.TargetValidation(connection_id=connection_id, platform=platform, valid=True)
        if len(text) > limit:
            result.valid = False
            report.valid = False
            result.violations.append(
                common.Violation(
                    field=f"targets[{index}].content.text"
                    if target.content.text
                    else "content.text",
                    code="text_too_long",
                    message=f"{CAPABILITIES[platform][0]} allows {limit} characters; "
                    f"this text has {len(text)}.",
                    severity=common.VIOLATION_SEVERITY_ERROR,
                )
            )
        report.targets.append(result)
    return report


# --------------------------------------------------------------------------- servicers


class FakeConnectors(cx_grpc.ConnectorsServiceServicer):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    @map_domain_errors
    async def StartAuth(self, request: cx.StartAuthRequest, context: Any) -> cx.StartAuthResponse:
        tenant_id = _tenant(request)
        if request.platform not in CAPABILITIES:
            raise errors.InvalidArgument("unknown platform", field="platform")
        if not request.redirect_uri.endswith(f"/oauth/callback/{request.platform}"):
            raise errors.InvalidArgument("redirect_uri is not registered", field="redirect_uri")
        if request.reconnect_connection_id:
            existing = self.world.connection(
                tenant_id, request.reconnect_connection_id, "reconnect_connection_id"
            )
            if existing.platform != request.platform:
                raise errors.InvalidArgument(
                    "that connection is of another platform", field="reconnect_connection_id"
                )
        state = secrets.token_urlsafe(16)
        self.world.states[state] = request
        expires = Timestamp()
        expires.FromDatetime(datetime.now(UTC) + timedelta(minutes=10))
        return cx.StartAuthResponse(
            authorize_url=f"https://consent.example/{request.platform}/authorize?state={state}",
            state=state,
            expires_at=expires,
            requested_scopes=["publish", *request.capabilities],
        )

    @map_domain_errors
    async def CompleteAuth(
        self, request: cx.CompleteAuthRequest, context: Any
    ) -> cx.CompleteAuthResponse:
        started = self.world.states.pop(request.state, None)
        if (
            started is None
            or started.platform != request.platform
            or (request.tenant_id and request.tenant_id != started.tenant_id)
        ):
            raise errors.InvalidArgument("the state is unknown, expired or already used")
        if request.error:
            raise errors.FailedPrecondition("You declined the connection on the platform.")
        if not request.code:
            raise errors.InvalidArgument("neither code nor error given", field="code")
        if started.reconnect_connection_id:
            connection = self.world.connections[started.reconnect_connection_id]
            connection.status = common.CONNECTION_STATUS_HEALTHY
            created = False
        else:
            connection = self.world.add_connection(started.tenant_id, started.platform)
            created = True
        return cx.CompleteAuthResponse(
            tenant_id=started.tenant_id,
            user_id=started.user_id,
            connections=[cx.AuthorizedConnection(connection=connection, created=created)],
            granted_scopes=["publish"],
            return_url=started.return_url,
        )

    @map_domain_errors
    async def ListConnections(
        self, request: cx.ListConnectionsRequest, context: Any
    ) -> cx.ListConnectionsResponse:
        tenant_id = _tenant(request)
        self.world.seen.append(("ListConnections", tenant_id))
        if tenant_id in self.world.delays:
            await asyncio.sleep(self.world.delays[tenant_id])
        if tenant_id in self.world.faults:
            raise self.world.faults[tenant_id]
        items = [
            c
            for c in reversed(self.world.owned(self.world.connections.values(), tenant_id))
            if (not request.platforms or c.platform in request.platforms)
            and (not request.statuses or c.status in request.statuses)
        ]
        scope = json.dumps([tenant_id, list(request.platforms), list(request.statuses)])
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return cx.ListConnectionsResponse(connections=chunk, next_page_token=token)

    @map_domain_errors
    async def GetConnection(
        self, request: cx.GetConnectionRequest, context: Any
    ) -> cx.GetConnectionResponse:
        return cx.GetConnectionResponse(
            connection=self.world.connection(_tenant(request), request.connection_id)
        )

    @map_domain_errors
    async def RefreshConnection(
        self, request: cx.RefreshConnectionRequest, context: Any
    ) -> cx.RefreshConnectionResponse:
        connection = self.world.connection(_tenant(request), request.connection_id)
        if connection.status == common.CONNECTION_STATUS_DISCONNECTED:
            raise errors.FailedPrecondition("the connection is disconnected")
        connection.last_refreshed_at.CopyFrom(_now())
        return cx.RefreshConnectionResponse(
            outcome=cx.REFRESH_OUTCOME_REFRESHED, connection=connection
        )

    @map_domain_errors
    async def DisconnectConnection(
        self, request: cx.DisconnectConnectionRequest, context: Any
    ) -> cx.DisconnectConnectionResponse:
        connection = self.world.connection(_tenant(request), request.connection_id)
        shredded = 0 if connection.status == common.CONNECTION_STATUS_DISCONNECTED else 2
        connection.status = common.CONNECTION_STATUS_DISCONNECTED
        return cx.DisconnectConnectionResponse(
            connection=connection, shredded_count=shredded, revoked_at_platform=False
        )

    @map_domain_errors
    async def GetCapabilities(
        self, request: cx.GetCapabilitiesRequest, context: Any
    ) -> cx.GetCapabilitiesResponse:
        platforms = list(request.platforms) or sorted(CAPABILITIES)
        if request.connection_id:
            platforms = [self.world.connection(_tenant(request), request.connection_id).platform]
        out = []
        for platform in platforms:
            if platform not in CAPABILITIES:
                raise errors.InvalidArgument(f"unknown platform {platform!r}", field="platforms")
            name, limit = CAPABILITIES[platform]
            out.append(
                cx.PlatformCapabilities(
                    platform=platform,
                    display_name=name,
                    max_text_length=limit,
                    formats=[cx.PostFormat(format="text", max_text_length=limit)],
                    supports_refresh=True,
                )
            )
        return cx.GetCapabilitiesResponse(platforms=out)

    @map_domain_errors
    async def ValidatePost(
        self, request: cx.ValidatePostRequest, context: Any
    ) -> cx.ValidatePostResponse:
        tenant_id = _tenant(request)
        if not request.targets:
            raise errors.InvalidArgument("at least one target", field="targets")
        return cx.ValidatePostResponse(
            report=_validate(self.world, tenant_id, request.content, request.targets)
        )

    @map_domain_errors
    async def ListConnectionAudit(
        self, request: cx.ListConnectionAuditRequest, context: Any
    ) -> cx.ListConnectionAuditResponse:
        tenant_id = _tenant(request)
        if request.connection_id:
            self.world.connection(tenant_id, request.connection_id)
        items = [
            a
            for a in reversed(self.world.audit)
            if a.tenant_id == tenant_id
            and (not request.connection_id or a.connection_id == request.connection_id)
        ]
        chunk, token = paginate(
            items, request.page_size, request.page_token, tenant_id + request.connection_id
        )
        return cx.ListConnectionAuditResponse(entries=chunk, next_page_token=token)


class FakePublisher(pub_grpc.PublisherServiceServicer):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    async def CreatePost(
        self, request: pub.CreatePostRequest, context: Any
    ) -> pub.CreatePostResponse:
        try:
            return await self._create(request)
        except _Invalid as invalid:
            status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0])
            detail = AnyMessage()
            detail.Pack(invalid.report)
            status.details.append(detail)
            status.message = "the post breaks a target's limits"
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                status.message,
                trailing_metadata=(
                    ("postd-error-code", "validation_failed"),
                    ("grpc-status-details-bin", status.SerializeToString()),
                ),
            )
            raise AssertionError("unreachable") from None
        except errors.DomainError as exc:
            context.set_trailing_metadata(error_metadata(exc))
            await context.abort(status_for(exc), exc.message)
            raise AssertionError("unreachable") from None

    async def _create(self, request: pub.CreatePostRequest) -> pub.CreatePostResponse:
        tenant_id = _tenant(request)
        if not request.idempotency_key:
            raise errors.InvalidArgument("idempotency_key is required", field="idempotency_key")
        if not request.targets:
            raise errors.InvalidArgument("at least one target", field="targets")
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        known = self.world.post_requests.get((tenant_id, request.idempotency_key))
        if known is not None and not request.validate_only:
            if known[1] != fingerprint:
                raise errors.AlreadyExists(
                    "this idempotency key was used for another post", field="idempotency_key"
                )
            return pub.CreatePostResponse(post=self.world.posts[known[0]], existing=True)
        if request.schedule.HasField("local"):
            try:
                zoneinfo.ZoneInfo(request.schedule.local.time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise errors.InvalidArgument(
                    "unknown time zone", field="schedule.local.time_zone"
                ) from None
        targets = [
            cx.ValidationTarget(connection_id=t.connection_id, content=t.content)
            for t in request.targets
        ]
        report = _validate(self.world, tenant_id, request.content, targets)
        if not report.valid:
            raise _Invalid(report)
        post = pub.Post(
            id=_id("post"),
            tenant_id=tenant_id,
            idempotency_key=request.idempotency_key,
            content=request.content,
            schedule=request.schedule,
            requires_approval=request.requires_approval,
            status=pub.POST_STATUS_AWAITING_APPROVAL
            if request.requires_approval
            else pub.POST_STATUS_SCHEDULED,
            created_by=request.created_by,
            created_at=_now(),
            updated_at=_now(),
        )
        for target in request.targets:
            connection = self.world.connections[target.connection_id]
            job = pub.Job(
                id=_id("job"),
                post_id=post.id,
                tenant_id=tenant_id,
                connection_id=target.connection_id,
                platform=connection.platform,
                idempotency_key=f"{request.idempotency_key}:{target.connection_id}",
                state=pub.JOB_STATE_AWAITING_APPROVAL
                if request.requires_approval
                else pub.JOB_STATE_SCHEDULED,
                content=target.content if target.content.text else request.content,
                max_attempts=5,
                created_at=_now(),
            )
            post.jobs.append(job)
        if request.validate_only:
            return pub.CreatePostResponse(post=post, validation=report)
        for job in post.jobs:
            self.world.jobs[job.id] = job
        self.world.posts[post.id] = post
        self.world.post_requests[(tenant_id, request.idempotency_key)] = (post.id, fingerprint)
        return pub.CreatePostResponse(post=post, validation=report)

    @map_domain_errors
    async def GetPost(self, request: pub.GetPostRequest, context: Any) -> pub.GetPostResponse:
        return pub.GetPostResponse(post=self.world.post(_tenant(request), request.post_id))

    @map_domain_errors
    async def ListPosts(self, request: pub.ListPostsRequest, context: Any) -> pub.ListPostsResponse:
        tenant_id = _tenant(request)
        items = [
            p
            for p in reversed(self.world.owned(self.world.posts.values(), tenant_id))
            if (not request.statuses or p.status in request.statuses)
            and (
                not request.connection_id
                or any(j.connection_id == request.connection_id for j in p.jobs)
            )
            and (not request.platform or any(j.platform == request.platform for j in p.jobs))
        ]
        scope = json.dumps(
            [tenant_id, list(request.statuses), request.connection_id, request.platform]
        )
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return pub.ListPostsResponse(posts=chunk, next_page_token=token)

    @map_domain_errors
    async def ListJobs(self, request: pub.ListJobsRequest, context: Any) -> pub.ListJobsResponse:
        tenant_id = _tenant(request)
        items = [
            j
            for j in self.world.owned(self.world.jobs.values(), tenant_id)
            if (not request.states or j.state in request.states)
            and (not request.connection_id or j.connection_id == request.connection_id)
            and (not request.platform or j.platform == request.platform)
            and (not request.post_id or j.post_id == request.post_id)
        ]
        scope = json.dumps(
            [
                tenant_id,
                list(request.states),
                request.connection_id,
                request.platform,
                request.post_id,
            ]
        )
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return pub.ListJobsResponse(jobs=chunk, next_page_token=token)

    @map_domain_errors
    async def GetJob(self, request: pub.GetJobRequest, context: Any) -> pub.GetJobResponse:
        job = self.world.jobs.get(request.job_id)
        if job is None or job.tenant_id != _tenant(request):
            raise errors.NotFound("no such job")
        return pub.GetJobResponse(job=job)

    def _set_jobs(self, post: pub.Post, state: int, only: Sequence[str] = ()) -> list[str]:
        changed = []
        for job in post.jobs:
            if only and job.id not in only:
                continue
            if job.state in (pub.JOB_STATE_SCHEDULED, pub.JOB_STATE_AWAITING_APPROVAL):
                job.state = state  # type: ignore[assignment]
                self.world.jobs[job.id] = job
                changed.append(job.id)
        return changed

    @map_domain_errors
    async def CancelPost(
        self, request: pub.CancelPostRequest, context: Any
    ) -> pub.CancelPostResponse:
        post = self.world.post(_tenant(request), request.post_id)
        for job_id in request.job_ids:
            if job_id not in {j.id for j in post.jobs}:
                raise errors.NotFound("no such job in this post", field="job_ids")
        changed = self._set_jobs(post, pub.JOB_STATE_CANCELLED, request.job_ids)
        if not changed:
            raise errors.FailedPrecondition("no job of this post can still be cancelled")
        if all(j.state == pub.JOB_STATE_CANCELLED for j in post.jobs):
            post.status = pub.POST_STATUS_CANCELLED
        return pub.CancelPostResponse(post=post, cancelled_count=len(changed))

    @map_domain_errors
    async def ReschedulePost(
        self, request: pub.ReschedulePostRequest, context: Any
    ) -> pub.ReschedulePostResponse:
        post = self.world.post(_tenant(request), request.post_id)
        if request.schedule.HasField("local"):
            try:
                zoneinfo.ZoneInfo(request.schedule.local.time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise errors.InvalidArgument(
                    "unknown time zone", field="schedule.local.time_zone"
                ) from None
        movable = [
            j
            for j in post.jobs
            if j.state in (pub.JOB_STATE_SCHEDULED, pub.JOB_STATE_AWAITING_APPROVAL)
        ]
        if not movable:
            raise errors.FailedPrecondition("no job can still be rescheduled")
        post.schedule.CopyFrom(request.schedule)
        return pub.ReschedulePostResponse(post=post, rescheduled_count=len(movable))

    @map_domain_errors
    async def ApprovePost(
        self, request: pub.ApprovePostRequest, context: Any
    ) -> pub.ApprovePostResponse:
        post = self.world.post(_tenant(request), request.post_id)
        if not post.requires_approval or post.status in (
            pub.POST_STATUS_REJECTED,
            pub.POST_STATUS_CANCELLED,
        ):
            raise errors.FailedPrecondition("this post cannot be approved")
        post.status = pub.POST_STATUS_SCHEDULED
        post.approval.approved_by = request.approved_by
        post.approval.approved_at.CopyFrom(_now())
        self._set_jobs(post, pub.JOB_STATE_SCHEDULED)
        return pub.ApprovePostResponse(post=post)

    @map_domain_errors
    async def RejectPost(
        self, request: pub.RejectPostRequest, context: Any
    ) -> pub.RejectPostResponse:
        post = self.world.post(_tenant(request), request.post_id)
        if post.status != pub.POST_STATUS_AWAITING_APPROVAL:
            raise errors.FailedPrecondition("this post is not awaiting approval")
        post.status = pub.POST_STATUS_REJECTED
        post.approval.rejected_by = request.rejected_by
        post.approval.note = request.reason
        self._set_jobs(post, pub.JOB_STATE_CANCELLED)
        return pub.RejectPostResponse(post=post)

    def _dead(self, tenant_id: str, flt: pub.DeadLetterFilter) -> list[pub.Job]:
        return [
            j
            for j in self.world.owned(self.world.jobs.values(), tenant_id)
            if j.dead_lettered
            and (not flt.platform or j.platform == flt.platform)
            and (not flt.connection_id or j.connection_id == flt.connection_id)
            and (not flt.post_id or j.post_id == flt.post_id)
            and (not flt.categories or j.last_error.category in flt.categories)
        ]

    @map_domain_errors
    async def ListDeadLetters(
        self, request: pub.ListDeadLettersRequest, context: Any
    ) -> pub.ListDeadLettersResponse:
        tenant_id = _tenant(request)
        items = [
            pub.DeadLetter(job=j, reason="Gave up after 5 attempts.", dead_lettered_at=j.updated_at)
            for j in self._dead(tenant_id, request.filter)
        ]
        scope = tenant_id + request.filter.SerializeToString(deterministic=True).hex()
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return pub.ListDeadLettersResponse(dead_letters=chunk, next_page_token=token)

    @map_domain_errors
    async def ReplayDeadLetters(
        self, request: pub.ReplayDeadLettersRequest, context: Any
    ) -> pub.ReplayDeadLettersResponse:
        tenant_id = _tenant(request)
        has_filter = request.HasField("filter")
        if bool(request.job_ids) == has_filter:
            raise errors.InvalidArgument("give either job_ids or a filter", field="job_ids")
        if request.job_ids:
            jobs = []
            for job_id in request.job_ids:
                job = self.world.jobs.get(job_id)
                if job is None or job.tenant_id != tenant_id or not job.dead_lettered:
                    raise errors.NotFound(
                        "a listed job is not in the dead-letter queue", field="job_ids"
                    )
                jobs.append(job)
        else:
            jobs = self._dead(tenant_id, request.filter)[: request.limit or 1000]
        for job in jobs:
            job.dead_lettered = False
            job.state = pub.JOB_STATE_SCHEDULED
        return pub.ReplayDeadLettersResponse(replayed_count=len(jobs), job_ids=[j.id for j in jobs])

    @map_domain_errors
    async def CountMissedJobs(
        self, request: pub.CountMissedJobsRequest, context: Any
    ) -> pub.CountMissedJobsResponse:
        tenant_id = _tenant(request)
        self.world.connection(tenant_id, request.connection_id)
        missed = [
            j
            for j in self.world.owned(self.world.jobs.values(), tenant_id)
            if j.connection_id == request.connection_id and j.state == pub.JOB_STATE_PAUSED
        ]
        return pub.CountMissedJobsResponse(missed_count=len(missed))

    @map_domain_errors
    async def BackfillConnection(
        self, request: pub.BackfillConnectionRequest, context: Any
    ) -> pub.BackfillConnectionResponse:
        tenant_id = _tenant(request)
        self.world.connection(tenant_id, request.connection_id)
        if request.action == pub.BACKFILL_ACTION_UNSPECIFIED:
            raise errors.InvalidArgument("action is required", field="action")
        return pub.BackfillConnectionResponse(affected_count=0)


class FakeAnalytics(apb_grpc.AnalyticsServiceServicer):
    """The publisher's AnalyticsService over the world's posts: one published target
    per job, figures derived from its id; validation as the real service does it."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    @staticmethod
    def _zone(name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise errors.InvalidArgument("unknown time zone", field="time_zone") from None
        return name or "UTC"

    @staticmethod
    def _dates(first: str, last: str) -> tuple[str, str]:
        today = datetime.now(UTC).date()
        try:
            end = datetime.fromisoformat(last).date() if last else today
            start = datetime.fromisoformat(first).date() if first else end - timedelta(days=29)
        except ValueError:
            raise errors.InvalidArgument("not a date", field="from_date") from None
        if end < start or (end - start).days >= 400:
            raise errors.InvalidArgument("bad date range", field="from_date")
        return start.isoformat(), end.isoformat()

    @staticmethod
    def _metrics(seed: str) -> apb.Metrics:
        n = int(hashlib.sha256(seed.encode()).hexdigest()[:6], 16) % 5000
        return apb.Metrics(impressions=n, reach=n * 7 // 10, engagements=n // 15, posts=1)

    @map_domain_errors
    async def QueryAnalytics(
        self, request: apb.QueryAnalyticsRequest, context: Any
    ) -> apb.QueryAnalyticsResponse:
        tenant_id = _tenant(request)
        zone = self._zone(request.time_zone)
        first, last = self._dates(request.from_date, request.to_date)
        posts = self.world.owned(self.world.posts.values(), tenant_id)
        rows = [
            apb.AnalyticsRow(period=last, platform=j.platform, metrics=self._metrics(j.id))
            for p in posts
            for j in p.jobs
        ]
        totals = apb.Metrics(posts=len(rows))
        if rows:
            totals.impressions = sum(r.metrics.impressions for r in rows)
        return apb.QueryAnalyticsResponse(
            rows=rows,
            totals=totals,
            time_zone=zone,
            from_date=first,
            to_date=last,
            source="daily",
        )

    @map_domain_errors
    async def GetPostAnalytics(
        self, request: apb.GetPostAnalyticsRequest, context: Any
    ) -> apb.GetPostAnalyticsResponse:
        post = self.world.post(_tenant(request), request.post_id)
        return apb.GetPostAnalyticsResponse(
            post_id=post.id,
            targets=[
                apb.TargetAnalytics(
                    job_id=j.id,
                    connection_id=j.connection_id,
                    platform=j.platform,
                    content_type="text",
                    latest=self._metrics(j.id),
                    collection=apb.Collection(state="SCHEDULED"),
                )
                for j in post.jobs
            ],
        )

    @map_domain_errors
    async def GetConnectionAnalytics(
        self, request: apb.GetConnectionAnalyticsRequest, context: Any
    ) -> apb.GetConnectionAnalyticsResponse:
        connection = self.world.connection(_tenant(request), request.connection_id, "connection_id")
        self._zone(request.time_zone)
        self._dates(request.from_date, request.to_date)
        return apb.GetConnectionAnalyticsResponse(
            connection_id=connection.id,
            platform=connection.platform,
            account_days=[
                apb.AccountDayFigures(
                    date=datetime.now(UTC).date().isoformat(),
                    metrics=self._metrics(connection.id),
                )
            ],
        )

    @map_domain_errors
    async def GetInsights(
        self, request: apb.GetInsightsRequest, context: Any
    ) -> apb.GetInsightsResponse:
        _tenant(request)
        zone = self._zone(request.time_zone)
        if not 0 <= request.days <= 365:
            raise errors.InvalidArgument("days is between 1 and 365", field="days")
        return apb.GetInsightsResponse(
            insights=[
                apb.Insight(
                    kind=apb.INSIGHT_KIND_CONTENT_TYPE,
                    verdict=apb.VERDICT_NOT_ENOUGH_DATA,
                    summary="Not enough data yet.",
                )
            ],
            time_zone=zone,
        )


class _Invalid(Exception):
    def __init__(self, report: common.ValidationReport) -> None:
        super().__init__("invalid post")
        self.report = report


class FakeWebhookRouter(wr_grpc.WebhookRouterServiceServicer):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    @map_domain_errors
    async def IngestWebhook(
        self, request: wr.IngestWebhookRequest, context: Any
    ) -> wr.IngestWebhookResponse:
        self.world.ingested.append(request)
        if request.body_truncated:
            return wr.IngestWebhookResponse(
                http_status=413, verdict=wr.WEBHOOK_VERDICT_REJECTED_TOO_LARGE
            )
        if request.platform not in CAPABILITIES:
            return wr.IngestWebhookResponse(
                http_status=404, verdict=wr.WEBHOOK_VERDICT_REJECTED_UNKNOWN
            )
        if request.http_method == "GET":
            params = dict(
                pair.split("=", 1) for pair in request.query_string.split("&") if "=" in pair
            )
            if params.get("hub.verify_token") != VERIFY_TOKEN:
                return wr.IngestWebhookResponse(
                    http_status=403, verdict=wr.WEBHOOK_VERDICT_REJECTED_CHALLENGE
                )
            return wr.IngestWebhookResponse(
                http_status=200,
                body=params.get("hub.challenge", "").encode(),
                content_type="text/plain",
                verdict=wr.WEBHOOK_VERDICT_CHALLENGE_ANSWERED,
            )
        signature = next(
            (h.value for h in request.headers if h.name.lower() == "x-fake-signature"), ""
        )
        expected = hmac.new(WEBHOOK_SECRET, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return wr.IngestWebhookResponse(
                http_status=401, verdict=wr.WEBHOOK_VERDICT_REJECTED_SIGNATURE
            )
        event = wr.WebhookEvent(
            id=_id("whe"),
            platform=request.platform,
            verdict=wr.WEBHOOK_VERDICT_ACCEPTED,
            received_at=request.received_at,
            body=request.body,
        )
        self.world.events[event.id] = event
        return wr.IngestWebhookResponse(
            http_status=200, event_id=event.id, verdict=wr.WEBHOOK_VERDICT_ACCEPTED
        )

    async def IngestWebhooks(
        self, request: wr.IngestWebhooksRequest, context: Any
    ) -> wr.IngestWebhooksResponse:
        self.world.ingest_batches.append(len(request.webhooks))
        return wr.IngestWebhooksResponse(
            webhooks=[await self.IngestWebhook(w, context) for w in request.webhooks]
        )

    def _event(self, tenant_id: str, event_id: str) -> wr.WebhookEvent:
        event = self.world.events.get(event_id)
        if event is None or event.tenant_id != tenant_id:
            raise errors.NotFound("no such webhook event", field="event_ids")
        return event

    @map_domain_errors
    async def ListWebhookEvents(
        self, request: wr.ListWebhookEventsRequest, context: Any
    ) -> wr.ListWebhookEventsResponse:
        tenant_id = _tenant(request)
        items = []
        for event in reversed(self.world.owned(self.world.events.values(), tenant_id)):
            if request.platform and event.platform != request.platform:
                continue
            if request.verdicts and event.verdict not in request.verdicts:
                continue
            if request.types and not set(request.types) & set(event.types):
                continue
            if request.connection_id and event.connection_id != request.connection_id:
                continue
            copy = wr.WebhookEvent()
            copy.CopyFrom(event)
            copy.ClearField("body")
            items.append(copy)
        scope = json.dumps(
            [tenant_id, request.platform, list(request.verdicts), list(request.types)]
        )
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return wr.ListWebhookEventsResponse(events=chunk, next_page_token=token)

    @map_domain_errors
    async def GetWebhookEvent(
        self, request: wr.GetWebhookEventRequest, context: Any
    ) -> wr.GetWebhookEventResponse:
        event = wr.WebhookEvent()
        event.CopyFrom(self._event(_tenant(request), request.event_id))
        if not request.include_body:
            event.ClearField("body")
        return wr.GetWebhookEventResponse(event=event)

    @map_domain_errors
    async def ReplayWebhookEvents(
        self, request: wr.ReplayWebhookEventsRequest, context: Any
    ) -> wr.ReplayWebhookEventsResponse:
        tenant_id = _tenant(request)
        has_range = request.HasField("received_window")
        if bool(request.event_ids) == has_range:
            raise errors.InvalidArgument("give either event_ids or a range", field="event_ids")
        if request.event_ids:
            events = [self._event(tenant_id, e) for e in request.event_ids]
        else:
            events = [
                e
                for e in self.world.owned(self.world.events.values(), tenant_id)
                if e.platform == request.platform
            ]
        for event in events:
            event.replay_count += 1
        return wr.ReplayWebhookEventsResponse(replayed_count=len(events))

    def _endpoint(self, tenant_id: str, endpoint_id: str) -> wr.Endpoint:
        endpoint = self.world.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.tenant_id != tenant_id:
            raise errors.NotFound("no such endpoint")
        return endpoint

    @staticmethod
    def _check_url(url: str) -> None:
        if not url.startswith("https://") or "localhost" in url or "127.0.0.1" in url:
            raise errors.InvalidArgument("the endpoint must be a public https URL", field="url")

    @map_domain_errors
    async def CreateEndpoint(
        self, request: wr.CreateEndpointRequest, context: Any
    ) -> wr.CreateEndpointResponse:
        tenant_id = _tenant(request)
        self._check_url(request.url)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        endpoint = wr.Endpoint(
            id=_id("wep"),
            tenant_id=tenant_id,
            url=request.url,
            description=request.description,
            event_types=request.event_types,
            state=wr.ENDPOINT_STATE_ENABLED,
            secret_hint=secret[:10],
            created_at=_now(),
            updated_at=_now(),
        )
        self.world.endpoints[endpoint.id] = endpoint
        return wr.CreateEndpointResponse(endpoint=endpoint, signing_secret=secret)

    @map_domain_errors
    async def ListEndpoints(
        self, request: wr.ListEndpointsRequest, context: Any
    ) -> wr.ListEndpointsResponse:
        tenant_id = _tenant(request)
        items = list(reversed(self.world.owned(self.world.endpoints.values(), tenant_id)))
        chunk, token = paginate(items, request.page_size, request.page_token, tenant_id)
        return wr.ListEndpointsResponse(endpoints=chunk, next_page_token=token)

    @map_domain_errors
    async def UpdateEndpoint(
        self, request: wr.UpdateEndpointRequest, context: Any
    ) -> wr.UpdateEndpointResponse:
        endpoint = self._endpoint(_tenant(request), request.endpoint_id)
        for path in request.update_mask.paths:
            if path == "url":
                self._check_url(request.url)
                endpoint.url = request.url
            elif path == "description":
                endpoint.description = request.description
            elif path == "event_types":
                del endpoint.event_types[:]
                endpoint.event_types.extend(request.event_types)
            elif path == "enabled":
                endpoint.state = (
                    wr.ENDPOINT_STATE_ENABLED if request.enabled else wr.ENDPOINT_STATE_DISABLED
                )
            else:
                raise errors.InvalidArgument(f"unknown mask path {path!r}", field="update_mask")
        return wr.UpdateEndpointResponse(endpoint=endpoint)

    @map_domain_errors
    async def DeleteEndpoint(
        self, request: wr.DeleteEndpointRequest, context: Any
    ) -> wr.DeleteEndpointResponse:
        endpoint = self._endpoint(_tenant(request), request.endpoint_id)
        del self.world.endpoints[endpoint.id]
        return wr.DeleteEndpointResponse()

    @map_domain_errors
    async def RotateEndpointSecret(
        self, request: wr.RotateEndpointSecretRequest, context: Any
    ) -> wr.RotateEndpointSecretResponse:
        endpoint = self._endpoint(_tenant(request), request.endpoint_id)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        endpoint.secret_hint = secret[:10]
        return wr.RotateEndpointSecretResponse(endpoint=endpoint, signing_secret=secret)

    @map_domain_errors
    async def CreateInboundKey(
        self, request: wr.CreateInboundKeyRequest, context: Any
    ) -> wr.CreateInboundKeyResponse:
        tenant_id = _tenant(request)
        if request.platform not in ("mailchimp", "custom"):
            raise errors.InvalidArgument("this platform takes no path key", field="platform")
        if request.connection_id:
            self.world.connection(tenant_id, request.connection_id, "connection_id")
        key_id, path_key = _id("ink"), secrets.token_urlsafe(24)
        self.world.inbound_keys[key_id] = (tenant_id, path_key)
        return wr.CreateInboundKeyResponse(
            key_id=key_id,
            path_key=path_key,
            url_path=f"/webhooks/{request.platform}/{path_key}",
        )

    @map_domain_errors
    async def RevokeInboundKey(
        self, request: wr.RevokeInboundKeyRequest, context: Any
    ) -> wr.RevokeInboundKeyResponse:
        found = self.world.inbound_keys.get(request.key_id)
        if found is None or found[0] != _tenant(request):
            raise errors.NotFound("no such inbound key")
        del self.world.inbound_keys[request.key_id]
        return wr.RevokeInboundKeyResponse()

    @map_domain_errors
    async def ListDeliveries(
        self, request: wr.ListDeliveriesRequest, context: Any
    ) -> wr.ListDeliveriesResponse:
        tenant_id = _tenant(request)
        if request.endpoint_id:
            self._endpoint(tenant_id, request.endpoint_id)
        items = [
            d
            for d in self.world.owned(self.world.deliveries.values(), tenant_id)
            if (not request.endpoint_id or d.endpoint_id == request.endpoint_id)
            and (not request.states or d.state in request.states)
            and (not request.event_type or d.event_type == request.event_type)
        ]
        scope = json.dumps(
            [tenant_id, request.endpoint_id, list(request.states), request.event_type]
        )
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return wr.ListDeliveriesResponse(deliveries=chunk, next_page_token=token)


class FakeHealth(hp_grpc.ConnectionHealthServiceServicer):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    @map_domain_errors
    async def GetDashboard(
        self, request: hp.GetDashboardRequest, context: Any
    ) -> hp.GetDashboardResponse:
        tenant_id = _tenant(request)
        timeframe = request.timeframe.seconds or 86400
        if timeframe > 30 * 86400:
            raise errors.InvalidArgument("the timeframe is over 30 days", field="timeframe")
        resolution = request.resolution.seconds or max(1, timeframe // 48)
        if timeframe / resolution > 1000:
            raise errors.InvalidArgument("more than 1,000 points", field="resolution")
        owned = self.world.owned(self.world.connections.values(), tenant_id)
        healthy = sum(1 for c in owned if c.status == common.CONNECTION_STATUS_HEALTHY)
        response = hp.GetDashboardResponse(generated_at=_now())
        response.timeframe.seconds = timeframe
        response.resolution.seconds = resolution
        response.token_health.total.current = len(owned)
        response.token_health.healthy.current = healthy
        start = datetime.now(UTC) - timedelta(seconds=timeframe)
        for index in range(min(48, int(timeframe // resolution))):
            point = response.token_health.healthy.points.add()
            point.time.FromDatetime(start + timedelta(seconds=index * resolution))
            point.value = healthy
        response.queue_health.pending.current = sum(
            1
            for j in self.world.owned(self.world.jobs.values(), tenant_id)
            if j.state == pub.JOB_STATE_SCHEDULED
        )
        return response

    @map_domain_errors
    async def GetConnectionHealth(
        self, request: hp.GetConnectionHealthRequest, context: Any
    ) -> hp.GetConnectionHealthResponse:
        connection = self.world.connection(_tenant(request), request.connection_id)
        return hp.GetConnectionHealthResponse(
            health=hp.ConnectionHealth(
                connection_id=connection.id,
                tenant_id=connection.tenant_id,
                platform=connection.platform,
                account_name=connection.account_name,
                status=connection.status,
                forecast=hp.Forecast(explanation="Tokens refresh themselves."),
            )
        )

    @map_domain_errors
    async def ListHealthChecks(
        self, request: hp.ListHealthChecksRequest, context: Any
    ) -> hp.ListHealthChecksResponse:
        tenant_id = _tenant(request)
        if request.connection_id:
            self.world.connection(tenant_id, request.connection_id)
        items = [
            c
            for c in reversed(self.world.owned(self.world.checks.values(), tenant_id))
            if (not request.connection_id or c.connection_id == request.connection_id)
            and (not request.platform or c.platform == request.platform)
            and (not request.failures_only or not c.ok)
        ]
        scope = json.dumps(
            [tenant_id, request.connection_id, request.platform, request.failures_only]
        )
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return hp.ListHealthChecksResponse(checks=chunk, next_page_token=token)

    @map_domain_errors
    async def RunCheckNow(
        self, request: hp.RunCheckNowRequest, context: Any
    ) -> hp.RunCheckNowResponse:
        tenant_id = _tenant(request)
        connection = self.world.connection(tenant_id, request.connection_id)
        if connection.status == common.CONNECTION_STATUS_DISCONNECTED:
            raise errors.FailedPrecondition("the connection is disconnected")
        check = self.world.add_check(tenant_id, connection)
        return hp.RunCheckNowResponse(check=check, status=connection.status)

    @map_domain_errors
    async def ListNotifications(
        self, request: hp.ListNotificationsRequest, context: Any
    ) -> hp.ListNotificationsResponse:
        tenant_id = _tenant(request)
        owned = list(reversed(self.world.owned(self.world.notifications.values(), tenant_id)))
        unread = [n for n in owned if not n.HasField("read_at")]
        items = unread if request.unread_only else owned
        chunk, token = paginate(
            items, request.page_size, request.page_token, f"{tenant_id}{request.unread_only}"
        )
        return hp.ListNotificationsResponse(
            notifications=chunk, next_page_token=token, unread_count=len(unread)
        )

    @map_domain_errors
    async def MarkNotificationRead(
        self, request: hp.MarkNotificationReadRequest, context: Any
    ) -> hp.MarkNotificationReadResponse:
        tenant_id = _tenant(request)
        if request.all:
            chosen = self.world.owned(self.world.notifications.values(), tenant_id)
        else:
            chosen = []
            for notification_id in request.notification_ids:
                found = self.world.notifications.get(notification_id)
                if found is None or found.tenant_id != tenant_id:
                    raise errors.NotFound("no such notification", field="notification_ids")
                chosen.append(found)
        marked = 0
        for notification in chosen:
            if not notification.HasField("read_at"):
                notification.read_at.CopyFrom(_now())
                notification.read_by = request.read_by
                marked += 1
        return hp.MarkNotificationReadResponse(marked_count=marked)

    @map_domain_errors
    async def ListAlerts(
        self, request: hp.ListAlertsRequest, context: Any
    ) -> hp.ListAlertsResponse:
        tenant_id = _tenant(request)
        items = [
            a
            for a in reversed(self.world.owned(self.world.alerts.values(), tenant_id))
            if (not request.states or a.state in request.states)
            and (not request.kinds or a.kind in request.kinds)
            and (not request.platform or a.platform == request.platform)
        ]
        scope = json.dumps([tenant_id, list(request.states), list(request.kinds), request.platform])
        chunk, token = paginate(items, request.page_size, request.page_token, scope)
        return hp.ListAlertsResponse(alerts=chunk, next_page_token=token)


# --------------------------------------------------------------------------- servers


@dataclass
class FakeBackends:
    """The four fake services on real gRPC servers; ``addresses`` feed the settings."""

    world: FakeWorld
    servers: dict[str, GrpcServer]

    @property
    def addresses(self) -> dict[str, str]:
        return {name: f"127.0.0.1:{server.port}" for name, server in self.servers.items()}

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop(0)


async def start_fake_backends(
    world: FakeWorld, verifier_for: Callable[[str], IdentityVerifier] | None
) -> FakeBackends:
    """Start the fakes on free loopback ports. With ``verifier_for`` each server
    verifies callers' service identities and admits only the gateway."""
    # Methods the gateway never calls keep the generated base's UNIMPLEMENTED answer.
    made: dict[str, tuple[Any, Callable[[Any, grpc.aio.Server], None], str]] = {
        "connectors": (
            _make(FakeConnectors, world),
            cx_grpc.add_ConnectorsServiceServicer_to_server,
            "postd.connectors.v1.ConnectorsService",
        ),
        "publisher": (
            _make(FakePublisher, world),
            pub_grpc.add_PublisherServiceServicer_to_server,
            "postd.publisher.v1.PublisherService",
        ),
        "webhook-router": (
            FakeWebhookRouter(world),
            wr_grpc.add_WebhookRouterServiceServicer_to_server,
            "postd.webhook_router.v1.WebhookRouterService",
        ),
        "health": (
            _make(FakeHealth, world),
            hp_grpc.add_ConnectionHealthServiceServicer_to_server,
            "postd.health.v1.ConnectionHealthService",
        ),
    }
    # The publisher serves its analytics service on the same server.
    extra: dict[str, list[tuple[Any, Callable[[Any, grpc.aio.Server], None], str]]] = {
        "publisher": [
            (
                _make(FakeAnalytics, world),
                apb_grpc.add_AnalyticsServiceServicer_to_server,
                "postd.publisher.v1.AnalyticsService",
            )
        ]
    }
    servers: dict[str, GrpcServer] = {}
    for name, (servicer, add, service_name) in made.items():
        more = extra.get(name, [])
        server = create_server(
            service=name,
            address="127.0.0.1:0",
            register=[_bind(add, servicer), *(_bind(a, s) for s, a, _ in more)],
            service_names=[service_name, *(n for _, _, n in more)],
            verifier=verifier_for(name) if verifier_for else None,
            policy=AccessPolicy(default=frozenset({"gateway"})),
        )
        await server.start()
        servers[name] = server
    return FakeBackends(world, servers)


def _make(cls: type, *args: Any) -> Any:
    """Instantiate a servicer that implements only what the gateway calls (the generated
    base answers UNIMPLEMENTED for the rest; mypy sees its methods as abstract)."""
    factory: Any = cls
    return factory(*args)


def _bind(
    add: Callable[[Any, grpc.aio.Server], None], servicer: Any
) -> Callable[[grpc.aio.Server], None]:
    return lambda server: add(servicer, server)


def sign_fake_webhook(body: bytes) -> str:
    """The signature the fake webhook router expects in ``X-Fake-Signature``."""
    return hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()
