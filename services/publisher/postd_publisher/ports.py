"""The ports the publisher's domain needs, and the plain data that crosses them.

Every method is a coroutine: it does I/O and yields to the event loop; none blocks
the loop. Failures a caller handles are named on each method; anything else (a
bug, PostgreSQL gone) propagates and is retried by whoever drives the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from postd.common.v1.common_pb2 import PlatformError, PostContent, ValidationReport
from postd_publisher.domain.analytics import Figures
from postd_publisher.domain.model import (
    Approval,
    AttemptOutcome,
    ConnectionPause,
    DeadLetter,
    Job,
    JobState,
    MissedJobs,
    Post,
    ScheduleSpec,
)
from postd_publisher.domain.quota import Deferral, LedgerEntry, QuotaRule, UsageKey

# --------------------------------------------------------------------------- connectors


class ConnectorsUnavailable(Exception):
    """Connectors could not be reached or did not answer in time, before anything
    could have reached the platform (validation, lookups). Retry later."""


class PublishOutcomeUnknown(Exception):
    """The publish call may or may not have reached the platform (deadline,
    cancelled, unavailable mid-call). Look the post up before publishing again."""


class ConnectionGone(Exception):
    """Connectors does not know the connection (deleted): no attempt can succeed."""


class ConnectorsRefused(Exception):
    """Connectors refused the call itself (malformed request, disconnected
    connection); the message says why in plain words."""


@dataclass(frozen=True)
class ConnectionInfo:
    connection_id: str
    platform: str
    status: str  # HEALTHY, EXPIRING_SOON, ATTENTION, REVOKED, DISCONNECTED
    account_name: str = ""


@dataclass(frozen=True)
class TargetSpec:
    connection_id: str
    override: PostContent


@dataclass(frozen=True)
class PublishRequest:
    tenant_id: str
    connection_id: str
    idempotency_key: str
    content: PostContent
    attempt: int
    job_id: str
    post_id: str


@dataclass(frozen=True)
class UsageReading:
    """How close an account is to a platform limit, after a call."""

    name: str
    scope: str
    remaining: int | None
    used_percent: float
    resets_at: datetime | None
    retry_after: float | None


@dataclass(frozen=True)
class PublishReply:
    status: str  # PUBLISHED | PROCESSING | FAILED
    platform_post_id: str = ""
    url: str = ""
    error: PlatformError | None = None
    usage: Sequence[UsageReading] = ()
    reconciled: bool = False
    platform_latency: float | None = None


@dataclass(frozen=True)
class FindQuery:
    tenant_id: str
    connection_id: str
    idempotency_key: str
    content: PostContent
    since: datetime
    until: datetime


@dataclass(frozen=True)
class FindReply:
    found: bool
    status: str = ""  # PUBLISHED | PROCESSING | FAILED when found
    platform_post_id: str = ""
    url: str = ""
    error: PlatformError | None = None
    lookup_supported: bool = True


class ConnectorsClient(Protocol):
    """The connectors service, as the publisher uses it."""

    async def validate_post(
        self, tenant_id: str, targets: Sequence[TargetSpec], content: PostContent
    ) -> ValidationReport:
        """Check a post against each target's capability matrix. Raises NotFound
        (a target unknown to the tenant), ConnectorsUnavailable."""
        ...

    async def get_connection(self, tenant_id: str, connection_id: str) -> ConnectionInfo:
        """Raises NotFound, ConnectorsUnavailable."""
        ...

    async def publish_post(self, request: PublishRequest) -> PublishReply:
        """One attempt at the platform; platform failures are in the reply. Raises
        PublishOutcomeUnknown, ConnectionGone, ConnectorsRefused."""
        ...

    async def find_post(self, query: FindQuery) -> FindReply:
        """Look a post up by idempotency key / fingerprint. Raises
        ConnectorsUnavailable (nothing known), ConnectionGone."""
        ...

    async def quota_rules(self) -> Sequence[QuotaRule]:
        """Account-scoped publish limits from the capability matrix. Raises
        ConnectorsUnavailable."""
        ...


# --------------------------------------------------------------------------- queue


class QueueUnavailable(Exception):
    """The broker did not take the messages; nothing can be assumed delivered."""


@dataclass(frozen=True)
class DispatchJob:
    """A job on its way to a worker: what the PublishJob message carries."""

    job_id: str
    post_id: str
    tenant_id: str
    connection_id: str
    platform: str
    idempotency_key: str
    content: PostContent
    attempt: int
    due_at: datetime
    dispatched_at: datetime
    max_attempts: int
    # The W3C traceparent of the request that created the job (empty: none): the
    # message continues that trace, whenever and wherever it is dispatched.
    trace_context: str = ""


class JobQueue(Protocol):
    async def send(self, jobs: Sequence[DispatchJob]) -> None:
        """Put jobs on ``publish.jobs`` (key = connection id) and wait for the
        broker's acknowledgements. Raises QueueUnavailable."""
        ...


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class NewJob:
    id: str
    position: int
    connection_id: str
    platform: str
    idempotency_key: str
    content: PostContent
    state: JobState
    due_at: datetime
    max_attempts: int


