# Queries are assembled from this module's constants and numbered placeholders only;
# every value is bound ($n), never interpolated.
# ruff: noqa: S608
"""All of the publisher's SQL (schema ``publisher``; tests may use another name).

Every query of tenant data has ``tenant_id = $n`` in its WHERE clause; the
dispatcher, the reconciler and the worker claim work across tenants by design.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeAlias, TypeVar

import asyncpg
from opentelemetry import propagate

from postd.common.v1.common_pb2 import PlatformError, PostContent
from postd_common.db import Params
from postd_common.errors import InvalidArgument, NotFound
from postd_publisher.adapters.events import (
    OutgoingMessage,
    Topics,
    dead_letter_message,
    result_message,
)
from postd_publisher.domain.analytics import CollectionSchedule, content_type
from postd_publisher.domain.model import (
    TERMINAL_STATES,
    UNDISPATCHED_STATES,
    Approval,
    Attempt,
    AttemptOutcome,
    Category,
    ConnectionPause,
    DeadLetter,
    Job,
    JobState,
    MissedJobs,
    Post,
    ScheduleSpec,
)
from postd_publisher.domain.quota import Deferral, LedgerEntry, UsageKey
from postd_publisher.ports import (
    AttemptRecord,
    Breaker,
    ChangeResult,
    ClaimedJob,
    ClaimRequest,
    Cursor,
    DeadLetterFilter,
    DispatchJob,
    IdempotencyKeyTaken,
    JobFilter,
    NewPost,
    PostFilter,
    ResultEvent,
    StaleSweep,
)

SCHEMA = "publisher"
Conn: TypeAlias = "asyncpg.Connection | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_UNDISPATCHED = sorted(s.value for s in UNDISPATCHED_STATES)
_TERMINAL = sorted(s.value for s in TERMINAL_STATES)

JOB_COLUMNS = """j.id, j.post_id, j.tenant_id, j.position, j.connection_id, j.platform,
    j.idempotency_key, j.state, j.state_reason, j.due_at, j.run_at, j.content,
    j.attempt_count, j.budget_used, j.max_attempts, j.outcome_unknown,
    j.platform_post_id, j.url, j.last_error, j.last_category, j.dead_lettered,
    j.replay_count, j.created_at, j.updated_at, j.finished_at"""

POST_COLUMNS = """p.id, p.tenant_id, p.idempotency_key, p.request_fingerprint, p.content,
    p.schedule_kind, p.schedule_local_time, p.schedule_time_zone, p.publish_at,
    p.requires_approval, p.approval, p.approved_by, p.approved_at, p.rejected_by,
    p.rejected_at, p.approval_note, p.created_by, p.created_at, p.updated_at, p.sort_at"""

# A post's status from its jobs, as domain.model.post_status derives it.
POST_STATUS_SQL = """CASE
    WHEN p.approval = 'rejected' THEN 'REJECTED'
    WHEN agg.awaiting > 0 THEN 'AWAITING_APPROVAL'
    WHEN agg.total > 0 AND agg.final = agg.total THEN CASE
        WHEN agg.published = agg.total THEN 'PUBLISHED'
        WHEN agg.published > 0 THEN 'PARTIALLY_PUBLISHED'
        WHEN agg.cancelled = agg.total THEN 'CANCELLED'
        ELSE 'FAILED' END
    WHEN agg.waiting = agg.total THEN 'SCHEDULED'
    ELSE 'PUBLISHING' END"""

POST_AGGREGATE_SQL = """CROSS JOIN LATERAL (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE s.state = 'AWAITING_APPROVAL') AS awaiting,
           count(*) FILTER (WHERE s.state IN ('PUBLISHED', 'FAILED', 'CANCELLED')) AS final,
           count(*) FILTER (WHERE s.state = 'PUBLISHED') AS published,
           count(*) FILTER (WHERE s.state = 'CANCELLED') AS cancelled,
           count(*) FILTER (WHERE s.state IN ('PENDING', 'SCHEDULED')) AS waiting
    FROM publisher.jobs s WHERE s.post_id = p.id) agg"""

CLAIM_DUE_SQL = """
WITH RECURSIVE tenants AS (
    (SELECT tenant_id FROM publisher.jobs
      WHERE state IN ('SCHEDULED', 'RETRYING') ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM publisher.jobs j
             WHERE j.state IN ('SCHEDULED', 'RETRYING') AND j.tenant_id > t.tenant_id
             ORDER BY j.tenant_id LIMIT 1)
    FROM tenants t WHERE t.tenant_id IS NOT NULL
), due AS (
    SELECT t.tenant_id FROM tenants t
    WHERE t.tenant_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM publisher.jobs j
        WHERE j.tenant_id = t.tenant_id AND j.state IN ('SCHEDULED', 'RETRYING')
          AND j.run_at <= $1)
), share AS (
    SELECT greatest(1, $2::bigint / greatest(count(*), 1))::int AS n FROM due
), picked AS (
    SELECT c.id, c.tenant_id, c.run_at FROM due CROSS JOIN LATERAL (
        SELECT j.id, j.tenant_id, j.run_at FROM publisher.jobs j
        WHERE j.tenant_id = due.tenant_id AND j.state IN ('SCHEDULED', 'RETRYING')
          AND j.run_at <= $1
          AND NOT (j.platform = ANY($4::text[]))
          AND NOT EXISTS (SELECT 1 FROM publisher.connection_pauses cp
                          WHERE cp.tenant_id = j.tenant_id
                            AND cp.connection_id = j.connection_id)
          AND NOT EXISTS (SELECT 1 FROM publisher.quota_blocks qb
                          WHERE qb.tenant_id = j.tenant_id
                            AND qb.connection_id = j.connection_id AND qb.until > $1)
        ORDER BY j.run_at
        LIMIT (SELECT n FROM share)
        FOR UPDATE SKIP LOCKED) c
    ORDER BY (c.tenant_id <= $3), c.tenant_id, c.run_at
    LIMIT $2
)
UPDATE publisher.jobs j
   SET state = 'DISPATCHED', dispatched_at = $1, dispatch_count = j.dispatch_count + 1,
       run_at = $1::timestamptz + make_interval(secs => $5::float8), updated_at = $1,
       state_reason = ''
  FROM picked WHERE j.id = picked.id
RETURNING j.id, j.post_id, j.tenant_id, j.connection_id, j.platform, j.idempotency_key,
          j.content, j.attempt_count, j.due_at, j.max_attempts, j.trace_context,
          (picked.tenant_id <= $3) AS wrapped, picked.run_at AS was_due
