"""Publishing end to end: publisher → Kafka → worker → connectors → sandbox (HTTP)."""

from __future__ import annotations

import uuid

import pytest

from postd.publisher.v1 import publisher_pb2 as pb

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"


async def test_a_publish_goes_through_and_is_recorded(harness, pages) -> None:
    await harness.start()
    page = pages[COFFEE_PAGE]
    text = f"Fresh beans {uuid.uuid4().hex[:6]}"
    created = await harness.create("post-1", [page], text)
    assert not created.existing
    job_id = created.post.jobs[0].id
    job = await harness.wait_job(job_id)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    assert job.platform_post_id.startswith(COFFEE_PAGE + "_")
    assert [a.outcome for a in job.attempts] == [pb.ATTEMPT_OUTCOME_PUBLISHED]
    assert job.finished_at.seconds > 0
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == [text]
    assert posts[0]["id"] == job.platform_post_id
    post = await harness.post(created.post.id)
    assert post.status == pb.POST_STATUS_PUBLISHED
