"""One tenant's burst does not starve another tenant's single post."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from postd.publisher.v1 import publisher_pb2 as pb

from .conftest import COFFEE_PAGE

pytestmark = pytest.mark.integration


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_a_burst_of_one_tenant_does_not_starve_another_tenants_post(
    harness: Any, pages: Any
) -> None:
    # A short queue makes the dispatcher ration: who gets the next slots matters.
    await harness.start(POSTD_DISPATCH_MAX_IN_FLIGHT="10")
    quiet_tenant = str(uuid.uuid4())
    quiet_pages = await harness.platforms.connect(quiet_tenant)
    due = datetime.now(UTC) + timedelta(seconds=6)
    burst_size = 200
    sem = asyncio.Semaphore(16)

    async def burst_post(i: int) -> str:
        async with sem:
            made = await harness.create(
                f"burst-{i}",
                [pages[COFFEE_PAGE]],
                f"Burst {i} {uuid.uuid4().hex[:6]}",
                schedule=pb.Schedule(publish_at=at(due)),
            )
            return str(made.post.jobs[0].id)

    burst = await asyncio.gather(*(burst_post(i) for i in range(burst_size)))
    # The other tenant's post falls due a moment AFTER the whole burst: first come,
    # first served would put it last.
    single = await harness.create(
        "single",
        [quiet_pages[COFFEE_PAGE]],
        f"Single {uuid.uuid4().hex[:6]}",
        tenant=quiet_tenant,
        schedule=pb.Schedule(publish_at=at(due + timedelta(milliseconds=1))),
    )
    assert datetime.now(UTC) < due, "creating the burst took longer than its lead time"
    single_job = await harness.wait_job(single.post.jobs[0].id, tenant=quiet_tenant, within=90)
    assert single_job.state == pb.JOB_STATE_PUBLISHED
    rows = await harness.sql(
        "SELECT count(*) AS n FROM publisher.jobs WHERE id = ANY($1::uuid[]) "
        "AND state = 'PUBLISHED' AND finished_at < $2",
        burst,
        single_job.finished_at.ToDatetime(tzinfo=UTC),
    )
    # Its share came in the first rounds, with only a handful of the burst ahead.
    assert rows[0]["n"] < 30, f"{rows[0]['n']} of the burst went first"
    for job_id in burst[-3:]:
        assert (await harness.wait_job(job_id, within=120)).state == pb.JOB_STATE_PUBLISHED
