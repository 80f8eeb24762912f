"""What the publisher works with: posts, their publish jobs and the jobs' attempts.

Content and platform failures are carried as the shared protobuf data types
(``PostContent``, ``PlatformError``): plain data, no transport. States and outcomes
are the publisher's own enums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from postd.common.v1.common_pb2 import ErrorCategory, PlatformError, PostContent


class JobState(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    DISPATCHED = "DISPATCHED"
    PUBLISHING = "PUBLISHING"
    PUBLISHED = "PUBLISHED"
    RETRYING = "RETRYING"
    PAUSED = "PAUSED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({JobState.PUBLISHED, JobState.FAILED, JobState.CANCELLED})
# States a job can still be cancelled or rescheduled from: nothing is on its way.
UNDISPATCHED_STATES = frozenset(
    {
        JobState.PENDING,
        JobState.SCHEDULED,
        JobState.AWAITING_APPROVAL,
        JobState.RETRYING,
        JobState.PAUSED,
    }
)


class AttemptOutcome(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    PUBLISHED = "PUBLISHED"
    RECONCILED = "RECONCILED"
    FAILED_RETRYABLE = "FAILED_RETRYABLE"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    DEFERRED = "DEFERRED"


class Category(StrEnum):
    """ErrorCategory names without their prefix, as stored and compared."""

    AUTH_REVOKED = "AUTH_REVOKED"
    AUTH_EXPIRED = "AUTH_EXPIRED"
    PERMISSION_MISSING = "PERMISSION_MISSING"
    RATE_LIMITED = "RATE_LIMITED"
    CONTENT_REJECTED = "CONTENT_REJECTED"
    TRANSIENT = "TRANSIENT"
    PLATFORM_OUTAGE = "PLATFORM_OUTAGE"
    INVALID_REQUEST = "INVALID_REQUEST"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def of(cls, error: PlatformError) -> Category:
        name = ErrorCategory.Name(error.category).removeprefix("ERROR_CATEGORY_")
        try:
            return cls(name)
        except ValueError:
            return cls.UNKNOWN  # UNSPECIFIED reads as UNKNOWN (common.proto)

    def proto(self) -> ErrorCategory.ValueType:
        return ErrorCategory.Value(f"ERROR_CATEGORY_{self.value}")


class PostStatus(StrEnum):
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    SCHEDULED = "SCHEDULED"
    PUBLISHING = "PUBLISHING"
    PUBLISHED = "PUBLISHED"
    PARTIALLY_PUBLISHED = "PARTIALLY_PUBLISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class Approval(StrEnum):
    NONE = "none"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as the caller gave it: an absolute time, a local time in a zone, or
    neither (as soon as possible)."""

    absolute: datetime | None = None
    local_time: str = ""
    time_zone: str = ""

    @property
    def kind(self) -> str:
        if self.absolute is not None:
            return "absolute"
        if self.local_time or self.time_zone:
            return "local"
        return "none"


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: datetime
    ended_at: datetime | None
    outcome: AttemptOutcome
    error: PlatformError | None
    reason: str
    worker_id: str
    platform_latency: float | None


@dataclass(frozen=True)
class Job:
    id: str
    post_id: str
    tenant_id: str
    position: int
    connection_id: str
    platform: str
    idempotency_key: str
    state: JobState
    state_reason: str
    due_at: datetime
    run_at: datetime
    content: PostContent
    attempt_count: int
    budget_used: int
    max_attempts: int
    outcome_unknown: bool
    platform_post_id: str
    url: str
    last_error: PlatformError | None
    dead_lettered: bool
    replay_count: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    attempts: Sequence[Attempt] = ()

    @property
    def next_attempt_at(self) -> datetime | None:
        """When the next attempt may go, for a job waiting on a retry or a deferral."""
        if self.state is JobState.RETRYING or (
            self.state is JobState.SCHEDULED and self.run_at > self.due_at
        ):
            return self.run_at
        return None


@dataclass(frozen=True)
class Post:
    id: str
    tenant_id: str
    idempotency_key: str
    content: PostContent
    schedule: ScheduleSpec
    publish_at: datetime | None
    requires_approval: bool
    approval: Approval
    approved_by: str
    approved_at: datetime | None
    rejected_by: str
    rejected_at: datetime | None
    approval_note: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    jobs: Sequence[Job] = field(default_factory=tuple)

    @property
    def status(self) -> PostStatus:
        return post_status(self.approval, [j.state for j in self.jobs])


def post_status(approval: Approval, states: Sequence[JobState]) -> PostStatus:
    """A post's overall state, derived from its approval and its jobs' states."""
    if approval is Approval.REJECTED:
        return PostStatus.REJECTED
    if JobState.AWAITING_APPROVAL in states:
        return PostStatus.AWAITING_APPROVAL
    if states and all(s in TERMINAL_STATES for s in states):
        published = sum(1 for s in states if s is JobState.PUBLISHED)
        if published == len(states):
            return PostStatus.PUBLISHED
        if published:
            return PostStatus.PARTIALLY_PUBLISHED
        if all(s is JobState.CANCELLED for s in states):
            return PostStatus.CANCELLED
        return PostStatus.FAILED
    if all(s in (JobState.PENDING, JobState.SCHEDULED) for s in states):
        return PostStatus.SCHEDULED
    return PostStatus.PUBLISHING


@dataclass(frozen=True)
class DeadLetter:
    job: Job
    reason: str
    dead_lettered_at: datetime


@dataclass(frozen=True)
class ConnectionPause:
    tenant_id: str
    connection_id: str
    paused_since: datetime
    reason: str
    category: str
    source: str


@dataclass(frozen=True)
class MissedJobs:
    count: int
    oldest_due_at: datetime | None
    newest_due_at: datetime | None
    paused_since: datetime | None