@dataclass(frozen=True)
class NewPost:
    id: str
    tenant_id: str
    idempotency_key: str
    fingerprint: str
    content: PostContent
    schedule: ScheduleSpec
    publish_at: datetime | None
    requires_approval: bool
    created_by: str
    created_at: datetime
    jobs: Sequence[NewJob]


class IdempotencyKeyTaken(Exception):
    """Another request stored a post under the same tenant + key first."""


@dataclass(frozen=True)
class PostFilter:
    statuses: frozenset[str] = frozenset()
    connection_id: str = ""
    platform: str = ""
    publish_from: datetime | None = None
    publish_to: datetime | None = None
    created_by: str = ""


@dataclass(frozen=True)
class JobFilter:
    states: frozenset[JobState] = frozenset()
    connection_id: str = ""
    platform: str = ""
    post_id: str = ""
    due_from: datetime | None = None
    due_to: datetime | None = None


@dataclass(frozen=True)
class DeadLetterFilter:
    platform: str = ""
    connection_id: str = ""
    categories: frozenset[str] = frozenset()
    post_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the sort value and id of its last row."""

    at: datetime
    id: str


@dataclass(frozen=True)
class ChangeResult:
    changed: Sequence[str]
    unchanged: Sequence[str]


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker claimed for one attempt (state PUBLISHING, attempt row open)."""

    job: Job
    attempt: int
    started_at: datetime
    previous_category: str


@dataclass(frozen=True)
class ResultEvent:
    """What ``publish.results`` reports about one attempt or cancellation."""

    outcome: str  # PUBLISHED | FAILED | RETRY_SCHEDULED | DEAD_LETTERED | CANCELLED
    attempt: int
    finished_at: datetime
    latency: float | None = None
    platform_post_id: str = ""
    url: str = ""
    error: PlatformError | None = None
    next_attempt_at: datetime | None = None
    reconciled: bool = False


@dataclass(frozen=True)
class AttemptRecord:
    """The end of one attempt, and where it leaves the job."""

    job: Job
    attempt: int
    ended_at: datetime
    outcome: AttemptOutcome
    next_state: JobState
    state_reason: str
    event: ResultEvent
    reason: str = ""
    error: PlatformError | None = None
    platform_latency: float | None = None
    platform_post_id: str = ""
    url: str = ""
    run_at: datetime | None = None
    counts: bool = True
    outcome_unknown: bool = False
    dead_letter_reason: str = ""
    block_until: datetime | None = None
    block_reason: str = ""
    pause: ConnectionPause | None = None
    # The platform's circuit breaker: close it (a success), re-open a half-open one
    # (an outage-like failure), or open it (this worker's window tripped).
    close_breaker: bool = False
    breaker_failure: bool = False
    open_breaker_reason: str = ""
    breaker_cooldown: float = 30.0
    breaker_max_cooldown: float = 600.0


@dataclass(frozen=True)
class Breaker:
    platform: str
    state: str  # open | half_open
    open_until: datetime
    cooldown_seconds: float
    probe_started_at: datetime | None


@dataclass(frozen=True)
class StaleSweep:
    redispatched: int
    recovered: int


