"""The PostgreSQL adapter's claims on the real database: one claim per attempt even
when duplicate and stale deliveries arrive in the same coalesced batch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postd.common.v1.common_pb2 import PostContent
from postd_publisher.adapters.postgres import PostgresJobStore
from postd_publisher.domain.model import JobState, ScheduleSpec
from postd_publisher.ports import ClaimRequest, DeadLetterFilter, NewJob, NewPost

pytestmark = pytest.mark.integration


async def _one_due_job(store: PostgresJobStore, tenant_id: str, now: datetime) -> str:
    job_id = str(uuid.uuid4())
    await store.insert_post(
        NewPost(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            idempotency_key=f"k-{job_id}",
            fingerprint="f",
            content=PostContent(text="hi"),
            schedule=ScheduleSpec(),
            publish_at=None,
            requires_approval=False,
            created_by="",
            created_at=now,
            jobs=[
                NewJob(
                    id=job_id,
                    position=0,
                    connection_id="c1",
                    platform="facebook",
                    idempotency_key="pj_k",
                    content=PostContent(text="hi"),
                    state=JobState.SCHEDULED,
                    due_at=now - timedelta(seconds=1),
                    max_attempts=4,
                )
            ],
        )
    )
    return job_id


async def test_one_claim_per_attempt_among_duplicates_and_stale_deliveries(
    pg_pool: Any, schema: str, tenant_id: str
) -> None:
    store = PostgresJobStore(pg_pool, schema=schema)
    now = datetime.now(UTC)
    job_id = await _one_due_job(store, tenant_id, now)
    async with store.claim_due(ClaimRequest(now=now, limit=10, lease_seconds=60)) as claim:
        assert [j.job_id for j in claim.jobs] == [job_id]
        assert claim.jobs[0].attempt == 1
    results = await asyncio.gather(
        store.claim_attempt(tenant_id, job_id, 2, "w", now, 30),  # stale: no such attempt
        store.claim_attempt(tenant_id, job_id, 1, "w", now, 30),
        store.claim_attempt(tenant_id, job_id, 1, "w", now, 30),  # duplicate delivery
        store.claim_attempt("another-tenant", job_id, 1, "w", now, 30),
    )
    claimed = [r for r in results if r is not None]
    assert len(claimed) == 1
    assert results[1] is claimed[0] or results[2] is claimed[0]
    assert claimed[0].attempt == 1
    job = await store.get_job(tenant_id, job_id)
    assert job is not None
    assert job.state is JobState.PUBLISHING
    assert [(a.number, a.outcome.value) for a in job.attempts] == [(1, "IN_PROGRESS")]
    assert await store.get_job("another-tenant", job_id) is None


async def test_a_job_that_keeps_stopping_workers_is_set_aside(
    pg_pool: Any, schema: str, tenant_id: str
) -> None:
    store = PostgresJobStore(pg_pool, schema=schema)
    now = datetime.now(UTC)
    job_id = await _one_due_job(store, tenant_id, now)
    for attempt in (1, 2, 3, 4):
        async with store.claim_due(ClaimRequest(now=now, limit=10, lease_seconds=60)) as claim:
            assert [j.attempt for j in claim.jobs] == [attempt]
        assert await store.claim_attempt(tenant_id, job_id, attempt, "w", now, 30) is not None
        # The worker dies: its lease passes without an outcome.
        now += timedelta(seconds=31)
        sweep = await store.sweep_stale(now, 100, max_lost_workers=3)
        assert sweep.recovered == 1
        job = await store.get_job(tenant_id, job_id)
        assert job is not None
        if attempt < 3:
            assert job.state is JobState.RETRYING
            assert job.budget_used == 0
        elif attempt == 3:
            # Stopped three workers: its attempts are spent, so the next one only
            # looks the post up (it may have gone out) and never posts it again.
            assert job.state is JobState.RETRYING
            assert job.budget_used == job.max_attempts
            assert job.outcome_unknown
            assert "only checks whether the post went out" in job.state_reason
    # The lookup stopped a worker too: set aside, not retried automatically.
    assert job.state is JobState.FAILED
    assert job.dead_lettered
    assert job.state_reason.startswith("Set aside: the worker publishing it stopped 4 times")
    assert [a.outcome.value for a in job.attempts] == ["UNKNOWN"] * 4
    letters = await store.list_dead_letters(tenant_id, DeadLetterFilter(), None, 10)
    assert [d.job.id for d in letters] == [job_id]
    # A replay gives it a fresh start, and its next attempt looks the post up first.
    ids, _ = await store.replay_dead_letters(tenant_id, [job_id], None, 10, now)
    assert ids == [job_id]
    replayed = await store.get_job(tenant_id, job_id)
    assert replayed is not None
    assert replayed.state is JobState.SCHEDULED
    assert replayed.outcome_unknown
