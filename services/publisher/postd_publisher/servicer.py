"""``postd.publisher.v1.PublisherService``: proto in, domain calls, proto out.

Domain errors become status codes here only (``map_domain_errors``); an invalid
post's ValidationReport travels in the status details (grpc-status-details-bin).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]

from postd.common.v1.common_pb2 import ErrorCategory, TimeRange
from postd.publisher.v1 import publisher_pb2 as pb
from postd.publisher.v1.publisher_pb2_grpc import (
    PublisherServiceServicer,
    add_PublisherServiceServicer_to_server,
)
from postd_common.errors import InvalidArgument
from postd_common.grpcutil import AccessPolicy, error_metadata, map_domain_errors
from postd_publisher.domain.model import (
    Attempt,
    Category,
    DeadLetter,
    Job,
    JobState,
    Post,
    ScheduleSpec,
)
from postd_publisher.domain.posts import ContentInvalid, CreatePost, PostService
from postd_publisher.ports import (
    Cursor,
    DeadLetterFilter,
    JobFilter,
    JobStore,
    PostFilter,
    TargetSpec,
)

SERVICE = "postd.publisher.v1.PublisherService"
DEFAULT_PAGE = 50
MAX_PAGE = 500


def access_policy() -> AccessPolicy:
    """The gateway may call everything (analytics too); health may pause, resume
    and count."""
    both = frozenset({"gateway", "health"})
    return AccessPolicy(
        methods={
            f"/{SERVICE}/PauseConnection": both,
            f"/{SERVICE}/ResumeConnection": both,
            f"/{SERVICE}/CountMissedJobs": both,
            f"/{SERVICE}/": frozenset({"gateway"}),
            "/postd.publisher.v1.AnalyticsService/": frozenset({"gateway"}),
        }
    )


# ---------------------------------------------------------------------- conversions


def _ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def _from_ts(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _range(value: TimeRange, has: bool) -> tuple[datetime | None, datetime | None]:
    if not has:
        return None, None
    start = _from_ts(value.start_time) if value.HasField("start_time") else None
    end = _from_ts(value.end_time) if value.HasField("end_time") else None
    return start, end


def schedule_spec(schedule: pb.Schedule) -> ScheduleSpec:
    which = schedule.WhichOneof("time")
    if which == "publish_at":
        return ScheduleSpec(absolute=_from_ts(schedule.publish_at))
    if which == "local":
        return ScheduleSpec(
            local_time=schedule.local.local_time, time_zone=schedule.local.time_zone
        )
    return ScheduleSpec()


def schedule_proto(spec: ScheduleSpec) -> pb.Schedule:
    if spec.absolute is not None:
        return pb.Schedule(publish_at=_ts(spec.absolute))
    if spec.kind == "local":
        return pb.Schedule(
            local=pb.LocalSchedule(local_time=spec.local_time, time_zone=spec.time_zone)
        )
    return pb.Schedule()


def _set_ts(message: Message, name: str, moment: datetime | None) -> None:
    stamp = _ts(moment)
    if stamp is not None:
        getattr(message, name).CopyFrom(stamp)


def attempt_proto(attempt: Attempt) -> pb.Attempt:
    out = pb.Attempt(
        number=attempt.number,
        outcome=pb.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{attempt.outcome.value}"),
        worker_id=attempt.worker_id,
    )
    _set_ts(out, "started_at", attempt.started_at)
    _set_ts(out, "ended_at", attempt.ended_at)
    if attempt.error is not None:
        out.error.CopyFrom(attempt.error)
    elif attempt.reason and attempt.outcome.value in ("UNKNOWN", "FAILED", "FAILED_RETRYABLE"):
        out.error.message = attempt.reason
    if attempt.platform_latency is not None:
        latency = Duration()
        latency.FromNanoseconds(int(attempt.platform_latency * 1e9))
        out.platform_latency.CopyFrom(latency)
    return out


def job_proto(job: Job, *, with_attempts: bool = False) -> pb.Job:
    out = pb.Job(
        id=job.id,
        post_id=job.post_id,
        tenant_id=job.tenant_id,
        connection_id=job.connection_id,
        platform=job.platform,
        idempotency_key=job.idempotency_key,
        state=pb.JobState.Value(f"JOB_STATE_{job.state.value}"),
        state_reason=job.state_reason,
        content=job.content,
        attempt_count=job.attempt_count,
        max_attempts=job.max_attempts,
        platform_post_id=job.platform_post_id,
        url=job.url,
        dead_lettered=job.dead_lettered,
    )
    _set_ts(out, "due_at", job.due_at)
    _set_ts(out, "next_attempt_at", job.next_attempt_at)
    _set_ts(out, "created_at", job.created_at)
    _set_ts(out, "updated_at", job.updated_at)
    _set_ts(out, "finished_at", job.finished_at)
    if job.last_error is not None:
        out.last_error.CopyFrom(job.last_error)
    if with_attempts:
        out.attempts.extend(attempt_proto(a) for a in job.attempts)
    return out


def post_proto(post: Post) -> pb.Post:
    out = pb.Post(
        id=post.id,
        tenant_id=post.tenant_id,
        idempotency_key=post.idempotency_key,
        content=post.content,
        schedule=schedule_proto(post.schedule),
        requires_approval=post.requires_approval,
        status=pb.PostStatus.Value(f"POST_STATUS_{post.status.value}"),
        jobs=[job_proto(j) for j in post.jobs],
        created_by=post.created_by,
    )
    _set_ts(out, "publish_at", post.publish_at)
    _set_ts(out, "created_at", post.created_at)
    _set_ts(out, "updated_at", post.updated_at)
    if post.approval.value in ("approved", "rejected"):
        out.approval.CopyFrom(
            pb.Approval(
                approved_by=post.approved_by,
                rejected_by=post.rejected_by,
                note=post.approval_note,
            )
        )
        _set_ts(out.approval, "approved_at", post.approved_at)
        _set_ts(out.approval, "rejected_at", post.rejected_at)
    return out


def dead_letter_proto(letter: DeadLetter) -> pb.DeadLetter:
    out = pb.DeadLetter(
        job=job_proto(letter.job), reason=letter.reason, replay_count=letter.job.replay_count
    )
    _set_ts(out, "dead_lettered_at", letter.dead_lettered_at)
    return out


# ---------------------------------------------------------------------- paging


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def _filter_hash(request: Message) -> str:
    """What a page token is bound to: the request without its paging fields."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ("page_size", "page_token"):
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_token(cursor: Cursor, request: Message) -> str:
    body = {"at": cursor.at.isoformat(), "id": cursor.id, "f": _filter_hash(request)}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode_token(token: str, request: Message) -> Cursor | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        cursor = Cursor(at=datetime.fromisoformat(body["at"]), id=str(body["id"]))
        bound = str(body["f"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token is malformed", field="page_token") from exc
    if bound != _filter_hash(request):
        raise InvalidArgument(
            "page_token was issued for other filters; start again without it",
            field="page_token",
        )
    return cursor


def _need_tenant(tenant_id: str) -> str:
    if not tenant_id:
        raise InvalidArgument("tenant_id is required", field="tenant_id")
    return tenant_id


def _category_names(values: Sequence[ErrorCategory.ValueType]) -> frozenset[str]:
    names = set()
    for value in values:
        name = ErrorCategory.Name(value).removeprefix("ERROR_CATEGORY_")
        names.add(Category.UNKNOWN.value if name == "UNSPECIFIED" else name)
    return frozenset(names)


def _dead_letter_filter(flt: pb.DeadLetterFilter, has: bool) -> DeadLetterFilter:
    if not has:
        return DeadLetterFilter()
    since, until = _range(flt.dead_lettered_window, flt.HasField("dead_lettered_window"))
    return DeadLetterFilter(
        platform=flt.platform,
        connection_id=flt.connection_id,
        categories=_category_names(flt.categories),
        post_id=flt.post_id,
        since=since,
        until=until,
    )


# ---------------------------------------------------------------------- servicer


class PublisherServicer(PublisherServiceServicer):
    def __init__(self, posts: PostService, store: JobStore) -> None:
        self._posts = posts
        self._store = store

    @map_domain_errors
    async def CreatePost(
        self, request: pb.CreatePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePostResponse:
        command = CreatePost(
            tenant_id=_need_tenant(request.tenant_id),
            idempotency_key=request.idempotency_key,
            content=request.content,
            targets=[TargetSpec(t.connection_id, t.content) for t in request.targets],
            schedule=schedule_spec(request.schedule),
            requires_approval=request.requires_approval,
            created_by=request.created_by,
            validate_only=request.validate_only,
        )
        try:
            created = await self._posts.create(command)
        except ContentInvalid as exc:
            await _abort_invalid(context, exc)
            raise  # pragma: no cover - abort raises
        return pb.CreatePostResponse(
            post=post_proto(created.post), existing=created.existing, validation=created.report
        )

    @map_domain_errors
    async def GetPost(
        self, request: pb.GetPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPostResponse:
        post = await self._posts.get(_need_tenant(request.tenant_id), request.post_id)
        return pb.GetPostResponse(post=post_proto(post))

    @map_domain_errors
    async def ListPosts(
        self, request: pb.ListPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPostsResponse:
        tenant = _need_tenant(request.tenant_id)
        size = page_size(request.page_size)
        start, end = _range(request.publish_window, request.HasField("publish_window"))
        flt = PostFilter(
            statuses=frozenset(
                pb.PostStatus.Name(s).removeprefix("POST_STATUS_") for s in request.statuses
            ),
            connection_id=request.connection_id,
            platform=request.platform,
            publish_from=start,
            publish_to=end,
            created_by=request.created_by,
        )
        posts = await self._store.list_posts(
            tenant, flt, decode_token(request.page_token, request), size + 1
        )
        token = ""
        if len(posts) > size:
            last = posts[size - 1]
            token = encode_token(Cursor(last.publish_at or last.created_at, last.id), request)
        return pb.ListPostsResponse(
            posts=[post_proto(p) for p in posts[:size]], next_page_token=token
        )

    @map_domain_errors
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        tenant = _need_tenant(request.tenant_id)
        size = page_size(request.page_size)
        start, end = _range(request.due_window, request.HasField("due_window"))
        flt = JobFilter(
            states=frozenset(
                JobState(pb.JobState.Name(s).removeprefix("JOB_STATE_"))
                for s in request.states
                if s != pb.JOB_STATE_UNSPECIFIED
            ),
            connection_id=request.connection_id,
            platform=request.platform,
            post_id=request.post_id,
            due_from=start,
            due_to=end,
        )
        jobs = await self._store.list_jobs(
            tenant, flt, decode_token(request.page_token, request), size + 1
        )
        token = ""
        if len(jobs) > size:
            last = jobs[size - 1]
            token = encode_token(Cursor(last.due_at, last.id), request)
        return pb.ListJobsResponse(jobs=[job_proto(j) for j in jobs[:size]], next_page_token=token)

    @map_domain_errors
    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobResponse:
        job = await self._posts.job(_need_tenant(request.tenant_id), request.job_id)
        return pb.GetJobResponse(job=job_proto(job, with_attempts=True))

    @map_domain_errors
    async def CancelPost(
        self, request: pb.CancelPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelPostResponse:
        post, count, not_cancelled = await self._posts.cancel(
            _need_tenant(request.tenant_id),
            request.post_id,
            list(request.job_ids),
            request.cancelled_by,
            request.reason,
        )
        return pb.CancelPostResponse(
            post=post_proto(post), cancelled_count=count, not_cancelled_job_ids=not_cancelled
        )

    @map_domain_errors
    async def ReschedulePost(
        self, request: pb.ReschedulePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReschedulePostResponse:
        post, count, not_moved = await self._posts.reschedule(
            _need_tenant(request.tenant_id), request.post_id, schedule_spec(request.schedule)
        )
        return pb.ReschedulePostResponse(
            post=post_proto(post), rescheduled_count=count, not_rescheduled_job_ids=not_moved
        )

    @map_domain_errors
    async def ApprovePost(
        self, request: pb.ApprovePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApprovePostResponse:
        post = await self._posts.approve(
            _need_tenant(request.tenant_id), request.post_id, request.approved_by, request.note
        )
        return pb.ApprovePostResponse(post=post_proto(post))

    @map_domain_errors
    async def RejectPost(
        self, request: pb.RejectPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.RejectPostResponse:
        post = await self._posts.reject(
            _need_tenant(request.tenant_id), request.post_id, request.rejected_by, request.reason
        )
        return pb.RejectPostResponse(post=post_proto(post))

    @map_domain_errors
    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        tenant = _need_tenant(request.tenant_id)
        size = page_size(request.page_size)
        letters = await self._store.list_dead_letters(
            tenant,
            _dead_letter_filter(request.filter, request.HasField("filter")),
            decode_token(request.page_token, request),
            size + 1,
        )
        token = ""
        if len(letters) > size:
            last = letters[size - 1]
            token = encode_token(Cursor(last.dead_lettered_at, last.job.id), request)
        return pb.ListDeadLettersResponse(
            dead_letters=[dead_letter_proto(d) for d in letters[:size]], next_page_token=token
        )

    @map_domain_errors
    async def ReplayDeadLetters(
        self, request: pb.ReplayDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayDeadLettersResponse:
        has_filter = request.HasField("filter")
        ids, truncated = await self._posts.replay(
            _need_tenant(request.tenant_id),
            list(request.job_ids),
            _dead_letter_filter(request.filter, True) if has_filter else None,
            request.limit,
        )
        return pb.ReplayDeadLettersResponse(
            replayed_count=len(ids), job_ids=ids, truncated=truncated
        )

    @map_domain_errors
    async def CountMissedJobs(
        self, request: pb.CountMissedJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountMissedJobsResponse:
        missed, paused = await self._posts.missed(
            _need_tenant(request.tenant_id), request.connection_id
        )
        out = pb.CountMissedJobsResponse(missed_count=missed.count, paused=paused)
        _set_ts(out, "oldest_due_at", missed.oldest_due_at)
        _set_ts(out, "newest_due_at", missed.newest_due_at)
        _set_ts(out, "paused_since", missed.paused_since)
        return out

    @map_domain_errors
    async def BackfillConnection(
        self, request: pb.BackfillConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackfillConnectionResponse:
        if request.action == pb.BACKFILL_ACTION_UNSPECIFIED:
            raise InvalidArgument("action must be PUBLISH or CANCEL", field="action")
        count = await self._posts.backfill(
            _need_tenant(request.tenant_id),
            request.connection_id,
            request.action == pb.BACKFILL_ACTION_PUBLISH,
            list(request.job_ids),
            request.requested_by,
        )
        return pb.BackfillConnectionResponse(affected_count=count)

    @map_domain_errors
    async def PauseConnection(
        self, request: pb.PauseConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseConnectionResponse:
        category = ""
        if request.category != ErrorCategory.ERROR_CATEGORY_UNSPECIFIED:
            category = ErrorCategory.Name(request.category).removeprefix("ERROR_CATEGORY_")
        count, since = await self._posts.pause(
            _need_tenant(request.tenant_id),
            request.connection_id,
            request.reason,
            category,
            request.source or "api",
        )
        out = pb.PauseConnectionResponse(paused_count=count)
        _set_ts(out, "paused_since", since)
        return out

    @map_domain_errors
    async def ResumeConnection(
        self, request: pb.ResumeConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeConnectionResponse:
        resumed, missed = await self._posts.resume(
            _need_tenant(request.tenant_id), request.connection_id
        )
        return pb.ResumeConnectionResponse(resumed_count=resumed, missed_count=missed)


async def _abort_invalid(context: grpc.aio.ServicerContext, exc: ContentInvalid) -> None:
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=exc.message)
    detail = any_pb2.Any()
    detail.Pack(exc.report)
    status.details.append(detail)
    metadata: tuple[tuple[str, Any], ...] = (
        *error_metadata(exc),
        ("grpc-status-details-bin", status.SerializeToString()),
    )
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message, trailing_metadata=metadata)


def register(servicer: PublisherServicer) -> Any:
    def add(server: grpc.aio.Server) -> None:
        add_PublisherServiceServicer_to_server(servicer, server)

    return add
