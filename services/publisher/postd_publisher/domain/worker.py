"""One attempt at one publish job, with an exactly-once effect at the platform.

The order of things is the guarantee:

1. Claim the attempt in PostgreSQL (job PUBLISHING, attempt row IN_PROGRESS) before
   anything goes to the platform. A duplicate or stale Kafka delivery finds nothing
   to claim and is dropped.
2. If an earlier attempt's outcome is unknown (its worker died, its answer was lost,
   it timed out), ask connectors to find the post first; a found post is recorded
   (RECONCILED), never posted again. When the attempts are used up, only this
   lookup runs: a job is never dead-lettered while its post may be on the platform
   unless the lookup itself keeps failing (then the reason says so).
3. Publish through connectors with the job's idempotency key (the same on every
   attempt and replay).
4. Record the outcome, the job's next state and its result event in one
   transaction.

A worker that dies between 1 and 4 leaves the job PUBLISHING; the reconciler brings
it back when its lease passes, marked "outcome unknown", and step 2 sorts it out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from opentelemetry import trace

from postd.common.v1.common_pb2 import ErrorCategory, PlatformError
from postd_publisher import metrics
from postd_publisher.domain.breaker import OUTAGE_CATEGORIES, BreakerPolicy, OutageWatch
from postd_publisher.domain.model import (
    AttemptOutcome,
    Category,
    ConnectionPause,
    JobState,
)
from postd_publisher.domain.retry import Decision, RetryPolicy, Step
from postd_publisher.ports import (
    AttemptRecord,
    ClaimedJob,
    ConnectionGone,
    ConnectorsClient,
    ConnectorsRefused,
    ConnectorsUnavailable,
    FindQuery,
    JobStore,
    PublishOutcomeUnknown,
    PublishReply,
    PublishRequest,
    ResultEvent,
    UsageReading,
)

Clock = Callable[[], datetime]
tracer = trace.get_tracer("postd_publisher")
# An accepted publish still processing (TikTok, Instagram containers) is looked at
# again after this long, up to MAX_PROCESSING_CHECKS times.
PROCESSING_RECHECK = timedelta(seconds=5)
MAX_PROCESSING_CHECKS = 40
# How far before the due time FindPost looks (clock skew between us and them).
FIND_WINDOW_SLACK = timedelta(minutes=10)


@dataclass(frozen=True)
class Delivery:
    """A ``publish.jobs`` message, as the worker needs it."""

    tenant_id: str
    job_id: str
    attempt: int


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    # How long a PUBLISHING job is ours before the reconciler assumes we died; longer
    # than the connectors call deadline.
    lease_seconds: float = 120.0
    platform_concurrency: int = 64


class PlatformSlots:
    """At most N publishes in flight per platform in this process (one per account
    is kept by the queue: an account's jobs share a Kafka key and lane)."""

    def __init__(self, per_platform: int) -> None:
        self._per_platform = per_platform
        self._slots: dict[str, asyncio.Semaphore] = {}

    def slot(self, platform: str) -> asyncio.Semaphore:
        found = self._slots.get(platform)
        if found is None:
            found = self._slots[platform] = asyncio.Semaphore(self._per_platform)
        return found


class PublishWorker:
    def __init__(
        self,
        store: JobStore,
        connectors: ConnectorsClient,
        *,
        retry: RetryPolicy,
        breaker: BreakerPolicy,
        settings: WorkerSettings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._retry = retry
        self._breaker = breaker
        self._watch = OutageWatch(breaker)
        self._settings = settings
        self._slots = PlatformSlots(settings.platform_concurrency)
        self._now = clock

    async def handle(self, delivery: Delivery) -> None:
        with tracer.start_as_current_span(
            "publisher.publish_attempt",
            attributes={
                "postd.tenant_id": delivery.tenant_id,
                "postd.job_id": delivery.job_id,
                "postd.attempt": delivery.attempt,
            },
        ) as span:
            claimed = await self._store.claim_attempt(
                delivery.tenant_id,
                delivery.job_id,
                delivery.attempt,
                self._settings.worker_id,
                self._now(),
                self._settings.lease_seconds,
            )
            if claimed is None:
                span.set_attribute("postd.outcome", "not_claimed")
                return
            span.set_attribute("postd.platform", claimed.job.platform)
            span.set_attribute("postd.connection_id", claimed.job.connection_id)
            span.set_attribute("postd.post_id", claimed.job.post_id)
            async with self._slots.slot(claimed.job.platform):
                record = await self.attempt(claimed)
            span.set_attribute("postd.outcome", record.event.outcome.lower())
            if record.error is not None:
                span.set_attribute("postd.error_category", Category.of(record.error).value.lower())
            if await self._store.record_attempt(record):
                metrics.observe(record)

    async def attempt(self, claimed: ClaimedJob) -> AttemptRecord:
        """Steps 2 and 3 for a claimed job; never raises for platform trouble."""
        started = time.monotonic()
        job = claimed.job
        if job.outcome_unknown:
            settled = await self._look_up(claimed, started)
            if settled is not None:
                return settled
            if job.budget_used >= job.max_attempts:
                return self._not_there(claimed, started)
        request = PublishRequest(
            tenant_id=job.tenant_id,
            connection_id=job.connection_id,
            idempotency_key=job.idempotency_key,
            content=job.content,
            attempt=claimed.attempt,
            job_id=job.id,
            post_id=job.post_id,
        )
        try:
            reply = await self._connectors.publish_post(request)
        except PublishOutcomeUnknown as exc:
            return self._unknown(claimed, started, f"the outcome is unknown ({exc})")
        except ConnectionGone:
            return self._gone(claimed, started)
        except ConnectorsRefused as exc:
            return self._refused(claimed, started, str(exc))
        return self._from_reply(claimed, started, reply)

    # ------------------------------------------------------------------ lookups

    async def _look_up(self, claimed: ClaimedJob, started: float) -> AttemptRecord | None:
        job = claimed.job
        query = FindQuery(
            tenant_id=job.tenant_id,
            connection_id=job.connection_id,
            idempotency_key=job.idempotency_key,
            content=job.content,
            since=job.due_at - FIND_WINDOW_SLACK,
            until=self._now() + FIND_WINDOW_SLACK,
        )
        try:
            found = await self._connectors.find_post(query)
        except ConnectorsUnavailable as exc:
            return self._unknown(claimed, started, f"looking the post up failed ({exc})")
        except ConnectionGone:
            return self._gone(claimed, started)
        if found.error is not None:
            return self._unknown(
                claimed,
                started,
                f"looking the post up failed: {found.error.message or 'no reason given'}",
            )
        if found.found and found.status == "PUBLISHED":
            return self._published(
                claimed,
                started,
                PublishReply(
                    status="PUBLISHED",
                    platform_post_id=found.platform_post_id,
                    url=found.url,
                    reconciled=True,
                ),
            )
        if found.found and found.status == "PROCESSING":
            return self._processing(claimed, started, found.platform_post_id)
        return None  # not there (or failed there): safe to publish

    # ------------------------------------------------------------------ outcomes

    def _from_reply(
        self, claimed: ClaimedJob, started: float, reply: PublishReply
    ) -> AttemptRecord:
        if reply.status == "PUBLISHED":
            return self._published(claimed, started, reply)
        if reply.status == "PROCESSING":
            return self._processing(claimed, started, reply.platform_post_id)
        error = reply.error or PlatformError(
            category=ErrorCategory.ERROR_CATEGORY_UNKNOWN,
            platform=claimed.job.platform,
            message=f"{claimed.job.platform} refused the post without a reason",
        )
        return self._failed(claimed, started, error, reply)

    def _published(self, claimed: ClaimedJob, started: float, reply: PublishReply) -> AttemptRecord:
        job = claimed.job
        now = self._now()
        latency = time.monotonic() - started
        self._watch.record(job.platform, job.tenant_id, failed=False, at=time.monotonic())
        block_until, block_reason = _spent_until(reply.usage, now, job.platform)
        outcome = AttemptOutcome.RECONCILED if reply.reconciled else AttemptOutcome.PUBLISHED
        reason = (
            "Found on the platform: an earlier attempt had published it."
            if reply.reconciled
            else "Published."
        )
        return AttemptRecord(
            job=job,
            attempt=claimed.attempt,
            ended_at=now,
            outcome=outcome,
            next_state=JobState.PUBLISHED,
            state_reason=reason,
            reason=reason,
            platform_latency=reply.platform_latency or latency,
            platform_post_id=reply.platform_post_id,
            url=reply.url,
            event=ResultEvent(
                outcome="PUBLISHED",
                attempt=claimed.attempt,
                finished_at=now,
                latency=latency,
                platform_post_id=reply.platform_post_id,
                url=reply.url,
                reconciled=reply.reconciled,
            ),
            block_until=block_until,
            block_reason=block_reason,
            close_breaker=True,
        )

    def _processing(
        self, claimed: ClaimedJob, started: float, platform_post_id: str
    ) -> AttemptRecord:
        job = claimed.job
        now = self._now()
        if claimed.attempt >= MAX_PROCESSING_CHECKS:
            error = _error(
                job.platform,
                Category.TRANSIENT,
                f"{job.platform} accepted the post but it was still processing after "
                f"{claimed.attempt} checks",
            )
            return self._dead_letter(claimed, started, error, f"Gave up: {error.message}.")
        at = now + PROCESSING_RECHECK
        reason = (
            f"Accepted by {job.platform}, still processing; checking again at {at:%H:%M:%S} UTC."
        )
        return AttemptRecord(
            job=job,
            attempt=claimed.attempt,
            ended_at=now,
            outcome=AttemptOutcome.UNKNOWN,
            next_state=JobState.RETRYING,
            state_reason=reason,
            reason=reason,
            platform_post_id=platform_post_id,
            run_at=at,
            counts=False,
            outcome_unknown=True,
            event=ResultEvent(
                outcome="RETRY_SCHEDULED",
                attempt=claimed.attempt,
                finished_at=now,
                latency=time.monotonic() - started,
                next_attempt_at=at,
            ),
        )

    def _failed(
        self,
        claimed: ClaimedJob,
        started: float,
        error: PlatformError,
        reply: PublishReply,
    ) -> AttemptRecord:
        job = claimed.job
        now = self._now()
        category = Category.of(error)
        outage = category in OUTAGE_CATEGORIES
        tripped = self._watch.record(
            job.platform, job.tenant_id, failed=outage, at=time.monotonic()
        )
        block_until, block_reason = _spent_until(reply.usage, now, job.platform)
        if category is Category.RATE_LIMITED and error.HasField("retry_after"):
            hold = now + error.retry_after.ToTimedelta()
            if block_until is None or hold > block_until:
                block_until = hold
                block_reason = f"{job.platform} asked to wait until {hold:%H:%M:%S} UTC"
        wait = (block_until - now).total_seconds() if block_until else 0.0
        counts = category is not Category.QUOTA_EXCEEDED
        decision = self._retry.decide(
            error,
            platform_name=job.platform,
            budget_used=job.budget_used + (1 if counts else 0),
            max_attempts=job.max_attempts,
            last_category=claimed.previous_category,
            now=now,
            wait_at_least=wait,
        )
        record = self._decided(claimed, started, error, decision, now)
        return _with(
            record,
            block_until=block_until,
            block_reason=block_reason,
            breaker_failure=outage,
            open_breaker_reason=(
                f"{job.platform} failing for several tenants: {error.message}" if tripped else ""
            ),
            breaker_cooldown=self._breaker.cooldown_seconds,
            breaker_max_cooldown=self._breaker.max_cooldown_seconds,
            platform_latency=reply.platform_latency,
        )

    def _decided(
        self,
        claimed: ClaimedJob,
        started: float,
        error: PlatformError,
        decision: Decision,
        now: datetime,
    ) -> AttemptRecord:
        """The record for a decision taken at ``now`` (also the attempt's end, so a
        retry time "not before Retry-After" holds against the recorded end)."""
        job = claimed.job
        latency = time.monotonic() - started
        if decision.step is Step.RETRY:
            return AttemptRecord(
                job=job,
                attempt=claimed.attempt,
                ended_at=now,
                outcome=AttemptOutcome.FAILED_RETRYABLE,
                next_state=JobState.RETRYING,
                state_reason=decision.reason,
                reason=decision.reason,
                error=error,
                run_at=decision.retry_at,
                counts=decision.counts,
                event=ResultEvent(
                    outcome="RETRY_SCHEDULED",
                    attempt=claimed.attempt,
                    finished_at=now,
                    latency=latency,
                    error=error,
                    next_attempt_at=decision.retry_at,
                ),
            )
        if decision.step is Step.PAUSE:
            return AttemptRecord(
                job=job,
                attempt=claimed.attempt,
                ended_at=now,
                outcome=AttemptOutcome.FAILED,
                next_state=JobState.PAUSED,
                state_reason=decision.reason,
                reason=decision.reason,
                error=error,
                run_at=now,
                event=ResultEvent(
                    outcome="RETRY_SCHEDULED",
                    attempt=claimed.attempt,
                    finished_at=now,
                    latency=latency,
                    error=error,
                ),
                pause=ConnectionPause(
                    tenant_id=job.tenant_id,
                    connection_id=job.connection_id,
                    paused_since=now,
                    reason=decision.reason,
                    category=Category.of(error).value,
                    source="publish_result",
                ),
            )
        if decision.step is Step.FAIL:
            return self._final(claimed, started, error, decision.reason, now)
        return self._dead_letter(claimed, started, error, decision.reason, now)

    def _unknown(self, claimed: ClaimedJob, started: float, what: str) -> AttemptRecord:
        job = claimed.job
        now = self._now()
        budget = job.budget_used + 1
        decision = self._retry.after_unknown(
            budget_used=budget, max_attempts=job.max_attempts, now=now, what=what
        )
        error = _error(job.platform, Category.TRANSIENT, f"Publishing to {job.platform}: {what}.")
        if decision.step is Step.RETRY:
            record = self._decided(claimed, started, error, decision, now)
            return _with(record, outcome=AttemptOutcome.UNKNOWN, outcome_unknown=True)
        record = self._dead_letter(claimed, started, error, decision.reason, now)
        return _with(record, outcome=AttemptOutcome.UNKNOWN, outcome_unknown=True)

    def _not_there(self, claimed: ClaimedJob, started: float) -> AttemptRecord:
        """The attempts are used up (or its publishing kept stopping workers), the
        last one's outcome was unknown, and the lookup says the post is not on the
        platform: dead-lettered, not posted."""
        job = claimed.job
        error = job.last_error or _error(
            job.platform, Category.TRANSIENT, f"Publishing to {job.platform} failed."
        )
        reason = (
            "Gave up: no attempts are left, the last one's outcome was unknown and the "
            f"post is not on {job.platform}. A replay publishes it again."
        )
        return self._dead_letter(claimed, started, error, reason)

    def _gone(self, claimed: ClaimedJob, started: float) -> AttemptRecord:
        error = _error(
            claimed.job.platform,
            Category.NOT_FOUND,
            f"The {claimed.job.platform} connection no longer exists.",
        )
        return self._final(claimed, started, error, f"Failed: {error.message}")

    def _refused(self, claimed: ClaimedJob, started: float, why: str) -> AttemptRecord:
        error = _error(claimed.job.platform, Category.INVALID_REQUEST, why)
        return self._dead_letter(claimed, started, error, f"Not retried: {why}")

    def _final(
        self,
        claimed: ClaimedJob,
        started: float,
        error: PlatformError,
        reason: str,
        now: datetime | None = None,
    ) -> AttemptRecord:
        now = now or self._now()
        return AttemptRecord(
            job=claimed.job,
            attempt=claimed.attempt,
            ended_at=now,
            outcome=AttemptOutcome.FAILED,
            next_state=JobState.FAILED,
            state_reason=reason,
            reason=reason,
            error=error,
            event=ResultEvent(
                outcome="FAILED",
                attempt=claimed.attempt,
                finished_at=now,
                latency=time.monotonic() - started,
                error=error,
            ),
        )

    def _dead_letter(
        self,
        claimed: ClaimedJob,
        started: float,
        error: PlatformError,
        reason: str,
        now: datetime | None = None,
    ) -> AttemptRecord:
        now = now or self._now()
        return AttemptRecord(
            job=claimed.job,
            attempt=claimed.attempt,
            ended_at=now,
            outcome=AttemptOutcome.FAILED,
            next_state=JobState.FAILED,
            state_reason=reason,
            reason=reason,
            error=error,
            dead_letter_reason=reason,
            event=ResultEvent(
                outcome="DEAD_LETTERED",
                attempt=claimed.attempt,
                finished_at=now,
                latency=time.monotonic() - started,
                error=error,
            ),
        )


def _with(record: AttemptRecord, **changes: object) -> AttemptRecord:
    return replace(record, **changes)  # type: ignore[arg-type]


def _error(platform: str, category: Category, message: str) -> PlatformError:
    return PlatformError(category=category.proto(), platform=platform, message=message)


def _spent_until(
    usage: Sequence[UsageReading], now: datetime, platform: str
) -> tuple[datetime | None, str]:
    """When an account's usage says it is spent, until when (app-wide usage is left
    to the circuit breaker)."""
    until: datetime | None = None
    name = ""
    for reading in usage:
        if reading.scope == "app":
            continue
        spent = (reading.remaining is not None and reading.remaining <= 0) or (
            reading.used_percent >= 100.0
        )
        if not spent:
            continue
        candidates = []
        if reading.resets_at is not None:
            candidates.append(reading.resets_at)
        if reading.retry_after:
            candidates.append(now + timedelta(seconds=reading.retry_after))
        if not candidates:
            candidates.append(now + timedelta(minutes=1))
        at = max(candidates)
        if until is None or at > until:
            until, name = at, reading.name
    if until is None:
        return None, ""
    return (
        until,
        f"{platform} reports the account's {name} limit used up until {until:%H:%M:%S} UTC",
    )