class DispatchClaim(Protocol):
    """Due jobs claimed in one transaction (DISPATCHED, locked). Leaving the
    context commits; an exception rolls everything back."""

    jobs: Sequence[DispatchJob]

    async def quota_usage(
        self, keys: Sequence[UsageKey], since: datetime
    ) -> Mapping[UsageKey, Sequence[datetime]]:
        """Ledger times after ``since`` for each (tenant, connection, limit)."""
        ...

    async def defer(self, deferrals: Sequence[Deferral]) -> None:
        """Put these claimed jobs back on schedule at their new time, with reason."""
        ...

    async def spend(self, entries: Sequence[LedgerEntry], at: datetime) -> None:
        """Write ledger entries for admitted jobs."""
        ...

    async def mark_probe(self, platform: str, job_id: str) -> bool:
        """Make this claimed job the half-open probe of an open breaker; False when
        another replica took the probe first."""
        ...


@dataclass(frozen=True)
class ClaimRequest:
    now: datetime
    limit: int
    lease_seconds: float
    tenant_cursor: str = ""
    held_platforms: frozenset[str] = frozenset()
    only_platform: str = ""  # a half-open probe: one job of this platform
    # Claim only as many as keep DISPATCHED + PUBLISHING under this (0: no cap).
    max_in_flight: int = 0


