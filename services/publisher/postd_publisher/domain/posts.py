"""Posts as people manage them: create (validated, idempotent), cancel, reschedule,
approve or reject, the dead-letter queue, and pausing connections."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from postd.common.v1.common_pb2 import PostContent, ValidationReport
from postd_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from postd_publisher.domain.model import (
    Approval,
    ConnectionPause,
    Job,
    JobState,
    MissedJobs,
    Post,
    ScheduleSpec,
)
from postd_publisher.domain.schedule import resolve
from postd_publisher.ports import (
    ConnectionInfo,
    ConnectorsClient,
    ConnectorsUnavailable,
    DeadLetterFilter,
    IdempotencyKeyTaken,
    JobStore,
    NewJob,
    NewPost,
    TargetSpec,
)

Clock = Callable[[], datetime]
PAUSING_STATUSES = frozenset({"ATTENTION", "REVOKED", "DISCONNECTED"})
WORKING_STATUSES = frozenset({"HEALTHY", "EXPIRING_SOON"})
MAX_KEY_LENGTH = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def job_key(post_key: str, connection_id: str) -> str:
    """A job's idempotency key: derived from the post's key and the target, so every
    attempt and replay of the job presents the same one to the platform."""
    digest = hashlib.sha256(f"{post_key}\x1f{connection_id}".encode()).hexdigest()
    return f"pj_{digest[:40]}"


def effective_content(base: PostContent, override: PostContent) -> PostContent:
    """A target's content: the override's non-empty fields replace the post's;
    options are merged key by key."""
    merged = PostContent()
    merged.CopyFrom(base)
    if override.text:
        merged.text = override.text
    if override.link:
        merged.link = override.link
    if override.title:
        merged.title = override.title
    if len(override.media):
        del merged.media[:]
        merged.media.extend(override.media)
    for key, value in override.options.items():
        merged.options[key] = value
    return merged


def request_fingerprint(
    content: PostContent,
    targets: Sequence[TargetSpec],
    schedule: ScheduleSpec,
    requires_approval: bool,
) -> str:
    """What makes two create requests "the same" for idempotency."""
    digest = hashlib.sha256()
    digest.update(content.SerializeToString(deterministic=True))
    for target in targets:
        digest.update(b"\x1e" + target.connection_id.encode())
        digest.update(b"\x1f" + target.override.SerializeToString(deterministic=True))
    absolute = schedule.absolute.astimezone(UTC).isoformat() if schedule.absolute else ""
    digest.update(f"\x1d{absolute}\x1d{schedule.local_time}\x1d{schedule.time_zone}".encode())
    digest.update(b"\x1d1" if requires_approval else b"\x1d0")
    return digest.hexdigest()


@dataclass(frozen=True)
class CreatePost:
    tenant_id: str
    idempotency_key: str
    content: PostContent
    targets: Sequence[TargetSpec]
    schedule: ScheduleSpec
    requires_approval: bool
    created_by: str
    validate_only: bool = False


@dataclass(frozen=True)
class Created:
    post: Post
    existing: bool
    report: ValidationReport


class ContentInvalid(InvalidArgument):
    """A target's content breaks its platform's limits; ``report`` says where."""

    def __init__(self, message: str, report: ValidationReport, field: str) -> None:
        super().__init__(message, code="content_invalid", field=field)
        self.report = report


class ConnectionCache:
    """Connection facts (platform, status) for a short while, so a burst of creates
    does not ask connectors once per target each time; status changes from
    ``connection.events`` drop the entry at once."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self._ttl = ttl_seconds
        self._items: dict[tuple[str, str], tuple[float, ConnectionInfo]] = {}

    def get(self, tenant_id: str, connection_id: str) -> ConnectionInfo | None:
        item = self._items.get((tenant_id, connection_id))
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, tenant_id: str, info: ConnectionInfo) -> None:
        if len(self._items) > 50_000:
            self._items.clear()
        self._items[(tenant_id, info.connection_id)] = (time.monotonic() + self._ttl, info)

    def drop(self, tenant_id: str, connection_id: str) -> None:
        self._items.pop((tenant_id, connection_id), None)


