"""Posts, their jobs, the dead-letter queue and missed-job backfill (publisher)."""

from __future__ import annotations

from typing import Any, Final, cast

from postd.common.v1 import common_pb2 as common
from postd.connectors.v1 import connectors_pb2 as cx
from postd.publisher.v1 import publisher_pb2 as pub
from postd_gateway.problems import bad_request
from postd_gateway.protojson import SchemaRegistry, enum_from_json, to_json
from postd_gateway.resources.common import (
    call_backend,
    enum_param,
    enums,
    message_input,
    ok,
    page_args,
    string_param,
)
from postd_gateway.routing import (
    ID_SCHEMA,
    Answer,
    Body,
    Call,
    Reply,
    Route,
    page,
    page_query,
    page_schema,
)

ID: Final = ID_SCHEMA
ID_LIST: Final = {"type": "array", "items": ID, "minItems": 1, "maxItems": 500, "uniqueItems": True}
SCHEDULE: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "maxProperties": 1,
    "description": "`publish_at` (RFC 3339) or `local` (wall-clock time in an IANA time "
    "zone); empty or absent: as soon as possible.",
    "properties": {
        "publish_at": {"type": "string", "format": "date-time"},
        "local": {
            "type": "object",
            "required": ["local_time", "time_zone"],
            "additionalProperties": False,
            "properties": {
                "local_time": {
                    "type": "string",
                    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?$",
                },
                "time_zone": {"type": "string", "minLength": 1, "maxLength": 64},
            },
        },
    },
}


def _schedule(data: dict[str, Any] | None) -> pub.Schedule:
    return message_input(data, pub.Schedule, "schedule")


# --------------------------------------------------------------------------- posts


async def create_post(call: Call) -> Reply:
    body = call.body or {}
    idempotency_key = call.request.headers["Idempotency-Key"]
    targets = [
        pub.PostTarget(
            connection_id=t["connection_id"],
            content=message_input(t.get("content"), common.PostContent, f"targets[{i}].content"),
        )
        for i, t in enumerate(body["targets"])
    ]
    request = pub.CreatePostRequest(
        tenant_id=call.tenant.tenant_id,
        idempotency_key=idempotency_key,
        content=message_input(body.get("content"), common.PostContent, "content"),
        targets=targets,
        schedule=_schedule(body.get("schedule")),
        requires_approval=bool(body.get("requires_approval", False)),
        created_by=call.tenant.actor,
        validate_only=bool(body.get("validate_only", False)),
    )
    response = await call_backend(
        call,
        call.ports.backends.publisher.CreatePost,
        request,
        fields={"idempotency_key": "Idempotency-Key"},
    )
    if request.validate_only:
        return Reply(200, to_json(response))
    headers = {"Location": f"/v1/posts/{response.post.id}"} if response.post.id else {}
    return Reply(201, to_json(response), headers)


async def validate_post(call: Call) -> Reply:
    body = call.body or {}
    targets = [
        cx.ValidationTarget(
            connection_id=t.get("connection_id", ""),
            platform=t.get("platform", ""),
            content=message_input(t.get("content"), common.PostContent, f"targets[{i}].content"),
        )
        for i, t in enumerate(body["targets"])
    ]
    response = await call_backend(
        call,
        call.ports.backends.connectors.ValidatePost,
        cx.ValidatePostRequest(
            tenant_id=call.tenant.tenant_id,
            targets=targets,
            content=message_input(body.get("content"), common.PostContent, "content"),
        ),
    )
    return Reply(body=to_json(response.report))


async def list_posts(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.publisher.ListPosts,
        pub.ListPostsRequest(
            tenant_id=call.tenant.tenant_id,
            statuses=enums(call.query.get("status"), pub.PostStatus.DESCRIPTOR),
            connection_id=call.query.get("connection_id", ""),
            platform=call.query.get("platform", ""),
            **page_args(call),
        ),
        fields={"statuses": "status"},
    )
    return Reply(body=page([to_json(p) for p in response.posts], response.next_page_token))


