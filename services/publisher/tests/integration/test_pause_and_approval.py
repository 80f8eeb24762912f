"""Pause and protect (connection.events from connectors, 401 at publish time), resume
on reconnect, "publish missed items", and the approval workflow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as cpb
from postd.publisher.v1 import publisher_pb2 as pb

from .conftest import COFFEE_PAGE, TEA_PAGE

pytestmark = pytest.mark.integration


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def text(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_attention_pauses_reconnect_resumes_and_missed_items_backfill(
    harness: Any, pages: Any
) -> None:
    await harness.start()
    page = pages[COFFEE_PAGE]
    soon_text, later_text = text("Soon"), text("Later")
    soon = await harness.create(
        "soon",
        [page],
        soon_text,
        schedule=pb.Schedule(publish_at=at(datetime.now(UTC) + timedelta(seconds=3))),
    )
    later = await harness.create(
        "later",
        [page],
        later_text,
        schedule=pb.Schedule(publish_at=at(datetime.now(UTC) + timedelta(hours=1))),
    )
    soon_job, later_job = soon.post.jobs[0].id, later.post.jobs[0].id

    # Health moves the connection to ATTENTION through connectors, which tells everyone
    # on connection.events; the publisher pauses the connection's jobs, keeping them.
    await harness.platforms.health.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            tenant_id=harness.tenant,
            connection_id=page,
            status=common_pb2.CONNECTION_STATUS_ATTENTION,
            reason="Facebook needs the Page role confirmed.",
            source="health_check",
        )
    )
    for job_id in (soon_job, later_job):
        paused = await harness.wait_job(job_id, {pb.JOB_STATE_PAUSED})
        assert "Page role" in paused.state_reason

    async def one_missed() -> bool:
        missed = await harness.health.CountMissedJobs(
            pb.CountMissedJobsRequest(tenant_id=harness.tenant, connection_id=page)
        )
        return bool(missed.missed_count == 1)

    await harness.wait_for(one_missed, "the soon job to fall due while paused")
    missed = await harness.api.CountMissedJobs(
        pb.CountMissedJobsRequest(tenant_id=harness.tenant, connection_id=page)
    )
    assert missed.paused
    assert missed.oldest_due_at == soon.post.jobs[0].due_at
    error = await rpc_error(
        harness.api.BackfillConnection(
            pb.BackfillConnectionRequest(
                tenant_id=harness.tenant,
                connection_id=page,
                action=pb.BACKFILL_ACTION_PUBLISH,
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "resume" in error.details()
    assert await harness.platforms.posts(platform="meta", text_contains=soon_text) == []

    # The person reconnects: connectors says HEALTHY, the publisher resumes. The job not
    # yet due is back on schedule; the one that fell due waits as a missed item.
    await harness.platforms.connect(harness.tenant)
    await harness.wait_job(later_job, {pb.JOB_STATE_SCHEDULED})
    missed = await harness.api.CountMissedJobs(
        pb.CountMissedJobsRequest(tenant_id=harness.tenant, connection_id=page)
    )
    assert missed.missed_count == 1
    assert not missed.paused
    assert (await harness.job(soon_job)).state == pb.JOB_STATE_PAUSED

    filled = await harness.api.BackfillConnection(
        pb.BackfillConnectionRequest(
            tenant_id=harness.tenant,
            connection_id=page,
            action=pb.BACKFILL_ACTION_PUBLISH,
            requested_by="user:u_1",
        )
    )
    assert filled.affected_count == 1
    done = await harness.wait_job(soon_job)
    assert done.state == pb.JOB_STATE_PUBLISHED, done.state_reason
    assert done.idempotency_key == soon.post.jobs[0].idempotency_key
    posts = await harness.platforms.posts(platform="meta", text_contains=soon_text)
    assert len(posts) == 1
    await harness.api.CancelPost(
        pb.CancelPostRequest(tenant_id=harness.tenant, post_id=later.post.id)
    )


async def test_a_revoked_token_at_publish_time_pauses_the_connection(
    harness: Any, pages: Any
) -> None:
    await harness.start()
    page, other = pages[COFFEE_PAGE], pages[TEA_PAGE]
    await harness.platforms.fault(
        platform="meta", account=COFFEE_PAGE, kind="token_revoked", path_contains="/feed"
    )
    first_text = text("Revoked")
    first = await harness.create("revoked", [page, other], first_text)
    coffee_job, tea_job = (j.id for j in first.post.jobs)
    paused = await harness.wait_job(coffee_job, {pb.JOB_STATE_PAUSED})
    assert paused.attempts[0].error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
    assert paused.state_reason.startswith("Paused:")
    # The other Page is not affected.
    assert (await harness.wait_job(tea_job)).state == pb.JOB_STATE_PUBLISHED
    # New posts for the paused connection wait too, kept.
    second = await harness.create("after", [page], text("After"))
    assert second.post.jobs[0].state == pb.JOB_STATE_PAUSED

    resumed = await harness.api.ResumeConnection(
        pb.ResumeConnectionRequest(tenant_id=harness.tenant, connection_id=page, source="user:u_1")
    )
    assert resumed.missed_count == 2
    filled = await harness.api.BackfillConnection(
        pb.BackfillConnectionRequest(
            tenant_id=harness.tenant, connection_id=page, action=pb.BACKFILL_ACTION_PUBLISH
        )
    )
    assert filled.affected_count == 2
    for job_id in (coffee_job, second.post.jobs[0].id):
        assert (await harness.wait_job(job_id)).state == pb.JOB_STATE_PUBLISHED
    coffee_posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert sorted(p["text"] for p in coffee_posts).count(first_text) == 1
    assert len(coffee_posts) == 2


async def test_approval_holds_a_post_until_approved_and_reject_cancels(
    harness: Any, pages: Any
) -> None:
    await harness.start()
    page = pages[COFFEE_PAGE]
    held_text = text("Needs a yes")
    held = await harness.create("held", [page], held_text, requires_approval=True)
    assert held.post.status == pb.POST_STATUS_AWAITING_APPROVAL
    assert held.post.jobs[0].state == pb.JOB_STATE_AWAITING_APPROVAL
    # A post created after it, without approval, goes out first.
    free = await harness.create("free", [page], text("No approval needed"))
    assert (await harness.wait_job(free.post.jobs[0].id)).state == pb.JOB_STATE_PUBLISHED
    assert (await harness.job(held.post.jobs[0].id)).state == pb.JOB_STATE_AWAITING_APPROVAL
    assert await harness.platforms.posts(platform="meta", text_contains=held_text) == []

    approved = await harness.api.ApprovePost(
        pb.ApprovePostRequest(tenant_id=harness.tenant, post_id=held.post.id, approved_by="u_boss")
    )
    assert approved.post.approval.approved_by == "u_boss"
    done = await harness.wait_job(held.post.jobs[0].id)
    assert done.state == pb.JOB_STATE_PUBLISHED
    assert len(await harness.platforms.posts(platform="meta", text_contains=held_text)) == 1
    # Approving again changes nothing.
    again = await harness.api.ApprovePost(
        pb.ApprovePostRequest(tenant_id=harness.tenant, post_id=held.post.id, approved_by="x")
    )
    assert again.post.approval.approved_by == "u_boss"

    nope = await harness.create("nope", [page], text("Rejected"), requires_approval=True)
    rejected = await harness.api.RejectPost(
        pb.RejectPostRequest(
            tenant_id=harness.tenant, post_id=nope.post.id, rejected_by="u_boss", reason="Off brand"
        )
    )
    assert rejected.post.status == pb.POST_STATUS_REJECTED
    assert rejected.post.jobs[0].state == pb.JOB_STATE_CANCELLED
    assert "Off brand" in rejected.post.jobs[0].state_reason
    error = await rpc_error(
        harness.api.ApprovePost(
            pb.ApprovePostRequest(tenant_id=harness.tenant, post_id=nope.post.id)
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rejected" in error.details()
    error = await rpc_error(
        harness.api.RejectPost(pb.RejectPostRequest(tenant_id=harness.tenant, post_id=free.post.id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