class PostService:
    """The use cases behind the gRPC API and ``connection.events``."""

    def __init__(
        self,
        store: JobStore,
        connectors: ConnectorsClient,
        *,
        max_attempts: int = 4,
        clock: Clock = utc_now,
        ids: Callable[[], str] = new_id,
        wake_dispatcher: Callable[[], None] = lambda: None,
        cache: ConnectionCache | None = None,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._max_attempts = max_attempts
        self._now = clock
        self._ids = ids
        self._wake = wake_dispatcher
        self._cache = cache or ConnectionCache()

    # ------------------------------------------------------------------ create

    async def create(self, cmd: CreatePost) -> Created:
        _check_create(cmd)
        publish_at = resolve(cmd.schedule)
        fingerprint = request_fingerprint(
            cmd.content, cmd.targets, cmd.schedule, cmd.requires_approval
        )
        if not cmd.validate_only:
            existing = await self._existing(cmd, fingerprint)
            if existing is not None:
                return existing
        infos = await self._connections(cmd.tenant_id, cmd.targets)
        report = await self._validate(cmd)
        now = self._now()
        due = publish_at or now
        post_id = self._ids()
        jobs = [
            NewJob(
                id=self._ids(),
                position=i,
                connection_id=t.connection_id,
                platform=infos[i].platform,
                idempotency_key=job_key(cmd.idempotency_key, t.connection_id),
                content=effective_content(cmd.content, t.override),
                state=JobState.AWAITING_APPROVAL if cmd.requires_approval else JobState.SCHEDULED,
                due_at=due,
                max_attempts=self._max_attempts,
            )
            for i, t in enumerate(cmd.targets)
        ]
        new = NewPost(
            id=post_id,
            tenant_id=cmd.tenant_id,
            idempotency_key=cmd.idempotency_key,
            fingerprint=fingerprint,
            content=cmd.content,
            schedule=cmd.schedule,
            publish_at=publish_at,
            requires_approval=cmd.requires_approval,
            created_by=cmd.created_by,
            created_at=now,
            jobs=jobs,
        )
        if cmd.validate_only:
            return Created(_unsaved(new), existing=False, report=report)
        try:
            post = await self._store.insert_post(new)
        except IdempotencyKeyTaken:
            raced = await self._existing(cmd, fingerprint)
            if raced is None:  # pragma: no cover - the winner's row is committed
                raise
            return raced
        if due <= now or (due - now).total_seconds() < 1.0:
            self._wake()
        return Created(post, existing=False, report=report)

    async def _existing(self, cmd: CreatePost, fingerprint: str) -> Created | None:
        found = await self._store.find_post_by_key(cmd.tenant_id, cmd.idempotency_key)
        if found is None:
            return None
        post, stored = found
        if stored != fingerprint:
            raise AlreadyExists(
                f"idempotency key {cmd.idempotency_key!r} was already used on "
                f"{post.created_at:%Y-%m-%d %H:%M:%S} UTC for a different post "
                f"({post.id}); send the same request to get that post back, or use a "
                "new key for a new post",
                code="idempotency_key_reused",
                field="idempotency_key",
            )
        return Created(post, existing=True, report=ValidationReport(valid=True))

    async def _connections(
        self, tenant_id: str, targets: Sequence[TargetSpec]
    ) -> list[ConnectionInfo]:
        async def one(i: int, target: TargetSpec) -> ConnectionInfo:
            cached = self._cache.get(tenant_id, target.connection_id)
            if cached is not None:
                return cached
            try:
                info = await self._connectors.get_connection(tenant_id, target.connection_id)
            except NotFound as exc:
                raise NotFound(
                    f"targets[{i}].connection_id: connection {target.connection_id!r} is not "
                    "known to this tenant",
                    field=f"targets[{i}].connection_id",
                ) from exc
            except ConnectorsUnavailable as exc:
                raise Unavailable(
                    "connectors is unavailable; retry shortly", retry_after=1.0
                ) from exc
            self._cache.put(tenant_id, info)
            return info

        infos = list(await asyncio.gather(*(one(i, t) for i, t in enumerate(targets))))
        for i, info in enumerate(infos):
            if info.status == "DISCONNECTED":
                raise FailedPrecondition(
                    f"targets[{i}]: the {info.platform} connection "
                    f"{info.account_name or info.connection_id} is disconnected; reconnect "
                    "it before publishing to it",
                    code="connection_disconnected",
                    field=f"targets[{i}].connection_id",
                )
        return infos

    async def _validate(self, cmd: CreatePost) -> ValidationReport:
        try:
            report = await self._connectors.validate_post(cmd.tenant_id, cmd.targets, cmd.content)
        except ConnectorsUnavailable as exc:
            raise Unavailable("connectors is unavailable; retry shortly", retry_after=1.0) from exc
        if report.valid:
            return report
        problems: list[str] = []
        first_field = ""
        for i, target in enumerate(report.targets):
            for violation in target.violations:
                if violation.severity == 2:  # VIOLATION_SEVERITY_WARNING
                    continue
                where = _field_path(i, violation.field)
                first_field = first_field or where
                name = target.platform or "target"
                problems.append(
                    f"targets[{i}] ({name} {target.connection_id}): {where}: {violation.message}"
                )
        message = "; ".join(problems) or "the post is not valid for its targets"
        raise ContentInvalid(message, report, first_field)

    # ------------------------------------------------------------------ reads

    async def get(self, tenant_id: str, post_id: str) -> Post:
        post = await self._store.get_post(tenant_id, post_id)
        if post is None:
            raise NotFound(f"post {post_id!r} not found", field="post_id")
        return post

    async def job(self, tenant_id: str, job_id: str) -> Job:
        job = await self._store.get_job(tenant_id, job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found", field="job_id")
        return job

    # ------------------------------------------------------------------ changes

    async def cancel(
        self, tenant_id: str, post_id: str, job_ids: Sequence[str], by: str, reason: str
    ) -> tuple[Post, int, Sequence[str]]:
        post = await self.get(tenant_id, post_id)
        _check_listed(post, job_ids)
        said = f"Cancelled by {by or 'a user'}" + (f": {reason}" if reason else ".")
        result = await self._store.cancel_jobs(tenant_id, post_id, job_ids, said, self._now())
        if not result.changed:
            raise FailedPrecondition(
                "nothing to cancel: " + _why_not(post, result.unchanged, "cancelled"),
                code="already_dispatched",
            )
        return await self.get(tenant_id, post_id), len(result.changed), result.unchanged

    async def reschedule(
        self, tenant_id: str, post_id: str, schedule: ScheduleSpec
    ) -> tuple[Post, int, Sequence[str]]:
        publish_at = resolve(schedule)
        post = await self.get(tenant_id, post_id)
        result = await self._store.reschedule_jobs(
            tenant_id, post_id, schedule, publish_at, self._now()
        )
        if not result.changed:
            raise FailedPrecondition(
                "nothing to reschedule: " + _why_not(post, result.unchanged, "moved"),
                code="already_dispatched",
            )
        self._wake()
        return await self.get(tenant_id, post_id), len(result.changed), result.unchanged

    async def approve(self, tenant_id: str, post_id: str, by: str, note: str) -> Post:
        post = await self.get(tenant_id, post_id)
        if post.approval is Approval.APPROVED:
            return post
        _check_pending(post, "approved")
        if not await self._store.set_approval(
            tenant_id, post_id, Approval.APPROVED, by, note, self._now()
        ):
            # Someone decided first: answer from what they decided.
            post = await self.get(tenant_id, post_id)
            if post.approval is Approval.APPROVED:
                return post
            _check_pending(post, "approved")
        self._wake()
        return await self.get(tenant_id, post_id)

    async def reject(self, tenant_id: str, post_id: str, by: str, reason: str) -> Post:
        post = await self.get(tenant_id, post_id)
        _check_pending(post, "rejected")
        if not await self._store.set_approval(
            tenant_id, post_id, Approval.REJECTED, by, reason, self._now()
        ):
            post = await self.get(tenant_id, post_id)
            _check_pending(post, "rejected")
        return await self.get(tenant_id, post_id)

    # ------------------------------------------------------------------ dead letters

    async def replay(
        self,
        tenant_id: str,
        job_ids: Sequence[str],
        flt: DeadLetterFilter | None,
        limit: int,
    ) -> tuple[Sequence[str], bool]:
        if bool(job_ids) == (flt is not None):
            raise InvalidArgument(
                "give exactly one of job_ids and filter", field="job_ids", code="one_of"
            )
        if limit < 0:
            raise InvalidArgument("limit must not be negative", field="limit")
        ids, truncated = await self._store.replay_dead_letters(
            tenant_id, list(job_ids) if job_ids else None, flt, limit or 1000, self._now()
        )
        if ids:
            self._wake()
        return ids, truncated

    # ------------------------------------------------------------------ connections

    async def _known(self, tenant_id: str, connection_id: str) -> None:
        if not connection_id:
            raise InvalidArgument("connection_id is required", field="connection_id")
        if await self._store.knows_connection(tenant_id, connection_id):
            return
        try:
            info = await self._connectors.get_connection(tenant_id, connection_id)
        except NotFound as exc:
            raise NotFound(
                f"connection {connection_id!r} not found", field="connection_id"
            ) from exc
        except ConnectorsUnavailable as exc:
            raise Unavailable("connectors is unavailable; retry shortly", retry_after=1.0) from exc
        await self._store.remember_connection(tenant_id, connection_id, info.platform)

    async def pause(
        self,
        tenant_id: str,
        connection_id: str,
        reason: str,
        category: str,
        source: str,
        *,
        check_known: bool = True,
    ) -> tuple[int, datetime]:
        if check_known:
            await self._known(tenant_id, connection_id)
        pause = ConnectionPause(
            tenant_id=tenant_id,
            connection_id=connection_id,
            paused_since=self._now(),
            reason=reason or "The connection needs attention.",
            category=category,
            source=source,
        )
        self._cache.drop(tenant_id, connection_id)
        return await self._store.pause_connection(pause, self._now())

    async def resume(
        self, tenant_id: str, connection_id: str, *, check_known: bool = True
    ) -> tuple[int, int]:
        if check_known:
            await self._known(tenant_id, connection_id)
        self._cache.drop(tenant_id, connection_id)
        resumed, missed = await self._store.resume_connection(tenant_id, connection_id, self._now())
        if resumed:
            self._wake()
        return resumed, missed

    async def missed(self, tenant_id: str, connection_id: str) -> tuple[MissedJobs, bool]:
        await self._known(tenant_id, connection_id)
        missed = await self._store.missed_jobs(tenant_id, connection_id, self._now())
        return missed, missed.paused_since is not None

    async def backfill(
        self,
        tenant_id: str,
        connection_id: str,
        publish: bool,
        job_ids: Sequence[str],
        by: str,
    ) -> int:
        await self._known(tenant_id, connection_id)
        pause = await self._store.get_pause(tenant_id, connection_id)
        if pause is not None:
            raise FailedPrecondition(
                f"connection {connection_id} is still paused ({pause.reason}); resume it "
                "(reconnect) before publishing or cancelling its missed items",
                code="connection_paused",
            )
        reason = (
            f"Backfilled by {by or 'a user'}: published late, after the connection was fixed."
            if publish
            else f"Cancelled by {by or 'a user'}: missed while the connection was paused."
        )
        count = await self._store.backfill(
            tenant_id, connection_id, publish, job_ids, reason, self._now()
        )
        if publish and count:
            self._wake()
        return count

    async def on_connection_status(
        self,
        *,
        event_id: str,
        tenant_id: str,
        connection_id: str,
        platform: str,
        status: str,
        reason: str,
        category: str,
        source: str,
    ) -> None:
        """React to ``connection.events``: leave HEALTHY → pause; come back → resume.
        A pause a person set by hand is not lifted by a status change."""
        if event_id and await self._store.event_seen(event_id):
            return
        self._cache.drop(tenant_id, connection_id)
        if platform:
            await self._store.remember_connection(tenant_id, connection_id, platform)
        if status in PAUSING_STATUSES:
            await self.pause(
                tenant_id,
                connection_id,
                reason or f"The connection is {status.lower()}.",
                category,
                source or "connection_event",
                check_known=False,
            )
        elif status in WORKING_STATUSES:
            current = await self._store.get_pause(tenant_id, connection_id)
            if current is not None and not current.source.startswith("user:"):
                await self.resume(tenant_id, connection_id, check_known=False)
        if event_id:
            await self._store.mark_event(event_id, self._now())


# ---------------------------------------------------------------------- helpers


def _check_create(cmd: CreatePost) -> None:
    if not cmd.tenant_id:
        raise InvalidArgument("tenant_id is required", field="tenant_id")
    if not cmd.idempotency_key:
        raise InvalidArgument("idempotency_key is required", field="idempotency_key")
    if len(cmd.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"idempotency_key is longer than {MAX_KEY_LENGTH} characters",
            field="idempotency_key",
        )
    if not cmd.targets:
        raise InvalidArgument("a post needs at least one target", field="targets")
    seen: set[str] = set()
    for i, target in enumerate(cmd.targets):
        if not target.connection_id:
            raise InvalidArgument(
                f"targets[{i}].connection_id is required", field=f"targets[{i}].connection_id"
            )
        if target.connection_id in seen:
            raise InvalidArgument(
                f"targets[{i}]: connection {target.connection_id!r} is listed twice",
                field=f"targets[{i}].connection_id",
            )
        seen.add(target.connection_id)


def _field_path(index: int, field: str) -> str:
    if not field or field.startswith("targets["):
        return field or f"targets[{index}]"
    if field.startswith("content"):
        return f"targets[{index}].{field}"
    return field


def _check_listed(post: Post, job_ids: Sequence[str]) -> None:
    known = {j.id for j in post.jobs}
    unknown = [j for j in job_ids if j not in known]
    if unknown:
        raise NotFound(f"job {unknown[0]!r} is not a job of post {post.id}", field="job_ids")


def _check_pending(post: Post, verb: str) -> None:
    if post.approval is Approval.REJECTED:
        raise FailedPrecondition(
            f"post {post.id} was rejected by {post.rejected_by or 'an approver'}; it cannot "
            f"be {verb}",
            code="post_rejected",
        )
    if post.approval is Approval.NONE:
        raise FailedPrecondition(
            f"post {post.id} never required approval", code="approval_not_required"
        )
    if post.approval is Approval.APPROVED:
        raise FailedPrecondition(
            f"post {post.id} was already approved by {post.approved_by or 'an approver'}",
            code="post_approved",
        )
    if post.jobs and all(j.state is JobState.CANCELLED for j in post.jobs):
        raise FailedPrecondition(
            f"post {post.id} was cancelled; it cannot be {verb}", code="post_cancelled"
        )


def _why_not(post: Post, unchanged: Sequence[str], verb: str) -> str:
    states = {j.id: j.state for j in post.jobs}
    parts = [
        f"job {job_id} is {states.get(job_id, JobState.PENDING).value}" for job_id in unchanged
    ]
    tail = "; ".join(parts[:5]) + (f" and {len(parts) - 5} more" if len(parts) > 5 else "")
    return (
        f"every job is already dispatched or finished and can no longer be {verb} ({tail})"
        if tail
        else f"no job can be {verb}"
    )


def _unsaved(new: NewPost) -> Post:
    """The post a create would store, for ``validate_only``."""
    jobs = tuple(
        Job(
            id="",
            post_id="",
            tenant_id=new.tenant_id,
            position=j.position,
            connection_id=j.connection_id,
            platform=j.platform,
            idempotency_key=j.idempotency_key,
            state=j.state,
            state_reason="",
            due_at=j.due_at,
            run_at=j.due_at,
            content=j.content,
            attempt_count=0,
            budget_used=0,
            max_attempts=j.max_attempts,
            outcome_unknown=False,
            platform_post_id="",
            url="",
            last_error=None,
            dead_lettered=False,
            replay_count=0,
            created_at=new.created_at,
            updated_at=new.created_at,
            finished_at=None,
        )
        for j in new.jobs
    )
    approval = Approval.PENDING if new.requires_approval else Approval.NONE
    return Post(
        id="",
        tenant_id=new.tenant_id,
        idempotency_key=new.idempotency_key,
        content=new.content,
        schedule=new.schedule,
        publish_at=new.publish_at,
        requires_approval=new.requires_approval,
        approval=approval,
        approved_by="",
        approved_at=None,
        rejected_by="",
        rejected_at=None,
        approval_note="",
        created_by=new.created_by,
        created_at=new.created_at,
        updated_at=new.created_at,
        jobs=jobs,
    )
