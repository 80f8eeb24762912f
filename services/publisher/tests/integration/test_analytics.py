"""Analytics through the publishing machinery, on real parts (PostgreSQL, the broker,
connectors and the sandbox over HTTP): published posts are collected on their
schedule, snapshots and rollups agree with the sandbox, and collection backs off when
an account's call budget is near its limit while a publish due at the same moment
still goes out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as cpb
from postd.publisher.v1 import analytics_pb2 as apb
from postd.publisher.v1 import publisher_pb2 as pb

from .conftest import COFFEE_PAGE, Harness

pytestmark = pytest.mark.integration

QUICK = {
    # A snapshot every second in a post's first hour; accounts every 2 seconds.
    "POSTD_ANALYTICS_POST_SCHEDULE": "3600:1",
    "POSTD_ANALYTICS_ACCOUNT_SECONDS": "2",
    "POSTD_ANALYTICS_LEASE_SECONDS": "10",
}


def text(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


@pytest.fixture
async def pages(harness: Harness) -> dict[str, str]:
    """The tenant's two Facebook Pages, connected for publishing and analytics."""
    return await harness.platforms.connect(harness.tenant, capabilities=("publish", "analytics"))


async def task_of(harness: Harness, job_id: str) -> Any:
    rows = await harness.sql("SELECT * FROM publisher.analytics_tasks WHERE job_id = $1", job_id)
    return rows[0] if rows else None


