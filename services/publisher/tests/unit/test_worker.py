"""The worker's exactly-once steps on fakes of its ports (no I/O)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from postd.common.v1.common_pb2 import PlatformError, PostContent
from postd_publisher.domain.breaker import BreakerPolicy
from postd_publisher.domain.model import AttemptOutcome, Category, Job, JobState
from postd_publisher.domain.retry import LAST_LOOKS, RetryPolicy
from postd_publisher.domain.worker import Delivery, PublishWorker, WorkerSettings
from postd_publisher.ports import (
    AttemptRecord,
    ClaimedJob,
    ConnectionGone,
    FindReply,
    PublishOutcomeUnknown,
    PublishReply,
    UsageReading,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def make_job(**changes: Any) -> Job:
    base: dict[str, Any] = {
        "id": "j1",
        "post_id": "p1",
        "tenant_id": "t1",
        "position": 0,
        "connection_id": "c1",
        "platform": "facebook",
        "idempotency_key": "pj_1",
        "state": JobState.PUBLISHING,
        "state_reason": "",
        "due_at": NOW,
        "run_at": NOW,
        "content": PostContent(text="hi"),
        "attempt_count": 1,
        "budget_used": 0,
        "max_attempts": 4,
        "outcome_unknown": False,
        "platform_post_id": "",
        "url": "",
        "last_error": None,
        "dead_lettered": False,
        "replay_count": 0,
        "created_at": NOW,
        "updated_at": NOW,
        "finished_at": None,
    }
    base.update(changes)
    return Job(**base)


@dataclass
class FakeStore:
    job: Job
    claims: list[tuple[str, int]] = field(default_factory=list)
    records: list[AttemptRecord] = field(default_factory=list)
    claimable: bool = True

    async def claim_attempt(self, tenant_id: str, job_id: str, attempt: int, *_: Any) -> Any:
        self.claims.append((job_id, attempt))
        if not self.claimable or attempt != self.job.attempt_count:
            return None
        return ClaimedJob(self.job, attempt, NOW, previous_category="")

    async def record_attempt(self, record: AttemptRecord) -> bool:
        self.records.append(record)
        return True


@dataclass
class FakeConnectors:
    replies: list[Any] = field(default_factory=list)
    found: FindReply | Exception = field(default_factory=lambda: FindReply(found=False))
    calls: list[str] = field(default_factory=list)

    async def publish_post(self, request: Any) -> PublishReply:
        self.calls.append(f"publish:{request.idempotency_key}:{request.attempt}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def find_post(self, query: Any) -> FindReply:
        self.calls.append(f"find:{query.idempotency_key}")
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


def worker(store: FakeStore, connectors: FakeConnectors, **breaker: Any) -> PublishWorker:
    return PublishWorker(
        store,  # type: ignore[arg-type]
        connectors,  # type: ignore[arg-type]
        retry=RetryPolicy(base_delay=1.0, rng=random.Random(3)),
        breaker=BreakerPolicy(**breaker),
        settings=WorkerSettings(worker_id="w1"),
        clock=lambda: NOW,
    )


def failure(category: Category, retry_after: int | None = None) -> PublishReply:
    error = PlatformError(category=category.proto(), platform="facebook", message="Nope.")
    if retry_after is not None:
        error.retry_after.CopyFrom(Duration(seconds=retry_after))
    return PublishReply(status="FAILED", error=error)


async def test_a_stale_or_duplicate_delivery_does_nothing() -> None:
    store, connectors = FakeStore(make_job()), FakeConnectors()
    await worker(store, connectors).handle(Delivery("t1", "j1", attempt=7))
    assert connectors.calls == []
    assert store.records == []


async def test_published_records_the_post_and_closes_the_breaker() -> None:
    store = FakeStore(make_job())
    connectors = FakeConnectors([PublishReply(status="PUBLISHED", platform_post_id="123_1")])
    await worker(store, connectors).handle(Delivery("t1", "j1", 1))
    (record,) = store.records
    assert connectors.calls == ["publish:pj_1:1"]
    assert record.outcome is AttemptOutcome.PUBLISHED
    assert record.next_state is JobState.PUBLISHED
    assert record.platform_post_id == "123_1"
    assert record.event.outcome == "PUBLISHED"
    assert record.close_breaker


# An earlier attempt's outcome unknown: a middle one, or the last allowed (4 of 4).
@pytest.mark.parametrize("budget_used", [1, 4])
async def test_an_unknown_earlier_outcome_is_looked_up_first_and_not_posted_again(
    budget_used: int,
) -> None:
    attempt = budget_used + 1
    store = FakeStore(
        make_job(outcome_unknown=True, attempt_count=attempt, budget_used=budget_used)
    )
    connectors = FakeConnectors(
        found=FindReply(found=True, status="PUBLISHED", platform_post_id="123_9")
    )
    await worker(store, connectors).handle(Delivery("t1", "j1", attempt))
    assert connectors.calls == ["find:pj_1"]
    (record,) = store.records
    assert record.outcome is AttemptOutcome.RECONCILED
    assert record.next_state is JobState.PUBLISHED
    assert record.platform_post_id == "123_9"
    assert record.event.reconciled


async def test_not_found_by_the_lookup_publishes_with_the_same_key() -> None:
    store = FakeStore(make_job(outcome_unknown=True, attempt_count=2))
    connectors = FakeConnectors([PublishReply(status="PUBLISHED", platform_post_id="1")])
    await worker(store, connectors).handle(Delivery("t1", "j1", 2))
    assert connectors.calls == ["find:pj_1", "publish:pj_1:2"]


async def test_a_failed_lookup_never_publishes_blind() -> None:
    store = FakeStore(make_job(outcome_unknown=True, attempt_count=2))
    error = PlatformError(category=Category.RATE_LIMITED.proto(), message="slow down")
    connectors = FakeConnectors(found=FindReply(found=False, error=error))
    await worker(store, connectors).handle(Delivery("t1", "j1", 2))
    assert connectors.calls == ["find:pj_1"]
    (record,) = store.records
    assert record.outcome is AttemptOutcome.UNKNOWN
    assert record.next_state is JobState.RETRYING
    assert record.outcome_unknown


async def test_a_lost_answer_is_unknown_and_retried_with_a_lookup() -> None:
    store = FakeStore(make_job())
    connectors = FakeConnectors([PublishOutcomeUnknown("connectors answered UNAVAILABLE")])
    await worker(store, connectors).handle(Delivery("t1", "j1", 1))
    (record,) = store.records
    assert record.outcome is AttemptOutcome.UNKNOWN
    assert record.outcome_unknown
    assert record.next_state is JobState.RETRYING
    assert record.event.outcome == "RETRY_SCHEDULED"


async def test_an_unknown_last_attempt_is_looked_up_not_dead_lettered_blind() -> None:
    store = FakeStore(make_job(attempt_count=4, budget_used=3))
    connectors = FakeConnectors([PublishOutcomeUnknown("the connection dropped")])
    await worker(store, connectors).handle(Delivery("t1", "j1", 4))
    (record,) = store.records
    assert record.outcome is AttemptOutcome.UNKNOWN
    assert record.next_state is JobState.RETRYING
    assert record.outcome_unknown
    assert not record.dead_letter_reason
    assert "before giving up" in record.reason


async def test_the_last_lookup_not_finding_it_dead_letters_without_posting() -> None:
    store = FakeStore(make_job(outcome_unknown=True, attempt_count=5, budget_used=4))
    connectors = FakeConnectors()
    await worker(store, connectors).handle(Delivery("t1", "j1", 5))
    assert connectors.calls == ["find:pj_1"]  # never posted after the attempts ran out
    (record,) = store.records
    assert record.next_state is JobState.FAILED
    assert record.event.outcome == "DEAD_LETTERED"
    assert "not on facebook" in record.dead_letter_reason


async def test_lookups_failing_after_the_last_attempt_end_in_the_dlq_with_that_reason() -> None:
    error = PlatformError(category=Category.TRANSIENT.proto(), message="find failed")
    records = []
    # Attempt 4 of 4 was unknown; each lookup after it fails.
    for budget in range(4, 4 + LAST_LOOKS):
        store = FakeStore(
            make_job(outcome_unknown=True, attempt_count=budget + 1, budget_used=budget)
        )
        connectors = FakeConnectors(found=FindReply(found=False, error=error))
        await worker(store, connectors).handle(Delivery("t1", "j1", budget + 1))
        assert connectors.calls == ["find:pj_1"]
        records += store.records
    assert [r.next_state for r in records] == [JobState.RETRYING] * (LAST_LOOKS - 1) + [
        JobState.FAILED
    ]
    assert "could not be confirmed" in records[-1].dead_letter_reason


async def test_rate_limited_holds_the_account_until_retry_after() -> None:
    store = FakeStore(make_job())
    connectors = FakeConnectors([failure(Category.RATE_LIMITED, retry_after=30)])
    await worker(store, connectors).handle(Delivery("t1", "j1", 1))
    (record,) = store.records
    assert record.block_until == NOW + timedelta(seconds=30)
    assert record.run_at is not None
    assert record.run_at >= NOW + timedelta(seconds=30)


async def test_spent_usage_holds_the_account_even_after_a_success() -> None:
    store = FakeStore(make_job())
    usage = UsageReading("publish_per_24h", "account", 0, 100.0, NOW + timedelta(hours=3), None)
    reply = PublishReply(status="PUBLISHED", platform_post_id="1", usage=[usage])
    await worker(store, FakeConnectors([reply])).handle(Delivery("t1", "j1", 1))
    assert store.records[0].block_until == NOW + timedelta(hours=3)


async def test_revoked_pauses_the_connection() -> None:
    store = FakeStore(make_job())
    await worker(store, FakeConnectors([failure(Category.AUTH_REVOKED)])).handle(
        Delivery("t1", "j1", 1)
    )
    (record,) = store.records
    assert record.next_state is JobState.PAUSED
    assert record.pause is not None
    assert record.pause.source == "publish_result"


async def test_a_vanished_connection_fails_without_dead_letter() -> None:
    store = FakeStore(make_job())
    await worker(store, FakeConnectors([ConnectionGone("gone")])).handle(Delivery("t1", "j1", 1))
    (record,) = store.records
    assert record.next_state is JobState.FAILED
    assert not record.dead_letter_reason
    assert record.event.outcome == "FAILED"


@pytest.mark.parametrize("tenants", [1, 2])
async def test_outages_across_tenants_ask_to_open_the_breaker(tenants: int) -> None:
    opened = []
    replies = [failure(Category.PLATFORM_OUTAGE) for _ in range(4)]
    connectors = FakeConnectors(replies)
    shared = worker(FakeStore(make_job()), connectors, min_failures=4, min_tenants=2)
    for i in range(4):
        store = FakeStore(make_job(tenant_id=f"t{i % tenants}"))
        shared._store = store  # type: ignore[assignment]
        await shared.handle(Delivery(f"t{i % tenants}", "j1", 1))
        opened.append(bool(store.records[0].open_breaker_reason))
        assert store.records[0].breaker_failure
    assert opened == [False, False, False, tenants == 2]


async def test_publishes_per_platform_are_bounded() -> None:
    in_flight = 0
    peak = 0

    class SlowConnectors(FakeConnectors):
        async def publish_post(self, request: Any) -> PublishReply:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return PublishReply(status="PUBLISHED", platform_post_id="1")

    publisher = PublishWorker(
        FakeStore(make_job()),  # type: ignore[arg-type]
        SlowConnectors(),  # type: ignore[arg-type]
        retry=RetryPolicy(),
        breaker=BreakerPolicy(),
        settings=WorkerSettings(worker_id="w1", platform_concurrency=2),
        clock=lambda: NOW,
    )
    stores = [FakeStore(make_job(id=f"j{i}")) for i in range(6)]

    async def one(store: FakeStore) -> None:
        claimed = ClaimedJob(store.job, 1, NOW, "")
        async with publisher._slots.slot("facebook"):
            await publisher.attempt(claimed)

    await asyncio.gather(*(one(s) for s in stores))
    assert peak == 2