"""

CLAIM_PROBE_SQL = """
WITH picked AS (
    SELECT j.id, j.tenant_id, j.run_at FROM publisher.jobs j
    WHERE j.state IN ('SCHEDULED', 'RETRYING') AND j.run_at <= $1 AND j.platform = $2
      AND NOT EXISTS (SELECT 1 FROM publisher.connection_pauses cp
                      WHERE cp.tenant_id = j.tenant_id AND cp.connection_id = j.connection_id)
    ORDER BY j.run_at LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE publisher.jobs j
   SET state = 'DISPATCHED', dispatched_at = $1, dispatch_count = j.dispatch_count + 1,
       run_at = $1::timestamptz + make_interval(secs => $3::float8), updated_at = $1,
       state_reason = ''
  FROM picked WHERE j.id = picked.id
RETURNING j.id, j.post_id, j.tenant_id, j.connection_id, j.platform, j.idempotency_key,
          j.content, j.attempt_count, j.due_at, j.max_attempts, j.trace_context,
          false AS wrapped, picked.run_at AS was_due
"""

CLAIM_ATTEMPTS_SQL = f"""
WITH wanted AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[]) AS w(id, tenant_id, attempt)
), claimed AS (
    UPDATE publisher.jobs j
       SET state = 'PUBLISHING', attempt_count = j.attempt_count + 1,
           run_at = $4::timestamptz + make_interval(secs => $5::float8), updated_at = $4,
           state_reason = ''
      FROM wanted w
     WHERE j.id = w.id AND j.tenant_id = w.tenant_id AND j.state = 'DISPATCHED'
       AND j.attempt_count + 1 = w.attempt
       AND NOT EXISTS (SELECT 1 FROM publisher.connection_pauses cp
                       WHERE cp.tenant_id = j.tenant_id AND cp.connection_id = j.connection_id)
    RETURNING {JOB_COLUMNS}
), opened AS (
    INSERT INTO publisher.attempts (job_id, number, tenant_id, started_at, outcome, worker_id)
    SELECT id, attempt_count, tenant_id, $4, 'IN_PROGRESS', $6 FROM claimed
)
SELECT * FROM claimed
"""

# Close attempts, move jobs and queue their results: many records, one statement.
RECORD_ATTEMPTS_SQL = """
WITH r AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[],
        $7::boolean[], $8::text[], $9::text[], $10::bytea[], $11::text[], $12::boolean[],
        $13::timestamptz[], $14::int[], $15::text[], $16::text[], $17::float8[],
        $18::boolean[], $19::text[], $20::text[], $21::text[], $22::bytea[], $23::jsonb[],
        $24::boolean[], $25::text[], $26::timestamptz[])
    AS r(id, tenant_id, state, state_reason, run_at, counts, outcome_unknown,
         platform_post_id, url, error, category, terminal, ended_at, attempt, outcome,
         reason, latency_ms, close_breaker, platform, topic, message_key, payload, headers,
         dead_lettered, content_type, analytics_at)
), closed AS (
    UPDATE publisher.attempts a
       SET ended_at = r.ended_at, outcome = r.outcome, error = r.error,
           category = r.category, reason = r.reason, platform_latency_ms = r.latency_ms
      FROM r WHERE a.job_id = r.id AND a.number = r.attempt
), moved AS (
    UPDATE publisher.jobs j
       SET state = r.state, state_reason = r.state_reason,
           run_at = coalesce(r.run_at, j.run_at),
           budget_used = j.budget_used + r.counts,
           outcome_unknown = r.outcome_unknown,
           platform_post_id = CASE WHEN r.platform_post_id = '' THEN j.platform_post_id
                                   ELSE r.platform_post_id END,
           url = CASE WHEN r.url = '' THEN j.url ELSE r.url END,
           last_error = coalesce(r.error, j.last_error),
           last_category = CASE WHEN r.category = '' THEN j.last_category
                                ELSE r.category END,
           dead_lettered = r.dead_lettered,
           finished_at = CASE WHEN r.terminal THEN r.ended_at ELSE NULL END,
           updated_at = r.ended_at
      FROM r
     WHERE j.id = r.id AND j.tenant_id = r.tenant_id AND j.state = 'PUBLISHING'
       AND j.attempt_count = r.attempt
    RETURNING j.id, j.tenant_id, j.post_id, j.connection_id, j.platform, j.platform_post_id
), tracked AS (
    -- A published target's analytics collection starts with it (analytics_at: its
    -- first snapshot), and its account's daily one if there is none yet.
    INSERT INTO publisher.analytics_tasks
        (id, tenant_id, connection_id, platform, kind, job_id, post_id, platform_post_id,
         content_type, published_at, state, run_at, created_at, updated_at)
    SELECT gen_random_uuid(), m.tenant_id, m.connection_id, m.platform, 'post', m.id,
           m.post_id, m.platform_post_id, r.content_type, r.ended_at, 'SCHEDULED',
           r.analytics_at, r.ended_at, r.ended_at
      FROM r JOIN moved m ON m.id = r.id
     WHERE r.analytics_at IS NOT NULL AND m.platform_post_id <> ''
    ON CONFLICT (job_id) DO NOTHING
), tracked_accounts AS (
    INSERT INTO publisher.analytics_tasks
        (id, tenant_id, connection_id, platform, kind, state, run_at, created_at, updated_at)
    SELECT DISTINCT ON (m.tenant_id, m.connection_id) gen_random_uuid(), m.tenant_id,
           m.connection_id, m.platform, 'account', 'SCHEDULED', r.ended_at, r.ended_at,
           r.ended_at
      FROM r JOIN moved m ON m.id = r.id
     WHERE r.analytics_at IS NOT NULL
    ON CONFLICT (tenant_id, connection_id) WHERE kind = 'account' DO NOTHING
), closed_breakers AS (
    DELETE FROM publisher.breakers b
     WHERE b.platform IN (SELECT r.platform FROM r JOIN moved m ON m.id = r.id
                           WHERE r.close_breaker)
), queued AS (
    INSERT INTO publisher.outbox (topic, message_key, payload, headers)
    SELECT r.topic, r.message_key, r.payload, r.headers
      FROM r JOIN moved m ON m.id = r.id
     ORDER BY r.ended_at
)
SELECT * FROM moved
"""


class InSchema:
    """SQL written for the ``publisher`` schema, rewritten for the one a store works in
    (each test its own), each text rewritten once."""

    def __init__(self, schema: str) -> None:
        self._schema = schema
        self._sql: dict[str, str] = {}

    def __call__(self, sql: str) -> str:
        if self._schema == SCHEMA:
            return sql
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = sql.replace("publisher.", f"{self._schema}.")
        return found


async def locked_quota_usage(
    conn: Conn, q: Callable[[str], str], keys: Sequence[UsageKey], since: datetime
) -> Mapping[UsageKey, Sequence[datetime]]:
    """The ledger's uses of ``keys`` since ``since``, read under each account's
    transaction-level advisory lock (taken in sorted order: no deadlock), so quota
    decisions for one account — publishing's and analytics' alike — are serialised
    across replicas until the caller's transaction ends."""
    if not keys:
        return {}
    accounts = sorted({f"{t}/{c}" for t, c, _ in keys})
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(a, 7)) FROM unnest($1::text[]) a",
        accounts,
    )
    rows = await conn.fetch(
        q(
            """SELECT l.tenant_id, l.connection_id, l.limit_name, l.used_at
               FROM publisher.quota_ledger l
               JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(t, c, n)
                 ON l.tenant_id = k.t AND l.connection_id = k.c AND l.limit_name = k.n
               WHERE l.used_at > $4"""
        ),
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        since,
    )
    used: dict[UsageKey, list[datetime]] = {}
    for row in rows:
        used.setdefault((row["tenant_id"], row["connection_id"], row["limit_name"]), []).append(
            row["used_at"]
        )
    return used


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def _content(raw: bytes | None) -> PostContent:
    content = PostContent()
    if raw:
        content.ParseFromString(raw)
    return content


def _error(raw: bytes | None) -> PlatformError | None:
    if raw is None:
        return None
    error = PlatformError()
    error.ParseFromString(raw)
    return error