async def get_post(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.publisher.GetPost,
        pub.GetPostRequest(tenant_id=call.tenant.tenant_id, post_id=call.path["post_id"]),
    )
    return Reply(body=to_json(response.post))


async def cancel_post(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.publisher.CancelPost,
        pub.CancelPostRequest(
            tenant_id=call.tenant.tenant_id,
            post_id=call.path["post_id"],
            job_ids=body.get("job_ids", []),
            cancelled_by=call.tenant.actor,
            reason=body.get("reason", ""),
        ),
    )
    return Reply(body=to_json(response))


async def reschedule_post(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.publisher.ReschedulePost,
        pub.ReschedulePostRequest(
            tenant_id=call.tenant.tenant_id,
            post_id=call.path["post_id"],
            schedule=_schedule(body.get("schedule")),
            requested_by=call.tenant.actor,
        ),
    )
    return Reply(body=to_json(response))


async def approve_post(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.publisher.ApprovePost,
        pub.ApprovePostRequest(
            tenant_id=call.tenant.tenant_id,
            post_id=call.path["post_id"],
            approved_by=call.tenant.actor,
            note=body.get("note", ""),
        ),
    )
    return Reply(body=to_json(response.post))


async def reject_post(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.publisher.RejectPost,
        pub.RejectPostRequest(
            tenant_id=call.tenant.tenant_id,
            post_id=call.path["post_id"],
            rejected_by=call.tenant.actor,
            reason=body["reason"],
        ),
    )
    return Reply(body=to_json(response.post))


# --------------------------------------------------------------------------- jobs, DLQ


async def list_jobs(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.publisher.ListJobs,
        pub.ListJobsRequest(
            tenant_id=call.tenant.tenant_id,
            states=enums(call.query.get("state"), pub.JobState.DESCRIPTOR),
            connection_id=call.query.get("connection_id", ""),
            platform=call.query.get("platform", ""),
            post_id=call.query.get("post_id", ""),
            **page_args(call),
        ),
        fields={"states": "state"},
    )
    return Reply(body=page([to_json(j) for j in response.jobs], response.next_page_token))


async def get_job(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.publisher.GetJob,
        pub.GetJobRequest(tenant_id=call.tenant.tenant_id, job_id=call.path["job_id"]),
    )
    return Reply(body=to_json(response.job))


def _dead_letter_filter(data: dict[str, Any]) -> pub.DeadLetterFilter:
    return pub.DeadLetterFilter(
        platform=data.get("platform", ""),
        connection_id=data.get("connection_id", ""),
        categories=enums(data.get("category"), common.ErrorCategory.DESCRIPTOR),
        post_id=data.get("post_id", ""),
    )


async def list_dead_letters(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.publisher.ListDeadLetters,
        pub.ListDeadLettersRequest(
            tenant_id=call.tenant.tenant_id,
            filter=_dead_letter_filter(call.query),
            **page_args(call),
        ),
        fields={
            "filter.categories": "category",
            "filter.platform": "platform",
            "filter.connection_id": "connection_id",
            "filter.post_id": "post_id",
        },
    )
    return Reply(body=page([to_json(d) for d in response.dead_letters], response.next_page_token))


async def replay_dead_letters(call: Call) -> Reply:
    body = call.body or {}
    request = pub.ReplayDeadLettersRequest(
        tenant_id=call.tenant.tenant_id,
        job_ids=body.get("job_ids", []),
        requested_by=call.tenant.actor,
        limit=int(body.get("limit", 0)),
    )
    if "filter" in body:
        request.filter.CopyFrom(_dead_letter_filter(body["filter"]))
    response = await call_backend(call, call.ports.backends.publisher.ReplayDeadLetters, request)
    return Reply(body=to_json(response))


async def missed_jobs(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.publisher.CountMissedJobs,
        pub.CountMissedJobsRequest(
            tenant_id=call.tenant.tenant_id, connection_id=call.path["connection_id"]
        ),
    )
    return Reply(body=to_json(response))