async def test_published_posts_are_collected_and_aggregated(
    harness: Harness, pages: dict[str, str]
) -> None:
    await harness.start("api", **QUICK)
    working = await harness.start("dispatcher,worker", **QUICK)
    jobs = []
    for i in range(3):
        made = await harness.create(f"a-{i}", [pages[COFFEE_PAGE]], text(f"Analytics {i}"))
        jobs.append(made.post.jobs[0].id)
    posts = [await harness.wait_job(j) for j in jobs]
    assert all(p.state == pb.JOB_STATE_PUBLISHED for p in posts)

    async def collected(times: int) -> bool:
        tasks = [await task_of(harness, j) for j in jobs]
        return all(t is not None and t["collections"] >= times for t in tasks)

    await harness.wait_for(lambda: collected(1), "a first snapshot of every post", within=30)
    # A day passes on the platform: the next snapshots have grown.
    await harness.platforms.control("POST", "/_sandbox/clock", json={"advance_seconds": 86400})
    before = {j: (await task_of(harness, j))["collections"] for j in jobs}

    async def grown() -> bool:
        for job_id in jobs:
            task = await task_of(harness, job_id)
            if task["collections"] < before[job_id] + 1 or not task["impressions"]:
                return False
        return True

    await harness.wait_for(grown, "snapshots after the day passed", within=30)

    async def account_read() -> bool:
        rows = await harness.sql(
            "SELECT collections FROM publisher.analytics_tasks WHERE kind = 'account' "
            "AND connection_id = $1",
            pages[COFFEE_PAGE],
        )
        return bool(rows and rows[0]["collections"] >= 2)

    await harness.wait_for(account_read, "the Page's daily insights, twice", within=30)
    # Collection stops here, so the figures below hold still while they are compared.
    await working.close()
    harness.running.remove(working)

    # The latest figures are the sandbox's own (read again now to compare).
    first = await harness.post(posts[0].post_id)
    target = first.jobs[0]
    figures = await harness.platforms.control("GET", f"/_sandbox/metrics/{target.platform_post_id}")
    assert harness.analytics is not None
    detail = await harness.analytics.GetPostAnalytics(
        apb.GetPostAnalyticsRequest(tenant_id=harness.tenant, post_id=posts[0].post_id)
    )
    (collected_target,) = detail.targets
    assert collected_target.platform == "facebook"
    assert collected_target.content_type == "text"
    assert len(collected_target.snapshots) >= 2
    curve = [s.metrics.impressions for s in collected_target.snapshots]
    assert curve == sorted(curve)  # growth: never down
    assert 0 < collected_target.latest.impressions <= figures["metrics"]["impressions"]
    assert collected_target.collection.state in ("SCHEDULED", "DISPATCHED", "COLLECTING")

    # Rollups: the sum of deltas is the sum of the latest lifetime figures.
    report = await harness.analytics.QueryAnalytics(
        apb.QueryAnalyticsRequest(
            tenant_id=harness.tenant,
            time_zone="Asia/Kolkata",
            granularity=apb.GRANULARITY_DAY,
            group_by=[apb.DIMENSION_PLATFORM, apb.DIMENSION_CONTENT_TYPE],
        )
    )
    rows = await harness.sql(
        """SELECT sum(impressions) AS impressions, sum(reach) AS reach
             FROM publisher.analytics_tasks WHERE kind = 'post' AND tenant_id = $1""",
        harness.tenant,
    )
    assert report.source == "daily"
    assert report.totals.posts == 3
    assert report.totals.impressions == rows[0]["impressions"]
    assert report.totals.reach == rows[0]["reach"]
    assert {(r.platform, r.content_type) for r in report.rows} == {("facebook", "text")}
    # The same figures from the 15-minute rollups of another zone, on the fly.
    again = await harness.analytics.QueryAnalytics(
        apb.QueryAnalyticsRequest(tenant_id=harness.tenant, time_zone="America/St_Johns")
    )
    assert again.totals.impressions == report.totals.impressions

    # The account's own figures per day, and its best posts.
    connection = await harness.analytics.GetConnectionAnalytics(
        apb.GetConnectionAnalyticsRequest(
            tenant_id=harness.tenant, connection_id=pages[COFFEE_PAGE]
        )
    )
    assert len(connection.account_days) >= 2
    assert connection.platform == "facebook"
    assert all(d.metrics.impressions > 0 for d in connection.account_days)
    assert len(connection.top_posts) == 3
    assert connection.collection.collections >= 1

    # Another tenant sees none of it.
    stranger = str(uuid.uuid4())
    for call in (
        harness.analytics.GetPostAnalytics(
            apb.GetPostAnalyticsRequest(tenant_id=stranger, post_id=posts[0].post_id)
        ),
        harness.analytics.GetConnectionAnalytics(
            apb.GetConnectionAnalyticsRequest(tenant_id=stranger, connection_id=pages[COFFEE_PAGE])
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    empty = await harness.analytics.QueryAnalytics(apb.QueryAnalyticsRequest(tenant_id=stranger))
    assert empty.totals.posts == 0
    assert not empty.totals.HasField("impressions")


async def test_collection_backs_off_near_the_limit_while_a_due_publish_goes_out(
    harness: Harness, pages: dict[str, str]
) -> None:
    budget = {
        # Every call counts against 10 per hour; analytics may bring it to 5 at most.
        "POSTD_ANALYTICS_QUOTA_RULES": "facebook:calls_per_hour:10:3600",
        "POSTD_ANALYTICS_QUOTA_SHARE": "0.5",
        "POSTD_ANALYTICS_POST_SCHEDULE": "3600:3600",
    }
    await harness.start("api,worker", **budget)
    dispatcher = await harness.start("dispatcher", **budget)
    first = await harness.create("budget-1", [pages[COFFEE_PAGE]], text("First"))
    first_job = await harness.wait_job(first.post.jobs[0].id)
    assert first_job.state == pb.JOB_STATE_PUBLISHED
    task = await task_of(harness, first_job.id)
    assert task["state"] == "SCHEDULED"

    async def account_read() -> bool:
        rows = await harness.sql(
            "SELECT collections FROM publisher.analytics_tasks WHERE kind = 'account' "
            "AND connection_id = $1",
            pages[COFFEE_PAGE],
        )
        return bool(rows and rows[0]["collections"] >= 1)

    # The Page's own daily reading went first (one call).
    await harness.wait_for(account_read, "the Page's daily reading", within=20)

    # Hold dispatching; the account is near its limit (8 of 10 calls this hour: the
    # first post, the Page's reading and 6 more), and the first post's snapshot falls
    # due now, when a second post is due too.
    await dispatcher.close()
    harness.running.remove(dispatcher)
    earlier = datetime.now(UTC) - timedelta(minutes=10)
    await harness.sql(
        """INSERT INTO publisher.quota_ledger (tenant_id, connection_id, limit_name, used_at,
                                               job_id)
           SELECT $1, $2, 'calls_per_hour', $3, gen_random_uuid() FROM generate_series(1, 6)""",
        harness.tenant,
        pages[COFFEE_PAGE],
        earlier,
    )
    await harness.sql(
        "UPDATE publisher.analytics_tasks SET run_at = $2 WHERE job_id = $1",
        first_job.id,
        datetime.now(UTC) - timedelta(seconds=1),
    )
    second = await harness.create("budget-2", [pages[COFFEE_PAGE]], text("Second"))
    await harness.start("dispatcher", **budget)

    second_job = await harness.wait_job(second.post.jobs[0].id)
    assert second_job.state == pb.JOB_STATE_PUBLISHED  # publishing has priority

    async def deferred() -> bool:
        found = await task_of(harness, first_job.id)
        return bool(found["state_reason"].startswith("Analytics backs off"))

    await harness.wait_for(deferred, "the collection to back off", within=20)
    task = await task_of(harness, first_job.id)
    assert task["state"] == "SCHEDULED"
    assert task["collections"] == 0
    assert "9 of 10 used in the last hour" in task["state_reason"]
    assert "at most 50% so publishing keeps the rest" in task["state_reason"]
    # It waits until enough of those calls leave the hour, not for ever.
    assert abs(task["run_at"] - (earlier + timedelta(hours=1))) < timedelta(seconds=1)
    spent = await harness.sql(
        "SELECT count(*) AS n FROM publisher.quota_ledger WHERE limit_name = 'calls_per_hour' "
        "AND connection_id = $1",
        pages[COFFEE_PAGE],
    )
    assert spent[0]["n"] == 9  # 6, two publishes, the Page's reading; not the snapshot

    # The hour passes (the ledger forgets): the snapshot is taken and charged.
    await harness.sql("DELETE FROM publisher.quota_ledger WHERE limit_name = 'calls_per_hour'")
    await harness.sql(
        "UPDATE publisher.analytics_tasks SET run_at = $2 WHERE job_id = $1",
        first_job.id,
        datetime.now(UTC),
    )

    async def collected() -> bool:
        found = await task_of(harness, first_job.id)
        return bool(found["collections"] >= 1)

    await harness.wait_for(collected, "the snapshot once there is room", within=20)
    charged = await harness.sql(
        "SELECT count(*) AS n FROM publisher.quota_ledger WHERE limit_name = 'calls_per_hour' "
        "AND connection_id = $1",
        pages[COFFEE_PAGE],
    )
    assert charged[0]["n"] == 1


async def test_collection_waits_for_a_reconnect_and_resumes_with_it(
    harness: Harness, pages: dict[str, str]
) -> None:
    await harness.start(**QUICK)
    made = await harness.create("reconnect-1", [pages[COFFEE_PAGE]], text("Before"))
    job = await harness.wait_job(made.post.jobs[0].id)

    async def collected_at_least(times: int) -> bool:
        task = await task_of(harness, job.id)
        return bool(task is not None and task["collections"] >= times)

    await harness.wait_for(lambda: collected_at_least(1), "a first snapshot", within=20)
    # The person's access ends at the platform: collection waits, it does not fail.
    for account in ("10000000000001", COFFEE_PAGE):
        await harness.platforms.control(
            "POST", "/_sandbox/tokens/revoke", json={"platform": "meta", "account": account}
        )

    async def waiting() -> bool:
        task = await task_of(harness, job.id)
        return bool(task["state"] == "RETRYING" and task["last_category"] == "AUTH_REVOKED")

    await harness.wait_for(waiting, "the collection to wait for a reconnect", within=20)
    task = await task_of(harness, job.id)
    assert task["state_reason"].startswith("Waiting for a reconnect")
    assert task["run_at"] > datetime.now(UTC) + timedelta(hours=5)
    before = task["collections"]
    # Health marks the connection revoked (as its checks would), then a person
    # reconnects: the HEALTHY event on connection.events brings collection back at once.
    await harness.platforms.health.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            tenant_id=harness.tenant,
            connection_id=pages[COFFEE_PAGE],
            status=common_pb2.CONNECTION_STATUS_REVOKED,
            reason="Facebook ended POSTD's access.",
            source="health_check",
        )
    )
    await harness.platforms.connect(harness.tenant, capabilities=("publish", "analytics"))
    await harness.wait_for(
        lambda: collected_at_least(before + 1), "a snapshot after the reconnect", within=30
    )
