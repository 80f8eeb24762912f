"""publish.results through the real broker: each attempt counted once in the rollups,
a burst of passing failures leaves the connection healthy while a revoked token
revokes it at once; the dashboard's figures from the rollups; the detectors (error
rate, platform outage, backlog) open and resolve their incidents."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.events.v1 import publish_result_pb2 as rpb
from postd_common.kafka import message_headers
from postd_health.adapters.postgres import LAG_BOUNDS_MS, LATENCY_BOUNDS_MS
from postd_health.domain.dashboard import Dashboard
from postd_health.domain.model import AlertKind, AlertState, Status

pytestmark = pytest.mark.integration


async def until(condition: Callable[[], Awaitable[bool]], what: str, limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def result(
    tenant: str,
    connection: str,
    outcome: int,
    *,
    ms: int,
    error: common_pb2.PlatformError | None = None,
    job: str | None = None,
    attempt: int = 1,
) -> rpb.PublishResult:
    now = datetime.now(UTC)
    finished, due, latency = Timestamp(), Timestamp(), Duration()
    finished.FromDatetime(now)
    due.FromDatetime(now - timedelta(seconds=2))
    latency.FromMilliseconds(ms)
    return rpb.PublishResult(
        job_id=job or str(uuid.uuid4()),
        post_id=str(uuid.uuid4()),
        tenant_id=tenant,
        connection_id=connection,
        platform="tiktok",
        outcome=outcome,  # type: ignore[arg-type]
        error=error,
        attempt=attempt,
        latency=latency,
        finished_at=finished,
        due_at=due,
        idempotency_key=str(uuid.uuid4()),
    )


def error(category: int, status: int) -> common_pb2.PlatformError:
    return common_pb2.PlatformError(
        category=category,  # type: ignore[arg-type]
        platform="tiktok",
        http_status=status,
        message="It failed.",
    )


async def test_results_feed_rollups_status_dashboard_and_detectors(
    make_replica: Any, standin: tuple[Any, str], producer: Any, topic_names: Any, clock: Any
) -> None:
    servicer, address = standin
    tenant = str(uuid.uuid4())
    replica = make_replica(
        connectors_addr=address,
        POSTD_HEALTH_OUTAGE_MIN_TENANTS="1",
        POSTD_HEALTH_OUTAGE_ERROR_PERCENT="20",
        POSTD_HEALTH_OUTAGE_MIN_REQUESTS="10",
        POSTD_HEALTH_QUEUE_BACKLOG="3",
    )
    svc = replica.service
    await replica.start_consumers(producer, "publish_results")
    conn = await servicer.connect_tiktok(tenant)

    sent: list[rpb.PublishResult] = []
    sent += [
        result(tenant, conn.id, rpb.PUBLISH_OUTCOME_PUBLISHED, ms=ms)
        for ms in (40, 60, 80, 90, 120, 150, 200, 220, 240, 260) * 2
    ]
    retry = rpb.PUBLISH_OUTCOME_RETRY_SCHEDULED
    sent += [
        result(
            tenant, conn.id, retry, ms=900, error=error(common_pb2.ERROR_CATEGORY_TRANSIENT, 503)
        )
        for _ in range(5)
    ]
    sent += [
        result(
            tenant, conn.id, retry, ms=30, error=error(common_pb2.ERROR_CATEGORY_RATE_LIMITED, 429)
        )
        for _ in range(3)
    ]
    sent += [
        result(tenant, conn.id, retry, ms=5000, error=error(common_pb2.ERROR_CATEGORY_TRANSIENT, 0))
        for _ in range(2)
    ]
    duplicate = sent[0]
    for message in [*sent, duplicate]:
        await producer.produce(
            topic_names.publish_results,
            message,
            key=conn.id,
            headers=message_headers(message, tenant_id=tenant),
        )

    async def counted() -> bool:
        totals = await svc.store.call_totals(datetime.now(UTC) - timedelta(minutes=5))
        return sum(t.requests for t in totals if t.tenant_id == tenant) >= len(sent)

    await until(counted, "every publish result to be counted")
    await asyncio.sleep(0.5)
    totals = [
        t
        for t in await svc.store.call_totals(datetime.now(UTC) - timedelta(minutes=5))
        if t.tenant_id == tenant
    ]
    assert [(t.requests, t.failures, t.passing) for t in totals] == [(30, 10, 7)]

    # Passing failures in a burst: still healthy, nothing asked of connectors.
    watch = await svc.store.get_watch(conn.id, tenant)
    assert watch is not None
    assert watch.status is Status.HEALTHY
    assert servicer.status_updates == []

    # The dashboard, from the rollups.
    data = await Dashboard(
        svc.store, latency_bounds=LATENCY_BOUNDS_MS, lag_bounds=LAG_BOUNDS_MS
    ).build(Dashboard.query(tenant, timedelta(hours=1), timedelta(minutes=5), (), clock()))
    [perf] = data.api_performance
    assert perf.platform == "tiktok"
    assert perf.request_count.current == 30
    assert perf.success_rate_percent.current == pytest.approx(66.67)
    assert perf.p50_latency_ms.current == 250  # bucket bound of the median attempt
    assert perf.p95_latency_ms.current == 5000
    assert sum(v for _, v in perf.request_count.points) == 30
    total = data.error_distribution[0]
    assert total.platform == ""
    assert total.server_errors.current == 5
    assert total.rate_limited.current == 3
    assert total.timeouts.current == 2
    assert total.unauthorized.current == 0
    assert data.queue_health["published_24h"].current == 20
    assert data.queue_health["pending"].current == 10

    # Detectors: error rate over 5 %, an outage (passing failures over 20 % here), a
    # backlog over 3 jobs.
    await svc.detectors.run_once()
    await svc.detectors.run_once()  # a second pass is no news
    open_rate = await svc.store.open_alerts(AlertKind.API_ERROR_RATE, f"api_error_rate:{tenant}:")
    assert [a.platform for a in open_rate] == ["tiktok"]
    assert "10 of 30 calls" in open_rate[0].message
    outage = await svc.store.open_alerts(AlertKind.PLATFORM_OUTAGE, "platform_outage:tiktok")
    assert len(outage) == 1
    assert outage[0].tenant_id == ""
    backlog = await svc.store.open_alerts(AlertKind.QUEUE_BACKLOG, "queue_backlog")
    assert len(backlog) == 1

    # A revoked token on a publish moves the connection at once.
    revoked = result(
        tenant, conn.id, rpb.PUBLISH_OUTCOME_FAILED, ms=50,
        error=error(common_pb2.ERROR_CATEGORY_AUTH_REVOKED, 401),
    )  # fmt: skip
    await producer.produce(
        topic_names.publish_results,
        revoked,
        key=conn.id,
        headers=message_headers(revoked, tenant_id=tenant),
    )

    async def revoked_now() -> bool:
        w = await svc.store.get_watch(conn.id, tenant)
        return w is not None and w.status is Status.REVOKED

    await until(revoked_now, "the revocation")
    [update] = servicer.status_updates
    assert update.status == common_pb2.CONNECTION_STATUS_REVOKED
    assert update.source == "publish_result"

    # Twenty minutes later the window holds no failures: incidents resolve.
    clock.advance(timedelta(minutes=20))
    await svc.detectors.run_once()
    assert await svc.store.open_alerts(AlertKind.API_ERROR_RATE, f"api_error_rate:{tenant}:") == []
    assert await svc.store.open_alerts(AlertKind.PLATFORM_OUTAGE, "platform_outage:tiktok") == []
    resolved = await svc.store.list_alerts(
        tenant_id=tenant,
        states=[AlertState.RESOLVED],
        kinds=[],
        platform="tiktok",
        since=None,
        until=None,
        limit=10,
        after=None,
    )
    # The tenant sees its own error-rate incident and the operator-wide outage.
    assert {a.kind for a in resolved} == {AlertKind.API_ERROR_RATE, AlertKind.PLATFORM_OUTAGE}
