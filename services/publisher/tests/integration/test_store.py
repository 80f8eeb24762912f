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
from postd_publisher.ports import ClaimRequest, NewJob, NewPost

pytestmark = pytest.mark.integration


async def test_one_claim_per_attempt_among_duplicates_and_stale_deliveries(
    pg_pool: Any, schema: str, tenant_id: str
) -> None:
    store = PostgresJobStore(pg_pool, schema=schema)
    now = datetime.now(UTC)
    job_id = str(uuid.uuid4())
    await store.insert_post(
        NewPost(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            idempotency_key="k",
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
