"""Publishing end to end: publisher → Kafka → worker → connectors → sandbox over HTTP,
with the platform failing in the ways platforms do."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from postd.common.v1 import common_pb2
from postd.events.v1.publish_job_pb2 import PublishJob
from postd.events.v1.publish_result_pb2 import PublishOutcome, PublishResult
from postd.publisher.v1 import publisher_pb2 as pb
from postd_common.kafka import EventProducer, message_headers

from .conftest import COFFEE_PAGE, read_topic

pytestmark = pytest.mark.integration


def unique_text(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


async def test_a_publish_goes_through_and_is_recorded(harness: Any, pages: Any, infra: Any) -> None:
    await harness.start()
    page = pages[COFFEE_PAGE]
    text = unique_text("Fresh beans")
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

    # The receipt travels on publish.results, keyed by connection, with the due time.
    messages = await asyncio.to_thread(
        read_topic, infra.bootstrap, harness.topics.results, until=lambda m: len(m) >= 1
    )
    results = [PublishResult.FromString(m.value()) for m in messages]
    assert [(r.job_id, r.outcome) for r in results] == [
        (job_id, PublishOutcome.PUBLISH_OUTCOME_PUBLISHED)
    ]
    assert results[0].platform_post_id == job.platform_post_id
    assert results[0].idempotency_key == job.idempotency_key
    assert messages[0].key() == page.encode()


async def test_a_transient_5xx_is_retried_and_publishes_once(harness: Any, pages: Any) -> None:
    await harness.start()
    await harness.platforms.fault(
        platform="meta", account=COFFEE_PAGE, kind="server_error", path_contains="/feed"
    )
    text = unique_text("Retry me")
    created = await harness.create("post-5xx", [pages[COFFEE_PAGE]], text)
    job = await harness.wait_job(created.post.jobs[0].id)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    outcomes = [a.outcome for a in job.attempts]
    assert outcomes == [pb.ATTEMPT_OUTCOME_FAILED_RETRYABLE, pb.ATTEMPT_OUTCOME_PUBLISHED]
    first = job.attempts[0]
    assert first.error.category == common_pb2.ERROR_CATEGORY_TRANSIENT
    assert first.error.message  # plain words, recorded with the attempt
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == [text]


async def test_a_lost_response_leads_to_one_post_not_two(harness: Any, pages: Any) -> None:
    await harness.start()
    await harness.platforms.fault(
        platform="meta", account=COFFEE_PAGE, kind="lost_response", path_contains="/feed"
    )
    text = unique_text("Did it post?")
    created = await harness.create("post-lost", [pages[COFFEE_PAGE]], text)
    job = await harness.wait_job(created.post.jobs[0].id)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    outcomes = [a.outcome for a in job.attempts]
    assert outcomes == [pb.ATTEMPT_OUTCOME_UNKNOWN, pb.ATTEMPT_OUTCOME_RECONCILED]
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == [text]
    assert job.platform_post_id == posts[0]["id"]


async def test_a_lost_response_on_the_last_attempt_is_found_not_dead_lettered(
    harness: Any, pages: Any
) -> None:
    # Two attempts allowed: the first meets a 5xx, the last one's answer is lost
    # after the post was made. The job must end published (found), not in the DLQ
    # with its post on the platform (a replay from there would post it twice).
    await harness.start(POSTD_PUBLISH_MAX_ATTEMPTS="2")
    for kind in ("server_error", "lost_response"):
        await harness.platforms.fault(
            platform="meta", account=COFFEE_PAGE, kind=kind, path_contains="/feed"
        )
    text = unique_text("Last chance")
    created = await harness.create("post-lost-last", [pages[COFFEE_PAGE]], text)
    job = await harness.wait_job(created.post.jobs[0].id)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    assert not job.dead_lettered
    assert [a.outcome for a in job.attempts] == [
        pb.ATTEMPT_OUTCOME_FAILED_RETRYABLE,
        pb.ATTEMPT_OUTCOME_UNKNOWN,
        pb.ATTEMPT_OUTCOME_RECONCILED,
    ]
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == [text]
    assert job.platform_post_id == posts[0]["id"]


async def test_429_with_retry_after_is_honoured(harness: Any, pages: Any) -> None:
    await harness.start()
    await harness.platforms.fault(
        platform="meta",
        account=COFFEE_PAGE,
        kind="rate_limit",
        retry_after=2,
        path_contains="/feed",
    )
    text = unique_text("Throttled")
    created = await harness.create("post-429", [pages[COFFEE_PAGE]], text)
    job = await harness.wait_job(created.post.jobs[0].id, within=90)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    first, *rest = job.attempts
    assert first.outcome == pb.ATTEMPT_OUTCOME_FAILED_RETRYABLE
    assert first.error.category == common_pb2.ERROR_CATEGORY_RATE_LIMITED
    assert first.error.retry_after.seconds >= 2
    # No attempt went to the platform before the time it asked for.
    not_before = first.ended_at.ToDatetime() + first.error.retry_after.ToTimedelta()
    assert all(a.started_at.ToDatetime() >= not_before for a in rest)
    assert rest[-1].outcome == pb.ATTEMPT_OUTCOME_PUBLISHED
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == [text]


async def test_a_duplicate_delivery_of_a_published_job_is_a_no_op(
    harness: Any, pages: Any, infra: Any
) -> None:
    await harness.start()
    text = unique_text("Only once")
    created = await harness.create("post-dup", [pages[COFFEE_PAGE]], text)
    job = await harness.wait_job(created.post.jobs[0].id)
    assert job.state == pb.JOB_STATE_PUBLISHED
    # Kafka redelivers the very message that was already handled (same attempt).
    message = PublishJob(
        job_id=job.id,
        post_id=job.post_id,
        tenant_id=job.tenant_id,
        connection_id=job.connection_id,
        platform=job.platform,
        idempotency_key=job.idempotency_key,
        content=job.content,
        attempt=1,
        max_attempts=job.max_attempts,
    )
    producer = EventProducer(infra.kafka("tests"))
    try:
        for _ in range(2):
            await producer.produce(
                harness.topics.jobs,
                message,
                key=job.connection_id,
                headers=message_headers(message, tenant_id=job.tenant_id),
            )
        # A marker job published after the duplicates shows the worker got past them.
        marker = await harness.create("post-marker", [pages[COFFEE_PAGE]], unique_text("Marker"))
        await harness.wait_job(marker.post.jobs[0].id)
    finally:
        await producer.close()
    again = await harness.job(job.id)
    assert again.attempt_count == 1
    assert again.state == pb.JOB_STATE_PUBLISHED
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert sum(1 for p in posts if p["text"] == text) == 1


async def test_a_post_for_an_account_the_platform_holds_says_why_it_waits(
    harness: Any, pages: Any
) -> None:
    """A job created while its account is held (Retry-After) is deferred past the
    hold with the reason, not left overdue with no word (found by bench.chaos)."""
    await harness.start()
    await harness.platforms.fault(
        platform="meta",
        account=COFFEE_PAGE,
        kind="rate_limit",
        retry_after=3600,
        path_contains="/feed",
    )
    await harness.create("held-1", [pages[COFFEE_PAGE]], unique_text("Held first"))
    holds: list[Any] = []

    async def held() -> bool:
        holds[:] = await harness.sql(
            "SELECT until FROM publisher.quota_blocks WHERE connection_id = $1",
            pages[COFFEE_PAGE],
        )
        return bool(holds)

    await harness.wait_for(held, "the account to be held", within=30)
    held_until = holds[0]["until"].replace(tzinfo=None)
    second = await harness.create("held-2", [pages[COFFEE_PAGE]], unique_text("Held second"))
    job = await harness.job(second.post.jobs[0].id)
    assert job.state == pb.JOB_STATE_SCHEDULED
    assert job.state_reason.startswith("Deferred: facebook asked to wait until"), job.state_reason
    assert abs((job.next_attempt_at.ToDatetime() - held_until).total_seconds()) < 1
    assert job.attempt_count == 0