async def backfill(call: Call) -> Reply:
    body = call.body or {}
    try:
        action = enum_from_json(pub.BackfillAction.DESCRIPTOR, body["action"])
    except ValueError:
        raise bad_request("must be publish or cancel", field="action") from None
    response = await call_backend(
        call,
        call.ports.backends.publisher.BackfillConnection,
        pub.BackfillConnectionRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            action=cast("Any", action),
            job_ids=body.get("job_ids", []),
            requested_by=call.tenant.actor,
        ),
    )
    return Reply(body=to_json(response))


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        schema["required"] = list(required)
    return schema


def routes(reg: SchemaRegistry) -> list[Route]:
    content = reg.ref(common.PostContent.DESCRIPTOR, write=True)
    post = reg.ref(pub.Post.DESCRIPTOR)
    job = reg.ref(pub.Job.DESCRIPTOR)
    category_values = enum_param("category", common.ErrorCategory.DESCRIPTOR, "").schema
    dlq_filter = (
        string_param("platform", "Only this platform."),
        string_param("connection_id", "Only this connection."),
        enum_param("category", common.ErrorCategory.DESCRIPTOR, "Only these error categories."),
        string_param("post_id", "Only this post's jobs."),
    )
    create_body = _object(
        {
            "content": content,
            "targets": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "items": _object({"connection_id": ID, "content": content}, ("connection_id",)),
            },
            "schedule": SCHEDULE,
            "requires_approval": {"type": "boolean"},
            "validate_only": {"type": "boolean"},
        },
        ("content", "targets"),
    )
    validate_body = _object(
        {
            "content": content,
            "targets": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "items": {
                    **_object({"connection_id": ID, "platform": ID, "content": content}),
                    "minProperties": 1,
                },
            },
        },
        ("content", "targets"),
    )
    return [
        Route(
            "POST",
            "/v1/posts",
            create_post,
            "createPost",
            "Create a post to several targets",
            "posts",
            [
                ok(
                    reg, pub.CreatePostResponse.DESCRIPTOR, "Created, with one job per target.", 201
                ),
                ok(reg, pub.CreatePostResponse.DESCRIPTOR, "validate_only: checked, not stored."),
            ],
            role="editor",
            body=Body(create_body),
            creates=True,
            description="Every target is validated against its platform's capability matrix "
            "first; nothing is queued unless all are valid (422 lists every problem with its "
            "field). The Idempotency-Key is also the post's key at the publisher.",
        ),
        Route(
            "POST",
            "/v1/posts/validate",
            validate_post,
            "validatePost",
            "Check a post against the capability matrix",
            "posts",
            [ok(reg, common.ValidationReport.DESCRIPTOR, "Every violation, per target.")],
            role="editor",
            body=Body(validate_body),
        ),
        Route(
            "GET",
            "/v1/posts",
            list_posts,
            "listPosts",
            "List posts",
            "posts",
            [Answer(200, "A page of posts, latest publish time first.", page_schema(post))],
            query=page_query(
                (
                    enum_param("status", pub.PostStatus.DESCRIPTOR, "Only these statuses."),
                    string_param("connection_id", "Only posts with a job for this connection."),
                    string_param("platform", "Only posts with a job for this platform."),
                )
            ),
        ),
        Route(
            "GET",
            "/v1/posts/{post_id}",
            get_post,
            "getPost",
            "Get a post with its jobs",
            "posts",
            [Answer(200, "The post.", post)],
        ),
        Route(
            "POST",
            "/v1/posts/{post_id}/cancel",
            cancel_post,
            "cancelPost",
            "Cancel a post (or some of its jobs)",
            "posts",
            [ok(reg, pub.CancelPostResponse.DESCRIPTOR, "What was cancelled and what not.")],
            role="editor",
            body=Body(
                _object({"job_ids": ID_LIST, "reason": {"type": "string", "maxLength": 500}}),
                required=False,
            ),
        ),
        Route(
            "POST",
            "/v1/posts/{post_id}/reschedule",
            reschedule_post,
            "reschedulePost",
            "Move a post's publish time",
            "posts",
            [ok(reg, pub.ReschedulePostResponse.DESCRIPTOR, "What moved and what not.")],
            role="editor",
            body=Body(_object({"schedule": SCHEDULE}, ("schedule",))),
        ),
        Route(
            "POST",
            "/v1/posts/{post_id}/approve",
            approve_post,
            "approvePost",
            "Approve a post",
            "posts",
            [Answer(200, "The post, approved.", post)],
            role="admin",
            body=Body(_object({"note": {"type": "string", "maxLength": 1000}}), required=False),
        ),
        Route(
            "POST",
            "/v1/posts/{post_id}/reject",
            reject_post,
            "rejectPost",
            "Reject a post",
            "posts",
            [Answer(200, "The post, rejected.", post)],
            role="admin",
            body=Body(
                _object(
                    {"reason": {"type": "string", "minLength": 1, "maxLength": 1000}}, ("reason",)
                )
            ),
        ),
        Route(
            "GET",
            "/v1/jobs",
            list_jobs,
            "listJobs",
            "List publish jobs",
            "jobs",
            [Answer(200, "A page of jobs, soonest due first.", page_schema(job))],
            query=page_query(
                (
                    enum_param("state", pub.JobState.DESCRIPTOR, "Only these states."),
                    string_param("connection_id", "Only this connection."),
                    string_param("platform", "Only this platform."),
                    string_param("post_id", "Only this post's jobs."),
                )
            ),
        ),
        Route(
            "GET",
            "/v1/jobs/{job_id}",
            get_job,
            "getJob",
            "Get a job with its attempts",
            "jobs",
            [Answer(200, "The job.", job)],
        ),
        Route(
            "GET",
            "/v1/dlq",
            list_dead_letters,
            "listDeadLetters",
            "List the dead-letter queue",
            "jobs",
            [
                Answer(
                    200,
                    "A page of dead letters, newest first.",
                    page_schema(reg.ref(pub.DeadLetter.DESCRIPTOR)),
                )
            ],
            query=page_query(dlq_filter),
        ),
        Route(
            "POST",
            "/v1/dlq/replay",
            replay_dead_letters,
            "replayDeadLetters",
            "Replay dead letters",
            "jobs",
            [ok(reg, pub.ReplayDeadLettersResponse.DESCRIPTOR, "What was put back on schedule.")],
            role="editor",
            body=Body(
                {
                    "oneOf": [
                        _object({"job_ids": ID_LIST}, ("job_ids",)),
                        _object(
                            {
                                "filter": _object(
                                    {
                                        "platform": ID,
                                        "connection_id": ID,
                                        "post_id": ID,
                                        "category": category_values,
                                    }
                                ),
                                "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
                            },
                            ("filter",),
                        ),
                    ]
                },
                description="Either `job_ids`, or a `filter` (with an optional `limit`).",
            ),
            description="Replayed jobs keep their idempotency keys, so a post that did go "
            "out is found, not duplicated.",
        ),
        Route(
            "GET",
            "/v1/connections/{connection_id}/missed-jobs",
            missed_jobs,
            "countMissedJobs",
            "Jobs missed while a connection was paused",
            "jobs",
            [ok(reg, pub.CountMissedJobsResponse.DESCRIPTOR, "How many, and since when.")],
        ),
        Route(
            "POST",
            "/v1/connections/{connection_id}/backfill",
            backfill,
            "backfillConnection",
            "Publish or cancel missed jobs",
            "jobs",
            [ok(reg, pub.BackfillConnectionResponse.DESCRIPTOR, "How many jobs were affected.")],
            role="editor",
            body=Body(
                _object(
                    {
                        "action": {"type": "string", "enum": ["publish", "cancel"]},
                        "job_ids": ID_LIST,
                    },
                    ("action",),
                )
            ),
        ),
    ]
