"""The gRPC API: validation through connectors, idempotency, tenancy, schedules in
time zones, reschedule and cancel until dispatch, listing with cursors, access."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2  # type: ignore[import-untyped]

from postd.common.v1 import common_pb2
from postd.publisher.v1 import publisher_pb2 as pb

from .conftest import COFFEE_PAGE, TEA_PAGE

pytestmark = pytest.mark.integration


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_invalid_content_names_the_target_and_field(harness: Any, pages: Any) -> None:
    await harness.start("api")
    error = await rpc_error(harness.create("too-long", [pages[COFFEE_PAGE]], "x" * 70_000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "targets[0]" in error.details()
    assert "content.text" in error.details()
    assert "63,206" in error.details() or "63206" in error.details()
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    report = common_pb2.ValidationReport()
    assert status.details[0].Unpack(report)
    assert not report.valid
    assert report.targets[0].violations[0].field.endswith("text")
    # Nothing was stored.
    listed = await harness.api.ListPosts(pb.ListPostsRequest(tenant_id=harness.tenant))
    assert list(listed.posts) == []


async def test_same_key_same_body_is_the_same_post_and_another_body_is_refused(
    harness: Any, pages: Any
) -> None:
    await harness.start("api")
    later = datetime.now(UTC) + timedelta(hours=2)
    schedule = pb.Schedule(publish_at=at(later))
    first = await harness.create("k-1", [pages[COFFEE_PAGE]], "Hello", schedule=schedule)
    again = await harness.create("k-1", [pages[COFFEE_PAGE]], "Hello", schedule=schedule)
    assert again.existing
    assert not first.existing
    assert again.post.id == first.post.id
    assert [j.id for j in again.post.jobs] == [j.id for j in first.post.jobs]
    error = await rpc_error(
        harness.create("k-1", [pages[COFFEE_PAGE]], "Hello, changed", schedule=schedule)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "k-1" in error.details()
    assert first.post.id in error.details()


async def test_jobs_per_target_with_overrides_and_derived_keys(harness: Any, pages: Any) -> None:
    await harness.start("api")
    later = datetime.now(UTC) + timedelta(hours=1)
    reply = await harness.api.CreatePost(
        pb.CreatePostRequest(
            tenant_id=harness.tenant,
            idempotency_key="multi",
            content=common_pb2.PostContent(text="Shared", options={"facebook.a": "1"}),
            targets=[
                pb.PostTarget(connection_id=pages[COFFEE_PAGE]),
                pb.PostTarget(
                    connection_id=pages[TEA_PAGE],
                    content=common_pb2.PostContent(text="Tea version", options={"b": "2"}),
                ),
            ],
            schedule=pb.Schedule(publish_at=at(later)),
        )
    )
    coffee, tea = reply.post.jobs
    assert coffee.content.text == "Shared"
    assert tea.content.text == "Tea version"
    assert dict(tea.content.options) == {"facebook.a": "1", "b": "2"}
    assert coffee.idempotency_key != tea.idempotency_key
    assert {coffee.state, tea.state} == {pb.JOB_STATE_SCHEDULED}
    assert coffee.platform == "facebook"
    assert reply.post.status == pb.POST_STATUS_SCHEDULED


async def test_unknown_target_and_another_tenants_post_are_not_found(
    harness: Any, pages: Any
) -> None:
    await harness.start("api")
    error = await rpc_error(harness.create("ghost", [str(uuid.uuid4())], "Hi"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "targets[0]" in error.details()
    later = datetime.now(UTC) + timedelta(hours=1)
    mine = await harness.create(
        "mine", [pages[COFFEE_PAGE]], "Mine", schedule=pb.Schedule(publish_at=at(later))
    )
    other = str(uuid.uuid4())
    for call in (
        harness.api.GetPost(pb.GetPostRequest(tenant_id=other, post_id=mine.post.id)),
        harness.api.GetJob(pb.GetJobRequest(tenant_id=other, job_id=mine.post.jobs[0].id)),
        harness.api.CancelPost(pb.CancelPostRequest(tenant_id=other, post_id=mine.post.id)),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    listed = await harness.api.ListJobs(pb.ListJobsRequest(tenant_id=other))
    assert list(listed.jobs) == []
    # The other tenant cannot use our connection as a target either.
    error = await rpc_error(harness.create("steal", [pages[COFFEE_PAGE]], "x", tenant=other))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_local_times_across_daylight_saving_changes(harness: Any, pages: Any) -> None:
    await harness.start("api")
    target = [pages[COFFEE_PAGE]]
    # Fall back in Berlin (2030-10-27): 02:30 happens twice; the first one is meant,
    # still on summer time (UTC+2).
    overlap = await harness.create(
        "fall-back",
        target,
        "Twice",
        schedule=pb.Schedule(
            local=pb.LocalSchedule(local_time="2030-10-27T02:30:00", time_zone="Europe/Berlin")
        ),
    )
    assert overlap.post.publish_at.ToDatetime() == datetime(2030, 10, 27, 0, 30)
    assert overlap.post.jobs[0].due_at.ToDatetime() == datetime(2030, 10, 27, 0, 30)
    # Spring forward (2030-03-31): 02:30 never happens.
    error = await rpc_error(
        harness.create(
            "spring",
            target,
            "Never",
            schedule=pb.Schedule(
                local=pb.LocalSchedule(local_time="2030-03-31T02:30:00", time_zone="Europe/Berlin")
            ),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not exist in Europe/Berlin" in error.details()
    # New York summer time is UTC-4; an unknown zone is refused by name.
    ny = await harness.create(
        "ny",
        target,
        "NY",
        schedule=pb.Schedule(
            local=pb.LocalSchedule(local_time="2030-07-04T09:00:00", time_zone="America/New_York")
        ),
    )
    assert ny.post.publish_at.ToDatetime() == datetime(2030, 7, 4, 13, 0)
    error = await rpc_error(
        harness.create(
            "mars",
            target,
            "?",
            schedule=pb.Schedule(
                local=pb.LocalSchedule(local_time="2030-07-04T09:00:00", time_zone="Mars/Olympus")
            ),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Mars/Olympus" in error.details()


async def test_reschedule_and_cancel_until_dispatch(harness: Any, pages: Any) -> None:
    await harness.start()
    later = datetime.now(UTC) + timedelta(hours=3)
    post = (
        await harness.create(
            "resched", [pages[COFFEE_PAGE]], "Later", schedule=pb.Schedule(publish_at=at(later))
        )
    ).post
    sooner = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    moved = await harness.api.ReschedulePost(
        pb.ReschedulePostRequest(
            tenant_id=harness.tenant, post_id=post.id, schedule=pb.Schedule(publish_at=at(sooner))
        )
    )
    assert moved.rescheduled_count == 1
    assert moved.post.jobs[0].due_at.ToDatetime(tzinfo=UTC) == sooner
    cancelled = await harness.api.CancelPost(
        pb.CancelPostRequest(
            tenant_id=harness.tenant, post_id=post.id, cancelled_by="user:u_1", reason="typo"
        )
    )
    assert cancelled.cancelled_count == 1
    job = cancelled.post.jobs[0]
    assert job.state == pb.JOB_STATE_CANCELLED
    assert "typo" in job.state_reason
    assert cancelled.post.status == pb.POST_STATUS_CANCELLED

    # Once published, neither is possible any more, and the caller is told why.
    now_post = (await harness.create("now", [pages[COFFEE_PAGE]], f"Now {uuid.uuid4()}")).post
    await harness.wait_job(now_post.jobs[0].id)
    error = await rpc_error(
        harness.api.CancelPost(pb.CancelPostRequest(tenant_id=harness.tenant, post_id=now_post.id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PUBLISHED" in error.details()
    error = await rpc_error(
        harness.api.ReschedulePost(
            pb.ReschedulePostRequest(
                tenant_id=harness.tenant,
                post_id=now_post.id,
                schedule=pb.Schedule(publish_at=at(later)),
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_listing_pages_through_with_cursors(harness: Any, pages: Any) -> None:
    await harness.start("api")
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    for i in range(7):
        await harness.create(
            f"list-{i}",
            [pages[COFFEE_PAGE]],
            f"Post {i}",
            schedule=pb.Schedule(publish_at=at(base + timedelta(minutes=i))),
        )
    seen: list[str] = []
    token = ""
    while True:
        reply = await harness.api.ListJobs(
            pb.ListJobsRequest(tenant_id=harness.tenant, page_size=3, page_token=token)
        )
        seen += [j.content.text for j in reply.jobs]
        token = reply.next_page_token
        if not token:
            break
    assert seen == [f"Post {i}" for i in range(7)]  # soonest due first, each once
    posts = await harness.api.ListPosts(pb.ListPostsRequest(tenant_id=harness.tenant, page_size=4))
    assert [p.content.text for p in posts.posts] == [f"Post {i}" for i in (6, 5, 4, 3)]
    # A token is bound to its filters.
    error = await rpc_error(
        harness.api.ListPosts(
            pb.ListPostsRequest(
                tenant_id=harness.tenant, page_token=posts.next_page_token, platform="linkedin"
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    scheduled = await harness.api.ListPosts(
        pb.ListPostsRequest(tenant_id=harness.tenant, statuses=[pb.POST_STATUS_PUBLISHED])
    )
    assert list(scheduled.posts) == []


async def test_health_may_pause_but_not_create(harness: Any, pages: Any) -> None:
    await harness.start("api")
    assert harness.health is not None
    error = await rpc_error(
        harness.health.CreatePost(
            pb.CreatePostRequest(tenant_id=harness.tenant, idempotency_key="h")
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    paused = await harness.health.PauseConnection(
        pb.PauseConnectionRequest(
            tenant_id=harness.tenant, connection_id=pages[COFFEE_PAGE], source="health"
        )
    )
    assert paused.paused_since.seconds > 0
