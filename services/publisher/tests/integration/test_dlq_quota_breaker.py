"""Giving up well (dead letters, replay with the same key), waiting well (the quota
ledger, the platform circuit breaker)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postd.common.v1 import common_pb2
from postd.events.v1.publish_job_pb2 import PublishJob
from postd.publisher.v1 import publisher_pb2 as pb
from postd_common.kafka import H_DLQ_ERROR

from .conftest import COFFEE_PAGE, TEA_PAGE, read_topic

pytestmark = pytest.mark.integration


def text(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


async def test_a_refused_post_is_dead_lettered_at_once_and_replays_with_its_key(
    harness: Any, pages: Any, infra: Any
) -> None:
    await harness.start()
    await harness.platforms.fault(
        platform="meta",
        account=COFFEE_PAGE,
        kind="platform_error",
        error="meta_blocked",
        path_contains="/feed",
    )
    body = text("Blocked once")
    created = await harness.create("blocked", [pages[COFFEE_PAGE]], body)
    job_id = created.post.jobs[0].id
    job = await harness.wait_job(job_id)
    assert job.state == pb.JOB_STATE_FAILED
    assert job.dead_lettered
    assert [a.outcome for a in job.attempts] == [pb.ATTEMPT_OUTCOME_FAILED]
    assert job.last_error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert job.state_reason.startswith("Not retried: ")
    letters = await harness.api.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=harness.tenant))
    assert [d.job.id for d in letters.dead_letters] == [job_id]
    assert letters.dead_letters[0].reason == job.state_reason
    messages = await asyncio.to_thread(
        read_topic, infra.bootstrap, harness.topics.dlq, until=lambda m: len(m) >= 1
    )
    assert [PublishJob.FromString(m.value()).job_id for m in messages] == [job_id]
    assert dict(messages[0].headers())[H_DLQ_ERROR].decode() == job.state_reason

    replayed = await harness.api.ReplayDeadLetters(
        pb.ReplayDeadLettersRequest(tenant_id=harness.tenant, job_ids=[job_id])
    )
    assert list(replayed.job_ids) == [job_id]
    done = await harness.wait_job(job_id)
    assert done.state == pb.JOB_STATE_PUBLISHED, done.state_reason
    assert done.idempotency_key == job.idempotency_key
    assert not done.dead_lettered
    assert [a.number for a in done.attempts] == [1, 2]
    assert len(await harness.platforms.posts(platform="meta", text_contains=body)) == 1
    letters = await harness.api.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=harness.tenant))
    assert list(letters.dead_letters) == []


async def test_exhausted_retries_dead_letter_and_replay_by_filter(harness: Any, pages: Any) -> None:
    await harness.start(POSTD_PUBLISH_MAX_ATTEMPTS="2")
    await harness.platforms.fault(
        platform="meta", account=COFFEE_PAGE, kind="server_error", times=-1, path_contains="/feed"
    )
    bodies = [text("Down"), text("Still down")]
    jobs = []
    for i, body in enumerate(bodies):
        created = await harness.create(f"down-{i}", [pages[COFFEE_PAGE]], body)
        jobs.append(created.post.jobs[0].id)
    for job_id in jobs:
        job = await harness.wait_job(job_id)
        assert job.state == pb.JOB_STATE_FAILED
        assert job.dead_lettered
        assert job.attempt_count == 2
        assert job.state_reason.startswith("Gave up after 2 attempts")
    await harness.platforms.clear_faults()
    replayed = await harness.api.ReplayDeadLetters(
        pb.ReplayDeadLettersRequest(
            tenant_id=harness.tenant,
            filter=pb.DeadLetterFilter(categories=[common_pb2.ERROR_CATEGORY_TRANSIENT]),
        )
    )
    assert sorted(replayed.job_ids) == sorted(jobs)
    assert not replayed.truncated
    for job_id in jobs:
        job = await harness.wait_job(job_id)
        assert job.state == pb.JOB_STATE_PUBLISHED
        assert job.attempt_count == 3  # a fresh round after the two failed attempts
    posts = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert sorted(p["text"] for p in posts) == sorted(bodies)


async def test_over_quota_is_deferred_until_the_slot_frees_not_failed(
    harness: Any, pages: Any
) -> None:
    await harness.start(POSTD_PUBLISH_QUOTA_RULES="facebook:publish_per_24h:2:86400")
    bodies = [text(f"Quota {i}") for i in range(3)]
    jobs = []
    for i, body in enumerate(bodies):
        created = await harness.create(f"quota-{i}", [pages[COFFEE_PAGE]], body)
        jobs.append(created.post.jobs[0].id)
    other = await harness.create("quota-tea", [pages[TEA_PAGE]], text("Other account"))
    assert (await harness.wait_job(other.post.jobs[0].id)).state == pb.JOB_STATE_PUBLISHED
    first, second = [await harness.wait_job(j) for j in jobs[:2]]
    assert first.state == second.state == pb.JOB_STATE_PUBLISHED
    third = await harness.job(jobs[2])
    assert third.state == pb.JOB_STATE_SCHEDULED
    assert third.attempt_count == 0
    assert third.state_reason.startswith(
        "Deferred: facebook allows 2 posts per account in 24 hours"
    )
    frees = third.next_attempt_at.ToDatetime(tzinfo=UTC)
    assert frees >= first.attempts[0].started_at.ToDatetime(tzinfo=UTC) + timedelta(hours=23)
    assert frees <= datetime.now(UTC) + timedelta(hours=24)
    coffee = await harness.platforms.posts(platform="meta", account=COFFEE_PAGE)
    assert sorted(p["text"] for p in coffee) == sorted(bodies[:2])


async def test_an_outage_across_tenants_opens_the_breaker_and_probes_close_it(
    harness: Any, pages: Any
) -> None:
    await harness.start(
        POSTD_PUBLISH_MAX_ATTEMPTS="10",
        POSTD_BREAKER_MIN_FAILURES="3",
        POSTD_BREAKER_MIN_TENANTS="2",
        POSTD_BREAKER_COOLDOWN_SECONDS="1",
    )
    other_tenant = str(uuid.uuid4())
    other_pages = await harness.platforms.connect(other_tenant)
    await harness.platforms.fault(
        platform="meta", account="*", kind="outage", times=-1, path_contains="/feed"
    )
    jobs: list[tuple[str, str]] = []
    for tenant, conns in ((harness.tenant, pages), (other_tenant, other_pages)):
        for page in (COFFEE_PAGE, TEA_PAGE):
            created = await harness.create(
                f"outage-{page}", [conns[page]], text("Outage"), tenant=tenant
            )
            jobs.append((tenant, created.post.jobs[0].id))

    async def breaker_open() -> bool:
        rows = await harness.sql("SELECT state FROM publisher.breakers WHERE platform = 'facebook'")
        return bool(rows)

    await harness.wait_for(breaker_open, "the facebook breaker to open")
    attempts_when_open = {j: (await harness.job(j, t)).attempt_count for t, j in jobs}
    for tenant, job_id in jobs:
        job = await harness.job(job_id, tenant)
        assert job.state != pb.JOB_STATE_FAILED  # waiting, not failing

    await harness.platforms.clear_faults()

    async def breaker_closed() -> bool:
        return not await breaker_open()

    await harness.wait_for(breaker_closed, "a probe to close the breaker")
    for tenant, job_id in jobs:
        job = await harness.wait_job(job_id, tenant=tenant)
        assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
        # While open, the jobs waited: at most the probe and the final attempt came after.
        assert job.attempt_count <= attempts_when_open[job_id] + 2