def job_from_row(row: asyncpg.Record, attempts: Sequence[Attempt] = ()) -> Job:
    return Job(
        id=str(row["id"]),
        post_id=str(row["post_id"]),
        tenant_id=row["tenant_id"],
        position=row["position"],
        connection_id=row["connection_id"],
        platform=row["platform"],
        idempotency_key=row["idempotency_key"],
        state=JobState(row["state"]),
        state_reason=row["state_reason"],
        due_at=row["due_at"],
        run_at=row["run_at"],
        content=_content(row["content"]),
        attempt_count=row["attempt_count"],
        budget_used=row["budget_used"],
        max_attempts=row["max_attempts"],
        outcome_unknown=row["outcome_unknown"],
        platform_post_id=row["platform_post_id"],
        url=row["url"],
        last_error=_error(row["last_error"]),
        dead_lettered=row["dead_lettered"],
        replay_count=row["replay_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        attempts=tuple(attempts),
    )


def _post_from_row(row: asyncpg.Record, jobs: Sequence[Job]) -> Post:
    return Post(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        idempotency_key=row["idempotency_key"],
        content=_content(row["content"]),
        schedule=ScheduleSpec(
            absolute=row["publish_at"] if row["schedule_kind"] == "absolute" else None,
            local_time=row["schedule_local_time"],
            time_zone=row["schedule_time_zone"],
        ),
        publish_at=row["publish_at"],
        requires_approval=row["requires_approval"],
        approval=Approval(row["approval"]),
        approved_by=row["approved_by"],
        approved_at=row["approved_at"],
        rejected_by=row["rejected_by"],
        rejected_at=row["rejected_at"],
        approval_note=row["approval_note"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        jobs=tuple(jobs),
    )


def _attempt_from_row(row: asyncpg.Record) -> Attempt:
    latency = row["platform_latency_ms"]
    return Attempt(
        number=row["number"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outcome=AttemptOutcome(row["outcome"]),
        error=_error(row["error"]),
        reason=row["reason"],
        worker_id=row["worker_id"],
        platform_latency=None if latency is None else latency / 1000.0,
    )


def _current_traceparent() -> str:
    """The caller's trace context (W3C traceparent), kept with the jobs it creates."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def _dispatch_job(row: asyncpg.Record, now: datetime) -> DispatchJob:
    return DispatchJob(
        job_id=str(row["id"]),
        post_id=str(row["post_id"]),
        tenant_id=row["tenant_id"],
        connection_id=row["connection_id"],
        platform=row["platform"],
        idempotency_key=row["idempotency_key"],
        content=_content(row["content"]),
        attempt=row["attempt_count"] + 1,
        due_at=row["due_at"],
        dispatched_at=now,
        max_attempts=row["max_attempts"],
        trace_context=row["trace_context"],
    )


T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs concurrent single requests as one batched call.

    Requests made within ``window`` seconds of the first (or in the same event-loop
    turn when 0) go together, up to ``max_batch``; each caller gets its own result,
    or the batch's exception. The batched call must return results in order.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        *,
        window: float = 0.0,
        max_batch: int = 256,
    ) -> None:
        self._run = run
        self._window = window
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max:
            self._flush()
        elif self._timer is None:
            self._timer = (
                loop.call_later(self._window, self._flush)
                if self._window > 0
                else loop.call_soon(self._flush)
            )
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._serve(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every caller hears the batch's failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


@dataclass(frozen=True)
class _ClaimWanted:
    job_id: uuid.UUID
    tenant_id: str
    attempt: int
    worker_id: str
    now: datetime
    lease_seconds: float


class _Claim:
    """One dispatch transaction (see ports.DispatchClaim)."""

    def __init__(self, store: PostgresJobStore, conn: Conn, jobs: list[DispatchJob]):
        self._store = store
        self._conn = conn
        self._now = jobs[0].dispatched_at if jobs else None
        self.jobs: Sequence[DispatchJob] = jobs

    async def quota_usage(
        self, keys: Sequence[UsageKey], since: datetime
    ) -> Mapping[UsageKey, Sequence[datetime]]:
        return await locked_quota_usage(self._conn, self._store.q, keys, since)

    async def defer(self, deferrals: Sequence[Deferral]) -> None:
        if not deferrals:
            return
        await self._conn.execute(
            self._store.q(
                """UPDATE publisher.jobs j
                      SET state = 'SCHEDULED', run_at = d.until, state_reason = d.reason,
                          dispatch_count = j.dispatch_count - 1
                     FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS d(id, until, reason)
                    WHERE j.id = d.id AND j.state = 'DISPATCHED'"""
            ),
            [uuid.UUID(d.job_id) for d in deferrals],
            [d.until for d in deferrals],
            [d.reason for d in deferrals],
        )

    async def spend(self, entries: Sequence[LedgerEntry], at: datetime) -> None:
        if not entries:
            return
        await self._conn.execute(
            self._store.q(
                """INSERT INTO publisher.quota_ledger
                       (tenant_id, connection_id, limit_name, used_at, job_id)
                   SELECT t, c, n, $4, j
                     FROM unnest($1::text[], $2::text[], $3::text[], $5::uuid[]) AS e(t, c, n, j)"""
            ),
            [e.tenant_id for e in entries],
            [e.connection_id for e in entries],
            [e.limit_name for e in entries],
            at,
            [uuid.UUID(e.job_id) for e in entries],
        )

    async def mark_probe(self, platform: str, job_id: str) -> bool:
        row = await self._conn.fetchrow(
            self._store.q(
                """UPDATE publisher.breakers
                      SET state = 'half_open', probe_job_id = $2, probe_started_at = $3
                    WHERE platform = $1 AND state = 'open' AND open_until <= $3
                RETURNING platform"""
            ),
            platform,
            uuid.UUID(job_id),
            self._now,
        )
        return row is not None


class PostgresJobStore:
    """The JobStore port on asyncpg."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        topics: Topics | None = None,
        schema: str = SCHEMA,
        analytics: CollectionSchedule | None = None,
    ) -> None:
        if not _IDENT.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self._pool = pool
        # Published targets start their analytics collection (None: not collected).
        self._analytics = analytics
        self._topics = topics or Topics()
        self._schema = schema
        self.q = InSchema(schema)  # ``sql`` with the schema this store works in
        self._claims: Coalescer[_ClaimWanted, ClaimedJob | None] = Coalescer(self._claim_many)
        self._records: Coalescer[AttemptRecord, bool] = Coalescer(self._record_many, window=0.002)

    # ------------------------------------------------------------------ posts

    async def find_post_by_key(self, tenant_id: str, key: str) -> tuple[Post, str] | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                self.q(
                    f"SELECT {POST_COLUMNS} FROM publisher.posts p "
                    "WHERE p.tenant_id = $1 AND p.idempotency_key = $2"
                ),
                tenant_id,
                key,
            )
            if row is None:
                return None
            jobs = await self._jobs_of(conn, [row["id"]])
            return _post_from_row(row, jobs.get(row["id"], [])), row["request_fingerprint"]

    async def insert_post(self, post: NewPost) -> Post:
        kind = post.schedule.kind
        sort_at = post.publish_at or post.created_at
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    self.q(
                        """INSERT INTO publisher.posts
                           (id, tenant_id, idempotency_key, request_fingerprint, content,
                            schedule_kind, schedule_local_time, schedule_time_zone, publish_at,
                            sort_at, requires_approval, approval, created_by, created_at,
                            updated_at)
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                   $14, $14)"""
                    ),
                    uuid.UUID(post.id),
                    post.tenant_id,
                    post.idempotency_key,
                    post.fingerprint,
                    post.content.SerializeToString(),
                    kind,
                    post.schedule.local_time,
                    post.schedule.time_zone,
                    post.publish_at,
                    sort_at,
                    post.requires_approval,
                    Approval.PENDING.value if post.requires_approval else Approval.NONE.value,
                    post.created_by,
                    post.created_at,
                )
            except asyncpg.UniqueViolationError as exc:
                raise IdempotencyKeyTaken(post.idempotency_key) from exc
            jobs = post.jobs
            await conn.execute(
                self.q(
                    """INSERT INTO publisher.jobs
                       (id, tenant_id, post_id, position, connection_id, platform,
                        idempotency_key, content, state, state_reason, due_at, run_at,
                        max_attempts, created_at, updated_at, trace_context)
                       SELECT i, $1, $2, pos, c, pl, k, ct,
                              CASE WHEN s = 'SCHEDULED' AND cp.connection_id IS NOT NULL
                                   THEN 'PAUSED' ELSE s END,
                              CASE WHEN s = 'SCHEDULED' AND cp.connection_id IS NOT NULL
                                   THEN cp.reason
                                   WHEN s = 'SCHEDULED' AND qb.until > d
                                   THEN 'Deferred: ' || qb.reason || '.'
                                   ELSE '' END,
                              d,
                              CASE WHEN s = 'SCHEDULED' AND qb.until > d THEN qb.until
                                   ELSE d END,
                              m, $3, $3, $13
                       FROM unnest($4::uuid[], $5::int[], $6::text[], $7::text[], $8::text[],
                                   $9::bytea[], $10::text[], $11::timestamptz[], $12::int[])
                            AS n(i, pos, c, pl, k, ct, s, d, m)
                       LEFT JOIN publisher.connection_pauses cp
                              ON cp.tenant_id = $1 AND cp.connection_id = n.c
                       -- An account the platform holds (Retry-After, a spent
                       -- allowance): a new job waits past the hold and says why,
                       -- as the account's waiting jobs do (see _block), instead of
                       -- sitting overdue with no reason until the hold ends.
                       LEFT JOIN publisher.quota_blocks qb
                              ON qb.tenant_id = $1 AND qb.connection_id = n.c"""
                ),
                post.tenant_id,
                uuid.UUID(post.id),
                post.created_at,
                [uuid.UUID(j.id) for j in jobs],
                [j.position for j in jobs],
                [j.connection_id for j in jobs],
                [j.platform for j in jobs],
                [j.idempotency_key for j in jobs],
                [j.content.SerializeToString() for j in jobs],
                [j.state.value for j in jobs],
                [j.due_at for j in jobs],
                [j.max_attempts for j in jobs],
                _current_traceparent(),
            )
            await conn.execute(
                self.q(
                    """INSERT INTO publisher.known_connections (tenant_id, connection_id, platform)
                       SELECT $1, c, p FROM unnest($2::text[], $3::text[]) AS k(c, p)
                       ON CONFLICT DO NOTHING"""
                ),
                post.tenant_id,
                [j.connection_id for j in jobs],
                [j.platform for j in jobs],
            )
            found = await self._post(conn, post.tenant_id, post.id)
        assert found is not None
        return found

    async def _post(self, conn: Conn, tenant_id: str, post_id: str) -> Post | None:
        pid = _uuid(post_id)
        if pid is None:
            return None
        row = await conn.fetchrow(
            self.q(
                f"SELECT {POST_COLUMNS} FROM publisher.posts p WHERE p.tenant_id = $1 AND p.id = $2"
            ),
            tenant_id,
            pid,
        )
        if row is None:
            return None
        jobs = await self._jobs_of(conn, [pid])
        return _post_from_row(row, jobs.get(pid, []))

    async def _jobs_of(
        self, conn: Conn, post_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[Job]]:
        rows = await conn.fetch(
            self.q(
                f"SELECT {JOB_COLUMNS} FROM publisher.jobs j WHERE j.post_id = ANY($1::uuid[]) "
                "ORDER BY j.post_id, j.position"
            ),
            list(post_ids),
        )
        out: dict[uuid.UUID, list[Job]] = {}
        for row in rows:
            out.setdefault(row["post_id"], []).append(job_from_row(row))
        return out

    async def get_post(self, tenant_id: str, post_id: str) -> Post | None:
        async with self._pool.acquire() as conn:
            return await self._post(conn, tenant_id, post_id)

    async def list_posts(
        self, tenant_id: str, flt: PostFilter, after: Cursor | None, limit: int
    ) -> Sequence[Post]:
        arg = Params(tenant_id)
        clauses = ["p.tenant_id = $1"]

        if flt.statuses:
            clauses.append(f"({POST_STATUS_SQL}) = ANY({arg(sorted(flt.statuses))}::text[])")
        if flt.connection_id:
            clauses.append(
                "EXISTS (SELECT 1 FROM publisher.jobs c WHERE c.post_id = p.id "
                f"AND c.connection_id = {arg(flt.connection_id)})"
            )
        if flt.platform:
            clauses.append(
                "EXISTS (SELECT 1 FROM publisher.jobs c WHERE c.post_id = p.id "
                f"AND c.platform = {arg(flt.platform)})"
            )
        if flt.publish_from is not None:
            clauses.append(f"p.sort_at >= {arg(flt.publish_from)}")
        if flt.publish_to is not None:
            clauses.append(f"p.sort_at < {arg(flt.publish_to)}")
        if flt.created_by:
            clauses.append(f"p.created_by = {arg(flt.created_by)}")
        if after is not None:
            cursor_id = _uuid(after.id)
            if cursor_id is None:
                raise InvalidArgument("page_token is malformed", field="page_token")
            clauses.append(f"(p.sort_at, p.id) < ({arg(after.at)}, {arg(cursor_id)})")
        sql = (
            f"SELECT {POST_COLUMNS} FROM publisher.posts p {POST_AGGREGATE_SQL} "
            f"WHERE {' AND '.join(clauses)} ORDER BY p.sort_at DESC, p.id DESC "
            f"LIMIT {arg(limit)}"
        )
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(self.q(sql), *arg.values)
            jobs = await self._jobs_of(conn, [r["id"] for r in rows])
        return [_post_from_row(r, jobs.get(r["id"], [])) for r in rows]

    async def get_job(self, tenant_id: str, job_id: str) -> Job | None:
        jid = _uuid(job_id)
        if jid is None:
            return None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                self.q(
                    f"SELECT {JOB_COLUMNS} FROM publisher.jobs j "
                    "WHERE j.tenant_id = $1 AND j.id = $2"
                ),
                tenant_id,
                jid,
            )
            if row is None:
                return None
            attempts = await conn.fetch(
                self.q(
                    "SELECT * FROM publisher.attempts WHERE job_id = $1 AND tenant_id = $2 "
                    "ORDER BY number"
                ),
                jid,
                tenant_id,
            )
        return job_from_row(row, [_attempt_from_row(a) for a in attempts])

    async def list_jobs(
        self, tenant_id: str, flt: JobFilter, after: Cursor | None, limit: int
    ) -> Sequence[Job]:
        arg = Params(tenant_id)
        clauses = ["j.tenant_id = $1"]

        if flt.states:
            clauses.append(f"j.state = ANY({arg(sorted(s.value for s in flt.states))}::text[])")
        if flt.connection_id:
            clauses.append(f"j.connection_id = {arg(flt.connection_id)}")
        if flt.platform:
            clauses.append(f"j.platform = {arg(flt.platform)}")
        if flt.post_id:
            post_id = _uuid(flt.post_id)
            if post_id is None:
                return []
            clauses.append(f"j.post_id = {arg(post_id)}")
        if flt.due_from is not None:
            clauses.append(f"j.due_at >= {arg(flt.due_from)}")
        if flt.due_to is not None:
            clauses.append(f"j.due_at < {arg(flt.due_to)}")
        if after is not None:
            cursor_id = _uuid(after.id)
            if cursor_id is None:
                raise InvalidArgument("page_token is malformed", field="page_token")
            clauses.append(f"(j.due_at, j.id) > ({arg(after.at)}, {arg(cursor_id)})")
        sql = (
            f"SELECT {JOB_COLUMNS} FROM publisher.jobs j WHERE {' AND '.join(clauses)} "
            f"ORDER BY j.due_at, j.id LIMIT {arg(limit)}"
        )
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(self.q(sql), *arg.values)
        return [job_from_row(r) for r in rows]

    async def cancel_jobs(
        self,
        tenant_id: str,
        post_id: str,
        job_ids: Sequence[str],
        reason: str,
        now: datetime,
    ) -> ChangeResult:
        pid = _uuid(post_id)
        if pid is None:
            return ChangeResult((), ())
        wanted = [u for u in (_uuid(j) for j in job_ids) if u is not None]
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                self.q(
                    f"""UPDATE publisher.jobs j
                           SET state = 'CANCELLED', state_reason = $4, finished_at = $5,
                               updated_at = $5
                         WHERE j.tenant_id = $1 AND j.post_id = $2
                           AND (cardinality($3::uuid[]) = 0 OR j.id = ANY($3::uuid[]))
                           AND j.state = ANY($6::text[])
                     RETURNING {JOB_COLUMNS}"""
                ),
                tenant_id,
                pid,
                wanted,
                reason,
                now,
                _UNDISPATCHED,
            )
            cancelled = [job_from_row(r) for r in rows]
            await self._emit(conn, [self._cancel_event(j, now) for j in cancelled])
            others = await conn.fetch(
                self.q(
                    """SELECT id FROM publisher.jobs
                        WHERE tenant_id = $1 AND post_id = $2
                          AND (cardinality($3::uuid[]) = 0 OR id = ANY($3::uuid[]))
                          AND NOT (id = ANY($4::uuid[])) AND state <> 'CANCELLED'
                        ORDER BY position"""
                ),
                tenant_id,
                pid,
                wanted,
                [uuid.UUID(j.id) for j in cancelled],
            )
        return ChangeResult([j.id for j in cancelled], [str(r["id"]) for r in others])

    def _cancel_event(self, job: Job, now: datetime) -> OutgoingMessage:
        return result_message(
            job,
            ResultEvent(outcome="CANCELLED", attempt=job.attempt_count, finished_at=now),
            self._topics.results,
        )

    async def reschedule_jobs(
        self,
        tenant_id: str,
        post_id: str,
        schedule: ScheduleSpec,
        publish_at: datetime | None,
        now: datetime,
    ) -> ChangeResult:
        pid = _uuid(post_id)
        if pid is None:
            return ChangeResult((), ())
        due = publish_at or now
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                self.q(
                    """UPDATE publisher.jobs
                          SET due_at = $3, run_at = $3, updated_at = $4,
                              state_reason = 'Rescheduled.'
                        WHERE tenant_id = $1 AND post_id = $2 AND state = ANY($5::text[])
                    RETURNING id"""
                ),
                tenant_id,
                pid,
                due,
                now,
                _UNDISPATCHED,
            )
            moved = [str(r["id"]) for r in rows]
            if moved:
                await conn.execute(
                    self.q(
                        """UPDATE publisher.posts
                              SET schedule_kind = $3, schedule_local_time = $4,
                                  schedule_time_zone = $5, publish_at = $6,
                                  sort_at = coalesce($6, created_at), updated_at = $7
                            WHERE tenant_id = $1 AND id = $2"""
                    ),
                    tenant_id,
                    pid,
                    schedule.kind,
                    schedule.local_time,
                    schedule.time_zone,
                    publish_at,
                    now,
                )
            others = await conn.fetch(
                self.q(
                    """SELECT id FROM publisher.jobs
                        WHERE tenant_id = $1 AND post_id = $2 AND NOT (id = ANY($3::uuid[]))
                        ORDER BY position"""
                ),
                tenant_id,
                pid,
                [uuid.UUID(m) for m in moved],
            )
        return ChangeResult(moved, [str(r["id"]) for r in others])

    async def set_approval(
        self,
        tenant_id: str,
        post_id: str,
        approval: Approval,
        by: str,
        note: str,
        now: datetime,
    ) -> bool:
        pid = _uuid(post_id)
        if pid is None:
            return False
        approved = approval is Approval.APPROVED
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                self.q(
                    """UPDATE publisher.posts
                          SET approval = $3,
                              approved_by = CASE WHEN $4::boolean THEN $5::text
                                                 ELSE approved_by END,
                              approved_at = CASE WHEN $4 THEN $7::timestamptz ELSE approved_at END,
                              rejected_by = CASE WHEN $4 THEN rejected_by ELSE $5 END,
                              rejected_at = CASE WHEN $4 THEN rejected_at ELSE $7 END,
                              approval_note = $6, updated_at = $7
                        WHERE tenant_id = $1 AND id = $2 AND approval = 'pending'
                    RETURNING id"""
                ),
                tenant_id,
                pid,
                approval.value,
                approved,
                by,
                note,
                now,
            )
            if row is None:
                return False
            if approved:
                await conn.execute(
                    self.q(
                        """UPDATE publisher.jobs j
                              SET state = CASE WHEN cp.connection_id IS NULL THEN 'SCHEDULED'
                                               ELSE 'PAUSED' END,
                                  state_reason = CASE WHEN cp.connection_id IS NULL
                                                      THEN 'Approved.' ELSE cp.reason END,
                                  run_at = j.due_at, updated_at = $3
                             FROM publisher.jobs s
                             LEFT JOIN publisher.connection_pauses cp
                                    ON cp.tenant_id = s.tenant_id
                                   AND cp.connection_id = s.connection_id
                            WHERE s.id = j.id AND j.tenant_id = $1 AND j.post_id = $2
                              AND j.state = 'AWAITING_APPROVAL'"""
                    ),
                    tenant_id,
                    pid,
                    now,
                )
            else:
                rows = await conn.fetch(
                    self.q(
                        f"""UPDATE publisher.jobs j
                               SET state = 'CANCELLED', state_reason = $3, finished_at = $4,
                                   updated_at = $4
                             WHERE j.tenant_id = $1 AND j.post_id = $2
                               AND j.state = 'AWAITING_APPROVAL'
                         RETURNING {JOB_COLUMNS}"""
                    ),
                    tenant_id,
                    pid,
                    f"Rejected by {by or 'an approver'}" + (f": {note}" if note else "."),
                    now,
                )
                await self._emit(conn, [self._cancel_event(job_from_row(r), now) for r in rows])
        return True

    # ------------------------------------------------------------------ dead letters

    def _dead_letter_where(
        self, tenant_id: str, flt: DeadLetterFilter | None, arg: Params
    ) -> list[str]:
        clauses = [f"d.tenant_id = {arg(tenant_id)}"]
        if flt is None:
            return clauses
        if flt.platform:
            clauses.append(f"d.platform = {arg(flt.platform)}")
        if flt.connection_id:
            clauses.append(f"d.connection_id = {arg(flt.connection_id)}")
        if flt.categories:
            clauses.append(f"d.category = ANY({arg(sorted(flt.categories))}::text[])")
        if flt.post_id:
            clauses.append(f"d.post_id = {arg(_uuid(flt.post_id))}")
        if flt.since is not None:
            clauses.append(f"d.dead_lettered_at >= {arg(flt.since)}")
        if flt.until is not None:
            clauses.append(f"d.dead_lettered_at < {arg(flt.until)}")
        return clauses

    async def list_dead_letters(
        self, tenant_id: str, flt: DeadLetterFilter, after: Cursor | None, limit: int
    ) -> Sequence[DeadLetter]:
        arg = Params()
        clauses = self._dead_letter_where(tenant_id, flt, arg)
        if after is not None:
            cursor_id = _uuid(after.id)
            if cursor_id is None:
                raise InvalidArgument("page_token is malformed", field="page_token")
            clauses.append(f"(d.dead_lettered_at, d.job_id) < ({arg(after.at)}, {arg(cursor_id)})")
        sql = (
            f"SELECT {JOB_COLUMNS}, d.reason AS dl_reason, d.dead_lettered_at "
            "FROM publisher.dead_letters d JOIN publisher.jobs j ON j.id = d.job_id "
            f"AND j.tenant_id = d.tenant_id WHERE {' AND '.join(clauses)} "
            f"ORDER BY d.dead_lettered_at DESC, d.job_id DESC LIMIT {arg(limit)}"
        )
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(self.q(sql), *arg.values)
        return [DeadLetter(job_from_row(r), r["dl_reason"], r["dead_lettered_at"]) for r in rows]

    async def replay_dead_letters(
        self,
        tenant_id: str,
        job_ids: Sequence[str] | None,
        flt: DeadLetterFilter | None,
        limit: int,
        now: datetime,
    ) -> tuple[Sequence[str], bool]:
        async with self._pool.acquire() as conn, conn.transaction():
            truncated = False
            if job_ids is not None:
                wanted = {j: _uuid(j) for j in job_ids}
                rows = await conn.fetch(
                    self.q(
                        """SELECT job_id FROM publisher.dead_letters
                            WHERE tenant_id = $1 AND job_id = ANY($2::uuid[]) FOR UPDATE"""
                    ),
                    tenant_id,
                    [u for u in wanted.values() if u is not None],
                )
                found = {r["job_id"] for r in rows}
                missing = [j for j, u in wanted.items() if u not in found]
                if missing:
                    raise NotFound(
                        f"job {missing[0]!r} is not in this tenant's dead-letter queue; "
                        "nothing was replayed",
                        field="job_ids",
                    )
                ids = [r["job_id"] for r in rows]
            else:
                arg = Params()
                clauses = self._dead_letter_where(tenant_id, flt, arg)
                rows = await conn.fetch(
                    self.q(
                        f"SELECT d.job_id FROM publisher.dead_letters d "
                        f"WHERE {' AND '.join(clauses)} "
                        f"ORDER BY d.dead_lettered_at, d.job_id LIMIT {arg(limit + 1)} "
                        "FOR UPDATE SKIP LOCKED"
                    ),
                    *arg.values,
                )
                truncated = len(rows) > limit
                ids = [r["job_id"] for r in rows[:limit]]
            if not ids:
                return [], truncated
            await conn.execute(
                self.q("DELETE FROM publisher.dead_letters WHERE job_id = ANY($1::uuid[])"), ids
            )
            await conn.execute(
                self.q(
                    """UPDATE publisher.jobs j
                          SET state = CASE WHEN cp.connection_id IS NULL THEN 'SCHEDULED'
                                           ELSE 'PAUSED' END,
                              state_reason = 'Replayed from the dead-letter queue with its '
                                             || 'original idempotency key.',
                              run_at = $2, budget_used = 0, dead_lettered = false,
                              lost_workers = 0,
                              replay_count = j.replay_count + 1, finished_at = NULL,
                              updated_at = $2
                         FROM publisher.jobs s
                         LEFT JOIN publisher.connection_pauses cp
                                ON cp.tenant_id = s.tenant_id
                               AND cp.connection_id = s.connection_id
                        WHERE s.id = j.id AND j.id = ANY($1::uuid[]) AND j.tenant_id = $3"""
                ),
                ids,
                now,
                tenant_id,
            )
        return [str(i) for i in ids], truncated

    # ------------------------------------------------------------------ connections

    async def knows_connection(self, tenant_id: str, connection_id: str) -> bool:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                self.q(
                    """SELECT 1 FROM publisher.known_connections
                        WHERE tenant_id = $1 AND connection_id = $2"""
                ),
                tenant_id,
                connection_id,
            )
        return row is not None

    async def remember_connection(self, tenant_id: str, connection_id: str, platform: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q(
                    """INSERT INTO publisher.known_connections (tenant_id, connection_id, platform)
                       VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"""
                ),
                tenant_id,
                connection_id,
                platform,
            )

    async def _pause(
        self, conn: Conn, pause: ConnectionPause, now: datetime
    ) -> tuple[int, datetime]:
        await conn.execute(
            self.q(
                """INSERT INTO publisher.connection_pauses
                   (tenant_id, connection_id, paused_since, reason, category, source)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"""
            ),
            pause.tenant_id,
            pause.connection_id,
            pause.paused_since,
            pause.reason,
            pause.category,
            pause.source,
        )
        await conn.execute(
            self.q(
                """INSERT INTO publisher.known_connections (tenant_id, connection_id)
                   VALUES ($1, $2) ON CONFLICT DO NOTHING"""
            ),
            pause.tenant_id,
            pause.connection_id,
        )
        since = await conn.fetchval(
            self.q(
                """SELECT paused_since FROM publisher.connection_pauses
                    WHERE tenant_id = $1 AND connection_id = $2"""
            ),
            pause.tenant_id,
            pause.connection_id,
        )
        status = await conn.execute(
            self.q(
                """UPDATE publisher.jobs
                      SET state = 'PAUSED', state_reason = $3, updated_at = $4,
                          run_at = CASE WHEN state = 'DISPATCHED' THEN $4 ELSE run_at END
                    WHERE tenant_id = $1 AND connection_id = $2
                      AND state IN ('SCHEDULED', 'RETRYING', 'DISPATCHED')"""
            ),
            pause.tenant_id,
            pause.connection_id,
            pause.reason,
            now,
        )
        return _count(status), since

    async def pause_connection(self, pause: ConnectionPause, now: datetime) -> tuple[int, datetime]:
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._pause(conn, pause, now)

    async def resume_connection(
        self, tenant_id: str, connection_id: str, now: datetime
    ) -> tuple[int, int]:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                self.q(
                    """DELETE FROM publisher.connection_pauses
                        WHERE tenant_id = $1 AND connection_id = $2"""
                ),
                tenant_id,
                connection_id,
            )
            resumed = await conn.execute(
                self.q(
                    """UPDATE publisher.jobs
                          SET state = 'SCHEDULED', state_reason = 'Resumed.', updated_at = $3
                        WHERE tenant_id = $1 AND connection_id = $2 AND state = 'PAUSED'
                          AND run_at > $3"""
                ),
                tenant_id,
                connection_id,
                now,
            )
            missed = await conn.execute(
                self.q(
                    """UPDATE publisher.jobs
                          SET state_reason = 'Missed while the connection was paused; publish '
                                             || 'or cancel it with "publish missed items".',
                              updated_at = $3
                        WHERE tenant_id = $1 AND connection_id = $2 AND state = 'PAUSED'
                          AND run_at <= $3"""
                ),
                tenant_id,
                connection_id,
                now,
            )
        return _count(resumed), _count(missed)

    async def get_pause(self, tenant_id: str, connection_id: str) -> ConnectionPause | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                self.q(
                    """SELECT * FROM publisher.connection_pauses
                        WHERE tenant_id = $1 AND connection_id = $2"""
                ),
                tenant_id,
                connection_id,
            )
        if row is None:
            return None
        return ConnectionPause(
            tenant_id=row["tenant_id"],
            connection_id=row["connection_id"],
            paused_since=row["paused_since"],
            reason=row["reason"],
            category=row["category"],
            source=row["source"],
        )

    async def missed_jobs(self, tenant_id: str, connection_id: str, now: datetime) -> MissedJobs:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                self.q(
                    """SELECT count(*) AS n, min(due_at) AS oldest, max(due_at) AS newest,
                              (SELECT paused_since FROM publisher.connection_pauses cp
                                WHERE cp.tenant_id = $1 AND cp.connection_id = $2) AS since
                         FROM publisher.jobs
                        WHERE tenant_id = $1 AND connection_id = $2 AND state = 'PAUSED'
                          AND run_at <= $3"""
                ),
                tenant_id,
                connection_id,
                now,
            )
        assert row is not None
        return MissedJobs(row["n"], row["oldest"], row["newest"], row["since"])

    async def backfill(
        self,
        tenant_id: str,
        connection_id: str,
        publish: bool,
        job_ids: Sequence[str],
        reason: str,
        now: datetime,
    ) -> int:
        wanted = [u for u in (_uuid(j) for j in job_ids) if u is not None]
        if job_ids and not wanted:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                self.q(
                    f"""UPDATE publisher.jobs j
                           SET state = $5, state_reason = $6, updated_at = $3,
                               finished_at = CASE WHEN $5::text = 'CANCELLED'
                                                  THEN $3::timestamptz END
                         WHERE j.tenant_id = $1 AND j.connection_id = $2
                           AND j.state = 'PAUSED' AND j.run_at <= $3
                           AND (cardinality($4::uuid[]) = 0 OR j.id = ANY($4::uuid[]))
                     RETURNING {JOB_COLUMNS}"""
                ),
                tenant_id,
                connection_id,
                now,
                wanted,
                JobState.SCHEDULED.value if publish else JobState.CANCELLED.value,
                reason,
            )
            if not publish:
                await self._emit(conn, [self._cancel_event(job_from_row(r), now) for r in rows])
        return len(rows)

    async def event_seen(self, event_id: str) -> bool:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                self.q("SELECT 1 FROM publisher.processed_events WHERE event_id = $1"), event_id
            )
        return row is not None

    async def mark_event(self, event_id: str, now: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q(
                    """INSERT INTO publisher.processed_events (event_id, processed_at)
                       VALUES ($1, $2) ON CONFLICT DO NOTHING"""
                ),
                event_id,
                now,
            )

    # ------------------------------------------------------------------ dispatch

    @asynccontextmanager
    async def claim_due(self, request: ClaimRequest) -> AsyncIterator[_Claim]:
        async with self._pool.acquire() as conn, conn.transaction():
            if request.only_platform:
                rows = await conn.fetch(
                    self.q(CLAIM_PROBE_SQL),
                    request.now,
                    request.only_platform,
                    request.lease_seconds,
                )
            else:
                limit = request.limit
                if request.max_in_flight:
                    busy = await conn.fetchval(
                        self.q(
                            """SELECT count(*) FROM publisher.jobs
                                WHERE state IN ('DISPATCHED', 'PUBLISHING')"""
                        )
                    )
                    limit = min(limit, request.max_in_flight - int(busy))
                rows = (
                    await conn.fetch(
                        self.q(CLAIM_DUE_SQL),
                        request.now,
                        limit,
                        request.tenant_cursor,
                        sorted(request.held_platforms),
                        request.lease_seconds,
                    )
                    if limit > 0
                    else []
                )
            # The order a tenant round-robin served them in; an account's jobs by due time.
            ordered = sorted(rows, key=lambda r: (r["wrapped"], r["tenant_id"], r["was_due"]))
            yield _Claim(self, conn, [_dispatch_job(r, request.now) for r in ordered])

    async def release(self, jobs: Sequence[DispatchJob], reason: str, now: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q(
                    """UPDATE publisher.jobs
                          SET state = 'SCHEDULED', run_at = $2, state_reason = $3, updated_at = $2
                        WHERE id = ANY($1::uuid[]) AND state = 'DISPATCHED'"""
                ),
                [uuid.UUID(j.job_id) for j in jobs],
                now,
                reason,
            )

    async def next_due_at(self) -> datetime | None:
        async with self._pool.acquire() as conn:
            value: datetime | None = await conn.fetchval(
                self.q(
                    """SELECT least(
                         (SELECT run_at FROM publisher.jobs WHERE state = 'SCHEDULED'
                           ORDER BY run_at LIMIT 1),
                         (SELECT run_at FROM publisher.jobs WHERE state = 'RETRYING'
                           ORDER BY run_at LIMIT 1))"""
                )
            )
        return value

    async def breakers(self) -> Sequence[Breaker]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(self.q("SELECT * FROM publisher.breakers"))
        return [
            Breaker(
                platform=r["platform"],
                state=r["state"],
                open_until=r["open_until"],
                cooldown_seconds=r["cooldown_seconds"],
                probe_started_at=r["probe_started_at"],
            )
            for r in rows
        ]

    async def reopen_stale_probe(self, platform: str, now: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q(
                    """UPDATE publisher.breakers
                          SET state = 'open', open_until = $2, probe_job_id = NULL,
                              probe_started_at = NULL
                        WHERE platform = $1 AND state = 'half_open'"""
                ),
                platform,
                now,
            )

    async def open_breaker(
        self, platform: str, reason: str, cooldown: float, now: datetime
    ) -> None:
        async with self._pool.acquire() as conn:
            await self._open_breaker(conn, platform, reason, cooldown, now)

    async def _open_breaker(
        self, conn: Conn, platform: str, reason: str, cooldown: float, now: datetime
    ) -> None:
        await conn.execute(
            self.q(
                """INSERT INTO publisher.breakers
                   (platform, state, opened_at, open_until, cooldown_seconds, reason)
                   VALUES ($1, 'open', $2,
                           $2::timestamptz + make_interval(secs => $3::float8), $3, $4)
                   ON CONFLICT (platform) DO NOTHING"""
            ),
            platform,
            now,
            cooldown,
            reason,
        )

    async def sweep_stale(self, now: datetime, limit: int, max_lost_workers: int = 3) -> StaleSweep:
        async with self._pool.acquire() as conn, conn.transaction():
            redispatched = await conn.fetchval(
                self.q(
                    """WITH lost AS (
                           SELECT id FROM publisher.jobs
                            WHERE state = 'DISPATCHED' AND run_at < $1
                            ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                       moved AS (
                           UPDATE publisher.jobs j
                              SET state = 'SCHEDULED', run_at = $1, updated_at = $1,
                                  state_reason = 'Sent again: no worker took the previous '
                                                 || 'dispatch in time.'
                             FROM lost WHERE j.id = lost.id RETURNING 1)
                       SELECT count(*) FROM moved"""
                ),
                now,
                limit,
            )
            dead = await conn.fetch(
                self.q(
                    f"""SELECT {JOB_COLUMNS}, j.lost_workers FROM publisher.jobs j
                         WHERE j.state = 'PUBLISHING' AND j.run_at < $1
                         ORDER BY j.run_at LIMIT $2 FOR UPDATE SKIP LOCKED"""
                ),
                now,
                limit,
            )
            if dead:
                await conn.execute(
                    self.q(
                        """UPDATE publisher.attempts a
                              SET outcome = 'UNKNOWN', ended_at = $3,
                                  reason = 'The worker stopped before recording an outcome.'
                             FROM unnest($1::uuid[], $2::int[]) AS d(id, number)
                            WHERE a.job_id = d.id AND a.number = d.number
                              AND a.outcome = 'IN_PROGRESS'"""
                    ),
                    [r["id"] for r in dead],
                    [r["attempt_count"] for r in dead],
                    now,
                )
            # Brought back to try again; once it has stopped max_lost_workers, only
            # to look the post up (attempts spent: never posted again); past that, set
            # aside: a job that stops even the lookup is not retried automatically.
            await conn.execute(
                self.q(
                    """UPDATE publisher.jobs j
                          SET state = 'RETRYING', run_at = $3, updated_at = $3,
                              outcome_unknown = true, lost_workers = j.lost_workers + 1,
                              budget_used = CASE WHEN j.lost_workers + 1 = $2
                                                 THEN greatest(j.budget_used, j.max_attempts)
                                                 ELSE j.budget_used END,
                              state_reason = CASE WHEN j.lost_workers + 1 = $2
                                  THEN 'The worker publishing it stopped ' || $2::int
                                       || ' times, so it is not published again: the '
                                       || 'next attempt only checks whether the post '
                                       || 'went out.'
                                  ELSE 'The worker publishing it stopped; the next '
                                       || 'attempt first checks whether the post went out.'
                                  END
                        WHERE j.id = ANY($1::uuid[]) AND j.lost_workers + 1 <= $2"""
                ),
                [r["id"] for r in dead],
                max_lost_workers,
                now,
            )
            for row in dead:
                if row["lost_workers"] + 1 > max_lost_workers:
                    await self._set_aside(conn, job_from_row(row), row["lost_workers"] + 1, now)
            recovered = len(dead)
        return StaleSweep(int(redispatched), int(recovered))

    async def _set_aside(self, conn: Conn, job: Job, lost: int, now: datetime) -> None:
        """Dead-letter a job whose publishing stopped ``lost`` workers."""
        reason = (
            f"Set aside: the worker publishing it stopped {lost} times, so it is not "
            "retried automatically. A replay looks the post up before publishing again."
        )
        error = PlatformError(
            category=Category.UNKNOWN.proto(), platform=job.platform, message=reason
        )
        await conn.execute(
            self.q(
                """UPDATE publisher.jobs
                      SET state = 'FAILED', state_reason = $2, dead_lettered = true,
                          outcome_unknown = true, lost_workers = lost_workers + 1,
                          last_error = $3, last_category = 'UNKNOWN', finished_at = $4,
                          updated_at = $4
                    WHERE id = $1"""
            ),
            uuid.UUID(job.id),
            reason,
            error.SerializeToString(),
            now,
        )
        await conn.execute(
            self.q(
                """INSERT INTO publisher.dead_letters
                   (job_id, tenant_id, post_id, connection_id, platform, category, reason,
                    dead_lettered_at)
                   VALUES ($1, $2, $3, $4, $5, 'UNKNOWN', $6, $7)
                   ON CONFLICT (job_id) DO UPDATE
                      SET category = EXCLUDED.category, reason = EXCLUDED.reason,
                          dead_lettered_at = EXCLUDED.dead_lettered_at"""
            ),
            uuid.UUID(job.id),
            job.tenant_id,
            uuid.UUID(job.post_id),
            job.connection_id,
            job.platform,
            reason,
            now,
        )
        event = ResultEvent(
            outcome="DEAD_LETTERED", attempt=job.attempt_count, finished_at=now, error=error
        )
        await self._emit(
            conn,
            [
                result_message(job, event, self._topics.results),
                dead_letter_message(
                    job, job.attempt_count, reason, self._topics.jobs, self._topics.dlq
                ),
            ],
        )

    async def prune(self, ledger_before: datetime, events_before: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q("DELETE FROM publisher.quota_ledger WHERE used_at < $1"), ledger_before
            )
            await conn.execute(
                self.q("DELETE FROM publisher.quota_blocks WHERE until < $1"), ledger_before
            )
            await conn.execute(
                self.q("DELETE FROM publisher.processed_events WHERE processed_at < $1"),
                events_before,
            )

    # ------------------------------------------------------------------ workers

    async def claim_attempt(
        self,
        tenant_id: str,
        job_id: str,
        attempt: int,
        worker_id: str,
        now: datetime,
        lease_seconds: float,
    ) -> ClaimedJob | None:
        jid = _uuid(job_id)
        if jid is None:
            return None
        return await self._claims.submit(
            _ClaimWanted(jid, tenant_id, attempt, worker_id, now, lease_seconds)
        )

    async def _claim_many(self, wanted: list[_ClaimWanted]) -> list[ClaimedJob | None]:
        """Claim the attempts of many deliveries in one statement (they arrive
        together: a consumer batch starts its lanes at once)."""
        first = wanted[0]
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                self.q(CLAIM_ATTEMPTS_SQL),
                [w.job_id for w in wanted],
                [w.tenant_id for w in wanted],
                [w.attempt for w in wanted],
                first.now,
                first.lease_seconds,
                first.worker_id,
            )
            claimed = {(row["id"], row["attempt_count"]): row for row in rows}
            out: list[ClaimedJob | None] = []
            for want in wanted:
                # The claim goes to the delivery of that attempt; a duplicate of it in
                # the same batch, or a stale delivery of another attempt, gets nothing.
                row = claimed.pop((want.job_id, want.attempt), None)
                if row is None:
                    out.append(None)
                    continue
                job = job_from_row(row)
                out.append(ClaimedJob(job, job.attempt_count, first.now, row["last_category"]))
            missed = [w.job_id for w, c in zip(wanted, out, strict=True) if c is None]
            if missed:
                # A dispatched job whose connection was paused meanwhile waits, kept.
                await conn.execute(
                    self.q(
                        """UPDATE publisher.jobs j
                              SET state = 'PAUSED', state_reason = cp.reason, run_at = $2,
                                  updated_at = $2
                             FROM publisher.connection_pauses cp
                            WHERE j.id = ANY($1::uuid[]) AND j.state = 'DISPATCHED'
                              AND cp.tenant_id = j.tenant_id
                              AND cp.connection_id = j.connection_id"""
                    ),
                    missed,
                    first.now,
                )
        return out

    async def record_attempt(self, record: AttemptRecord) -> bool:
        rare = bool(
            record.dead_letter_reason
            or record.pause is not None
            or record.block_until is not None
            or record.breaker_failure
            or record.open_breaker_reason
        )
        if not rare:
            # The common outcomes of concurrent attempts go in one statement.
            return await self._records.submit(record)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._record_rows(conn, [record]):
                return False
            await self._record_extras(conn, record)
            return True

    async def _record_many(self, records: list[AttemptRecord]) -> list[bool]:
        async with self._pool.acquire() as conn:
            moved = await self._record_rows(conn, records)
        return [r.job.id in moved for r in records]

    async def _record_rows(self, conn: Conn, records: Sequence[AttemptRecord]) -> set[str]:
        """Close the attempts, move the jobs and queue their result events in ONE
        statement. Returns the ids of the jobs that moved (a job the reconciler took back
        meanwhile does not; its attempt row is closed all the same)."""
        columns: list[list[Any]] = [[] for _ in range(26)]
        for record in records:
            job = record.job
            first_snapshot = (
                self._analytics.first_post_run(record.ended_at)
                if self._analytics is not None and record.next_state is JobState.PUBLISHED
                else None
            )
            # Identity fields a result carries never change: built from the claim.
            result = result_message(job, record.event, self._topics.results)
            values = (
                uuid.UUID(job.id),
                job.tenant_id,
                record.next_state.value,
                record.state_reason,
                record.run_at,
                1 if record.counts else 0,
                record.outcome_unknown,
                record.platform_post_id,
                record.url,
                record.error.SerializeToString() if record.error is not None else None,
                Category.of(record.error).value if record.error is not None else "",
                record.next_state in TERMINAL_STATES,
                record.ended_at,
                record.attempt,
                record.outcome.value,
                record.reason,
                None if record.platform_latency is None else record.platform_latency * 1000,
                record.close_breaker,
                job.platform,
                result.topic,
                result.key,
                result.payload,
                result.headers,
                bool(record.dead_letter_reason),
                content_type(job.content),
                first_snapshot,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await conn.fetch(self.q(RECORD_ATTEMPTS_SQL), *columns)
        return {str(row["id"]) for row in rows}

    async def _record_extras(self, conn: Conn, record: AttemptRecord) -> None:
        """Dead letter, pause, quota block and breaker change of one record."""
        job = record.job
        if record.dead_letter_reason:
            await conn.execute(
                self.q(
                    """INSERT INTO publisher.dead_letters
                       (job_id, tenant_id, post_id, connection_id, platform, category, reason,
                        dead_lettered_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                       ON CONFLICT (job_id) DO UPDATE
                          SET category = EXCLUDED.category, reason = EXCLUDED.reason,
                              dead_lettered_at = EXCLUDED.dead_lettered_at"""
                ),
                uuid.UUID(job.id),
                job.tenant_id,
                uuid.UUID(job.post_id),
                job.connection_id,
                job.platform,
                Category.of(record.error).value if record.error is not None else "",
                record.dead_letter_reason,
                record.ended_at,
            )
            await self._emit(
                conn,
                [
                    dead_letter_message(
                        job,
                        record.attempt,
                        record.dead_letter_reason,
                        self._topics.jobs,
                        self._topics.dlq,
                    )
                ],
            )
        if record.pause is not None:
            await self._pause(conn, record.pause, record.ended_at)
        if record.block_until is not None:
            await self._block(conn, job, record.block_until, record.block_reason, record.ended_at)
        await self._breaker_change(conn, record)

    async def _block(
        self, conn: Conn, job: Job, until: datetime, reason: str, now: datetime
    ) -> None:
        await conn.execute(
            self.q(
                """INSERT INTO publisher.quota_blocks (tenant_id, connection_id, until, reason)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (tenant_id, connection_id) DO UPDATE
                      SET until = greatest(publisher.quota_blocks.until, EXCLUDED.until),
                          reason = EXCLUDED.reason"""
            ),
            job.tenant_id,
            job.connection_id,
            until,
            reason,
        )
        # The account's other waiting jobs move past the block instead of being
        # claimed and skipped on every round.
        await conn.execute(
            self.q(
                """UPDATE publisher.jobs
                      SET run_at = $3, state_reason = $4, updated_at = $5
                    WHERE tenant_id = $1 AND connection_id = $2
                      AND state IN ('SCHEDULED', 'RETRYING') AND run_at < $3"""
            ),
            job.tenant_id,
            job.connection_id,
            until,
            f"Deferred: {reason}.",
            now,
        )

    async def _breaker_change(self, conn: Conn, record: AttemptRecord) -> None:
        platform = record.job.platform
        now = record.ended_at
        if record.breaker_failure:
            await conn.execute(
                self.q(
                    """UPDATE publisher.breakers
                          SET state = 'open',
                              cooldown_seconds = least(cooldown_seconds * 2, $3),
                              open_until = $2::timestamptz + make_interval(
                                  secs => least(cooldown_seconds * 2, $3::float8)),
                              probe_job_id = NULL, probe_started_at = NULL
                        WHERE platform = $1 AND state = 'half_open'"""
                ),
                platform,
                now,
                record.breaker_max_cooldown,
            )
        if record.open_breaker_reason:
            await self._open_breaker(
                conn, platform, record.open_breaker_reason, record.breaker_cooldown, now
            )

    async def _emit(self, conn: Conn, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        await conn.execute(
            self.q(
                """INSERT INTO publisher.outbox (topic, message_key, payload, headers)
                   SELECT t, k, p, h FROM unnest($1::text[], $2::text[], $3::bytea[],
                                                 $4::jsonb[]) AS m(t, k, p, h)"""
            ),
            [m.topic for m in messages],
            [m.key for m in messages],
            [m.payload for m in messages],
            [m.headers for m in messages],
        )

    # ------------------------------------------------------------------ outbox

    @asynccontextmanager
    async def outbox_batch(self, limit: int) -> AsyncIterator[Sequence[OutgoingMessage]]:
        """Oldest outbox messages, locked; they are deleted when the block exits
        without an exception (after the caller produced them)."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                self.q(
                    """SELECT id, topic, message_key, payload, headers FROM publisher.outbox
                        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
                ),
                limit,
            )
            yield [
                OutgoingMessage(r["topic"], r["message_key"], r["payload"], r["headers"])
                for r in rows
            ]
            if rows:
                await conn.execute(
                    self.q("DELETE FROM publisher.outbox WHERE id = ANY($1::bigint[])"),
                    [r["id"] for r in rows],
                )


def _count(status: str) -> int:
    """Rows affected, from asyncpg's command status ("UPDATE 3")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