class JobStore(Protocol):
    """PostgreSQL, the source of truth for posts, jobs and attempts. Every method
    of tenant data filters by tenant: another tenant's object is not found."""

    # -- posts ---------------------------------------------------------------------
    async def find_post_by_key(self, tenant_id: str, key: str) -> tuple[Post, str] | None:
        """The post stored under a key, with its request fingerprint."""
        ...

    async def insert_post(self, post: NewPost) -> Post:
        """Store a post and its jobs in one transaction; jobs of paused connections
        are stored PAUSED. Raises IdempotencyKeyTaken."""
        ...

    async def get_post(self, tenant_id: str, post_id: str) -> Post | None: ...

    async def list_posts(
        self, tenant_id: str, flt: PostFilter, after: Cursor | None, limit: int
    ) -> Sequence[Post]: ...

    async def get_job(self, tenant_id: str, job_id: str) -> Job | None:
        """A job with its attempts."""
        ...

    async def list_jobs(
        self, tenant_id: str, flt: JobFilter, after: Cursor | None, limit: int
    ) -> Sequence[Job]: ...

    async def cancel_jobs(
        self,
        tenant_id: str,
        post_id: str,
        job_ids: Sequence[str],
        reason: str,
        now: datetime,
    ) -> ChangeResult:
        """Cancel the post's undispatched jobs (all, or those listed)."""
        ...

    async def reschedule_jobs(
        self,
        tenant_id: str,
        post_id: str,
        schedule: ScheduleSpec,
        publish_at: datetime | None,
        now: datetime,
    ) -> ChangeResult:
        """Move the post's undispatched jobs to a new time."""
        ...

    async def set_approval(
        self,
        tenant_id: str,
        post_id: str,
        approval: Approval,
        by: str,
        note: str,
        now: datetime,
    ) -> bool:
        """Approve (jobs AWAITING_APPROVAL -> SCHEDULED, or PAUSED when their
        connection is paused) or reject (-> CANCELLED) a pending post. False when
        the post was no longer pending."""
        ...

    # -- dead letters ---------------------------------------------------------------
    async def list_dead_letters(
        self, tenant_id: str, flt: DeadLetterFilter, after: Cursor | None, limit: int
    ) -> Sequence[DeadLetter]: ...

    async def replay_dead_letters(
        self,
        tenant_id: str,
        job_ids: Sequence[str] | None,
        flt: DeadLetterFilter | None,
        limit: int,
        now: datetime,
    ) -> tuple[Sequence[str], bool]:
        """Put dead-lettered jobs back on schedule with a fresh round of attempts.
        With ids: all or nothing (raises NotFound naming the missing ones). With a
        filter: at most ``limit``, oldest first; returns (ids, truncated)."""
        ...

    # -- connections ----------------------------------------------------------------
    async def knows_connection(self, tenant_id: str, connection_id: str) -> bool: ...

    async def remember_connection(
        self, tenant_id: str, connection_id: str, platform: str
    ) -> None: ...

    async def pause_connection(self, pause: ConnectionPause, now: datetime) -> tuple[int, datetime]:
        """Pause a connection and its waiting jobs; returns (jobs paused now, since)."""
        ...

    async def resume_connection(
        self, tenant_id: str, connection_id: str, now: datetime
    ) -> tuple[int, int]:
        """Unpause; returns (jobs back on schedule, missed jobs left PAUSED)."""
        ...

    async def get_pause(self, tenant_id: str, connection_id: str) -> ConnectionPause | None: ...

    async def missed_jobs(
        self, tenant_id: str, connection_id: str, now: datetime
    ) -> MissedJobs: ...

    async def backfill(
        self,
        tenant_id: str,
        connection_id: str,
        publish: bool,
        job_ids: Sequence[str],
        reason: str,
        now: datetime,
    ) -> int:
        """Schedule (now, in due order) or cancel the connection's missed jobs."""
        ...

    async def event_seen(self, event_id: str) -> bool:
        """Whether an event was handled before (its effect is already stored)."""
        ...

    async def mark_event(self, event_id: str, now: datetime) -> None:
        """Remember an event as handled (after its effect is stored)."""
        ...

    # -- dispatch -------------------------------------------------------------------
    def claim_due(self, request: ClaimRequest) -> AbstractAsyncContextManager[DispatchClaim]:
        """Claim due jobs, fairly across tenants (round-robin from
        ``tenant_cursor``), with batched ``FOR UPDATE SKIP LOCKED``."""
        ...

    async def release(self, jobs: Sequence[DispatchJob], reason: str, now: datetime) -> None:
        """Undo a dispatch the broker did not take (DISPATCHED -> SCHEDULED)."""
        ...

    async def next_due_at(self) -> datetime | None: ...

    async def breakers(self) -> Sequence[Breaker]: ...

    async def reopen_stale_probe(self, platform: str, now: datetime) -> None: ...

    async def sweep_stale(self, now: datetime, limit: int, max_lost_workers: int = 3) -> StaleSweep:
        """Bring back jobs whose dispatch or worker was lost (lease passed); a job
        that has now stopped ``max_lost_workers`` workers is dead-lettered instead."""
        ...

    async def prune(self, ledger_before: datetime, events_before: datetime) -> None: ...

    # -- workers --------------------------------------------------------------------
    async def claim_attempt(
        self,
        tenant_id: str,
        job_id: str,
        attempt: int,
        worker_id: str,
        now: datetime,
        lease_seconds: float,
    ) -> ClaimedJob | None:
        """Start attempt ``attempt`` (job DISPATCHED -> PUBLISHING, attempt row
        IN_PROGRESS) before anything is sent to the platform. None when the
        message is stale or a duplicate, or the job is cancelled or paused."""
        ...

    async def record_attempt(self, record: AttemptRecord) -> bool:
        """Close the attempt and move the job, with its result event, dead letter,
        pause, quota block and breaker change, in one transaction. False when the
        job moved on meanwhile (the attempt row is still closed)."""
        ...

    async def open_breaker(
        self, platform: str, reason: str, cooldown: float, now: datetime
    ) -> None: ...


# --------------------------------------------------------------------------- analytics


@dataclass(frozen=True)
class PostFiguresReply:
    """One post's figures from connectors' GetPostAnalytics (or why there are none)."""

    platform_post_id: str
    figures: Figures | None
    error: PlatformError | None = None


@dataclass(frozen=True)
class AccountFiguresReply:
    """An account's figures per day from connectors' GetAccountAnalytics."""

    days: Sequence[tuple[date, Figures]] = ()
    totals: Mapping[str, int] = field(default_factory=dict)
    error: PlatformError | None = None


class AnalyticsSource(Protocol):
    """Connectors' analytics calls, as the collector uses them. Both do network I/O
    (connectors calls the platform) and raise ConnectionGone (connection deleted) or
    ConnectorsUnavailable (anything else before an answer); platform failures are in
    the reply."""

    async def post_figures(
        self, tenant_id: str, connection_id: str, platform_post_ids: Sequence[str]
    ) -> Sequence[PostFiguresReply]: ...

    async def account_figures(
        self, tenant_id: str, connection_id: str, since: date, until: date
    ) -> AccountFiguresReply: ...


