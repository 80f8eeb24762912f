"""Faults of our own: a worker process killed mid-publish, a broker restarted empty.
Nothing is lost and nothing is published twice."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from postd.publisher.v1 import publisher_pb2 as pb
from postd_common.devinfra import EmbeddedBroker, free_port
from postd_common.kafka import KafkaSettings, ensure_topics
from postd_publisher.adapters.events import Topics
from postd_publisher.app import topic_specs

from .conftest import COFFEE_PAGE, TEA_PAGE

pytestmark = pytest.mark.integration


def text(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _worker_ready(harness: Any, pages: Any, spawn: Any, name: str) -> Any:
    env = {**harness.env, "POSTD_PUBLISHER_ROLES": "worker", "POSTD_PUBLISHER_WORKER_ID": name}
    process = spawn(env)
    warm = await harness.create(f"warm-{name}", [pages[TEA_PAGE]], text("Warm up"))
    warmed = await harness.wait_job(warm.post.jobs[0].id, within=60)
    assert warmed.attempts[-1].worker_id == name
    return process


async def _attempt_started(harness: Any, job_id: str) -> None:
    async def started() -> bool:
        rows = await harness.sql(
            "SELECT outcome FROM publisher.attempts WHERE job_id = $1::uuid", job_id
        )
        return [r["outcome"] for r in rows] == ["IN_PROGRESS"]

    await harness.wait_for(started, "the attempt to start", within=30)


async def test_a_worker_killed_after_the_platform_published_does_not_post_twice(
    harness: Any, pages: Any, worker_process: Any
) -> None:
    """The worst moment to die: the post is live, the outcome not yet recorded."""
    await harness.start("api,dispatcher")
    first = await _worker_ready(harness, pages, worker_process, "worker-a")
    await harness.platforms.fault(
        platform="meta", account=COFFEE_PAGE, kind="slow", delay_ms=1000, path_contains="/feed"
    )
    body = text("Live but unrecorded")
    created = await harness.create("killed-after", [pages[COFFEE_PAGE]], body)
    job_id = created.post.jobs[0].id
    await _attempt_started(harness, job_id)
    # Hold the job row so the worker cannot record the outcome it is about to get.
    async with harness.pool.acquire() as conn:
        lock = conn.transaction()
        await lock.start()
        await conn.execute(
            f"SELECT 1 FROM {harness.schema}.jobs WHERE id = $1::uuid FOR UPDATE", job_id
        )

        async def stuck_recording() -> bool:
            live = await harness.platforms.posts(platform="meta", text_contains=body)
            waiting = await harness.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'postd-publisher' AND wait_event_type = 'Lock'"
            )
            return bool(live) and waiting >= 1

        await harness.wait_for(stuck_recording, "the worker to wait on its record", within=30)
        first.kill()
        # The dead worker's half-sent statement dies with its connection (PostgreSQL
        # would notice the dropped client on its own; here it does not have to wait).
        await harness.pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'postd-publisher' AND wait_event_type = 'Lock'"
        )
        await lock.rollback()
    assert first.process.returncode == -9

    second = await _worker_ready(harness, pages, worker_process, "worker-b")
    job = await harness.wait_job(job_id, within=60)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    assert [a.outcome for a in job.attempts] == [
        pb.ATTEMPT_OUTCOME_UNKNOWN,
        pb.ATTEMPT_OUTCOME_RECONCILED,
    ]
    assert [a.worker_id for a in job.attempts] == ["worker-a", "worker-b"]
    posts = await harness.platforms.posts(platform="meta", text_contains=body)
    assert len(posts) == 1
    assert job.platform_post_id == posts[0]["id"]
    second.stop()
    assert "Traceback" not in Path(second.log).read_text()


async def test_a_worker_killed_during_the_platform_call_loses_nothing(
    harness: Any, pages: Any, worker_process: Any
) -> None:
    await harness.start("api,dispatcher")
    first = await _worker_ready(harness, pages, worker_process, "worker-a")
    await harness.platforms.fault(
        platform="meta", account=COFFEE_PAGE, kind="slow", delay_ms=1500, path_contains="/feed"
    )
    body = text("Mid-flight")
    created = await harness.create("killed-during", [pages[COFFEE_PAGE]], body)
    job_id = created.post.jobs[0].id
    await _attempt_started(harness, job_id)
    first.kill()
    # Posts created while no worker runs are kept too.
    waiting = [
        await harness.create(f"while-down-{i}", [pages[TEA_PAGE]], text("While down"))
        for i in range(3)
    ]
    second = await _worker_ready(harness, pages, worker_process, "worker-b")
    job = await harness.wait_job(job_id, within=60)
    assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
    first_attempt, *later = job.attempts
    assert first_attempt.outcome == pb.ATTEMPT_OUTCOME_UNKNOWN
    # Whether the platform finished the orphaned call or not, the post exists once.
    assert later[-1].outcome in (pb.ATTEMPT_OUTCOME_PUBLISHED, pb.ATTEMPT_OUTCOME_RECONCILED)
    assert len(await harness.platforms.posts(platform="meta", text_contains=body)) == 1
    for made in waiting:
        done = await harness.wait_job(made.post.jobs[0].id, within=60)
        assert done.state == pb.JOB_STATE_PUBLISHED
    second.stop()


async def test_the_broker_restarted_empty_loses_nothing(
    harness: Any, pages: Any, tmp_path: Path, infra: Any
) -> None:
    port = free_port()
    broker = EmbeddedBroker(port, log_file=tmp_path / "broker.log")
    bootstrap = broker.start()
    restarted: EmbeddedBroker | None = None
    try:
        names = Topics(
            harness.topics.jobs,
            harness.topics.results,
            harness.topics.dlq,
            harness.topics.events,
            harness.topics.analytics,
        )
        await asyncio.to_thread(ensure_topics, KafkaSettings(bootstrap), topic_specs(names))
        await harness.start(KAFKA_BOOTSTRAP=bootstrap)
        targets = [pages[COFFEE_PAGE], pages[TEA_PAGE]]
        bodies: dict[str, str] = {}
        now = datetime.now(UTC)
        for i in range(16):
            schedule = pb.Schedule(publish_at=at(now + timedelta(seconds=(i % 4) * 2)))
            body = text(f"Before {i}")
            made = await harness.create(f"b-{i}", [targets[i % 2]], body, schedule=schedule)
            bodies[made.post.jobs[0].id] = body

        async def some_published() -> bool:
            rows = await harness.sql(
                "SELECT count(*) AS n FROM publisher.jobs WHERE state = 'PUBLISHED'"
            )
            return bool(rows[0]["n"] >= 3)

        await harness.wait_for(some_published, "a few publishes before the restart")
        broker.stop()
        for i in range(4):
            body = text(f"During {i}")
            made = await harness.create(f"d-{i}", [targets[i % 2]], body)
            bodies[made.post.jobs[0].id] = body
        await asyncio.sleep(1.0)
        restarted = EmbeddedBroker(port, log_file=tmp_path / "broker-2.log")
        restarted.start()  # empty: every topic and offset is gone
        for i in range(4):
            body = text(f"After {i}")
            made = await harness.create(f"a-{i}", [targets[i % 2]], body)
            bodies[made.post.jobs[0].id] = body
        for job_id in bodies:
            job = await harness.wait_job(job_id, within=120)
            assert job.state == pb.JOB_STATE_PUBLISHED, job.state_reason
        published = await harness.platforms.posts(platform="meta")
        counts = Counter(p["text"] for p in published)
        assert {b: counts[b] for b in bodies.values()} == dict.fromkeys(bodies.values(), 1)
    finally:
        for running in harness.running:
            await running.close()
        harness.running.clear()
        broker.stop()
        if restarted is not None:
            restarted.stop()