@dataclass(frozen=True)
class CollectionTask:
    """What is collected for one published post (kind post) or one account."""

    id: str
    tenant_id: str
    connection_id: str
    platform: str
    kind: str  # post | account
    job_id: str = ""
    post_id: str = ""
    platform_post_id: str = ""
    content_type: str = ""
    published_at: datetime | None = None
    attempts: int = 0
    collections: int = 0
    latest: Figures | None = None


@dataclass(frozen=True)
class CollectionRound:
    """Collection tasks of one connection dispatched together (one AnalyticsJob)."""

    round_id: str  # the dispatch token the tasks carry
    tenant_id: str
    connection_id: str
    platform: str
    kind: str
    task_ids: Sequence[str]
    dispatched_at: datetime


@dataclass(frozen=True)
class CollectionResult:
    """The end of one task's collection round: what was read and where it leaves the
    task."""

    task: CollectionTask
    state: str  # SCHEDULED | RETRYING | DONE | STOPPED
    run_at: datetime
    reason: str = ""
    figures: Figures | None = None
    account_days: Sequence[tuple[date, Figures]] = ()
    totals: Mapping[str, int] = field(default_factory=dict)
    category: str = ""
    attempts: int = 0
    dead_letter_reason: str = ""


@dataclass(frozen=True)
class CollectionClaimRequest:
    now: datetime
    limit: int  # tasks
    lease_seconds: float
    held_platforms: frozenset[str] = frozenset()
    # Most posts per round, per platform (others: ``default_round``).
    round_sizes: Mapping[str, int] = field(default_factory=dict)
    default_round: int = 25


class CollectionClaim(Protocol):
    """Due collection tasks claimed in one transaction (DISPATCHED, locked), grouped in
    rounds. Leaving the context commits; an exception rolls everything back."""

    rounds: Sequence[CollectionRound]

    async def quota_usage(
        self, keys: Sequence[UsageKey], since: datetime
    ) -> Mapping[UsageKey, Sequence[datetime]]:
        """Ledger times after ``since`` for each (tenant, connection, limit)."""
        ...

    async def defer(self, deferrals: Sequence[Deferral]) -> None:
        """Put these rounds' tasks back on schedule at the given time, with reason
        (``Deferral.job_id`` names the round)."""
        ...

    async def spend(self, entries: Sequence[LedgerEntry], at: datetime) -> None: ...


class AnalyticsQueue(Protocol):
    async def send(self, rounds: Sequence[CollectionRound]) -> None:
        """Put rounds on ``analytics.jobs`` (key = connection id) and wait for the
        broker's acknowledgements. Raises QueueUnavailable."""
        ...


class AnalyticsStore(Protocol):
    """PostgreSQL, for collection: tasks, snapshots and the rollups kept with them.
    Every method of tenant data filters by tenant."""

    def claim_due(
        self, request: CollectionClaimRequest
    ) -> AbstractAsyncContextManager[CollectionClaim]:
        """Claim due tasks (not of paused or blocked connections, nor of platforms
        held by an open breaker) with ``FOR UPDATE SKIP LOCKED``."""
        ...

    async def release(self, rounds: Sequence[CollectionRound], reason: str, now: datetime) -> None:
        """Undo a dispatch the broker did not take."""
        ...

    async def claim_round(
        self,
        tenant_id: str,
        task_ids: Sequence[str],
        round_id: str,
        now: datetime,
        lease_seconds: float,
    ) -> Sequence[CollectionTask]:
        """DISPATCHED -> COLLECTING for the tasks still carrying ``round_id``; a stale
        or duplicate delivery claims nothing."""
        ...

    async def record(self, results: Sequence[CollectionResult], taken_at: datetime) -> None:
        """Snapshots, task states, rollups (every time zone kept for the tenant) and
        dead-letter messages of one round, in one transaction."""
        ...

    async def sweep_stale(self, now: datetime, limit: int) -> int:
        """Bring back tasks whose round was lost (lease passed)."""
        ...

    async def track_connection(
        self, tenant_id: str, connection_id: str, platform: str, now: datetime
    ) -> None:
        """Make sure the account's daily collection exists, and collect again now
        what waited for a reconnect (idempotent)."""
        ...
