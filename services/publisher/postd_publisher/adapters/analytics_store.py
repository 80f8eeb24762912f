# Queries are assembled from this module's constants and numbered placeholders only;
# every value is bound ($n), never interpolated.
# ruff: noqa: S608
"""The publisher's analytics SQL: collection tasks, snapshots, rollups and the
queries over them (schema ``publisher``; tests may use another name).

Every query of tenant data has ``tenant_id = $1``; the dispatcher and the reconciler
claim collection work across tenants by design.

Rollups: a round's deltas go to 15-minute UTC buckets (exact for every zone) and, in
the same transaction, to the local days of every zone the tenant asked for. A zone
asked for the first time is built from the quarter hours under an exclusive per-tenant
advisory lock, while writers hold the shared one, so no delta is counted twice or
missed between the build and the first incremental write.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from postd.events.v1.analytics_job_pb2 import AnalyticsJob
from postd_common.kafka import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR,
    H_DLQ_ERROR_CLASS,
    H_DLQ_TOPIC,
    message_headers,
)
from postd_common.logging import redact_text
from postd_publisher.adapters.events import OutgoingMessage, timestamp
from postd_publisher.adapters.postgres import (
    _IDENT,
    SCHEMA,
    Conn,
    InSchema,
    locked_quota_usage,
)
from postd_publisher.domain.analytics import (
    ACCOUNT,
    POST,
    ROLLUP_METRICS,
    Figures,
    figures_of,
)
from postd_publisher.domain.insights import PostFigure
from postd_publisher.domain.quota import Deferral, LedgerEntry, UsageKey
from postd_publisher.domain.reports import (
    AccountFigures,
    CollectionStatus,
    DateRange,
    Filters,
    RollupRow,
    TargetFigures,
)
from postd_publisher.ports import (
    CollectionClaimRequest,
    CollectionResult,
    CollectionRound,
    CollectionTask,
)

FIGURE_COLUMNS = ", ".join(ROLLUP_METRICS)
# A tenant's zones with local days kept; a request in yet another zone is answered
# from the quarter hours.
MAX_ZONES = 4
# "posts" and the metrics, summed; NULL + NULL stays NULL (nothing reported).
_SUMS = ", ".join(
    ["sum(posts)::bigint AS posts"] + [f"sum({m})::bigint AS {m}" for m in ROLLUP_METRICS]
)


def _upsert_set(table: str) -> str:
    parts = [f"posts = {table}.posts + EXCLUDED.posts"]
    for m in ROLLUP_METRICS:
        parts.append(
            f"{m} = CASE WHEN EXCLUDED.{m} IS NULL THEN {table}.{m} "
            f"ELSE coalesce({table}.{m}, 0) + EXCLUDED.{m} END"
        )
    return ", ".join(parts)


_DELTAS = f"""unnest($2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int[],
    {", ".join(f"${7 + i}::bigint[]" for i in range(len(ROLLUP_METRICS)))})
    AS d(at, platform, connection_id, content_type, posts, {FIGURE_COLUMNS})"""

ADD_QUARTERS_SQL = f"""
INSERT INTO publisher.analytics_rollup_quarters AS q
    (tenant_id, bucket, platform, connection_id, content_type, posts, {FIGURE_COLUMNS})
SELECT $1, date_bin('15 minutes', d.at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       d.platform, d.connection_id, d.content_type, {_SUMS}
  FROM {_DELTAS}
 GROUP BY 2, 3, 4, 5
ON CONFLICT (tenant_id, bucket, platform, connection_id, content_type)
DO UPDATE SET {_upsert_set("q")}
"""

ADD_DAYS_SQL = f"""
INSERT INTO publisher.analytics_rollup_days AS r
    (tenant_id, time_zone, day, platform, connection_id, content_type, posts, {FIGURE_COLUMNS})
SELECT $1, z.time_zone, (d.at AT TIME ZONE z.time_zone)::date,
       d.platform, d.connection_id, d.content_type, {_SUMS}
  FROM {_DELTAS}
 CROSS JOIN publisher.analytics_zones z
 WHERE z.tenant_id = $1
 GROUP BY 2, 3, 4, 5, 6
ON CONFLICT (tenant_id, time_zone, day, platform, connection_id, content_type)
DO UPDATE SET {_upsert_set("r")}
"""

BUILD_ZONE_SQL = f"""
INSERT INTO publisher.analytics_rollup_days
    (tenant_id, time_zone, day, platform, connection_id, content_type, posts, {FIGURE_COLUMNS})
SELECT $1, $2, (bucket AT TIME ZONE $2)::date, platform, connection_id, content_type, {_SUMS}
  FROM publisher.analytics_rollup_quarters
 WHERE tenant_id = $1
 GROUP BY 3, 4, 5, 6
"""

CLAIM_TASKS_SQL = """
SELECT t.id, t.tenant_id, t.connection_id, t.platform, t.kind
  FROM publisher.analytics_tasks t
 WHERE t.state IN ('SCHEDULED', 'RETRYING') AND t.run_at <= $1
   AND NOT (t.platform = ANY($3::text[]))
   AND NOT EXISTS (SELECT 1 FROM publisher.connection_pauses cp
                    WHERE cp.tenant_id = t.tenant_id AND cp.connection_id = t.connection_id)
   AND NOT EXISTS (SELECT 1 FROM publisher.quota_blocks qb
                    WHERE qb.tenant_id = t.tenant_id AND qb.connection_id = t.connection_id
                      AND qb.until > $1)
 ORDER BY t.run_at
 LIMIT $2
 FOR UPDATE OF t SKIP LOCKED
"""

TASK_COLUMNS = f"""id, tenant_id, connection_id, platform, kind, job_id, post_id,
    platform_post_id, content_type, published_at, attempts, collections, {FIGURE_COLUMNS},
    breakdown"""


def _lock_key(tenant_id: str) -> str:
    return f"analytics:{tenant_id}"


def _figures(row: Any, breakdown: bool = True) -> Figures:
    raw = row["breakdown"] if breakdown else None
    if isinstance(raw, str):
        raw = json.loads(raw)
    return figures_of(
        {m: row[m] for m in ROLLUP_METRICS},
        {str(k): int(v) for k, v in (raw or {}).items()},
    )


def _task(row: asyncpg.Record) -> CollectionTask:
    return CollectionTask(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        connection_id=row["connection_id"],
        platform=row["platform"],
        kind=row["kind"],
        job_id=str(row["job_id"] or ""),
        post_id=str(row["post_id"] or ""),
        platform_post_id=row["platform_post_id"],
        content_type=row["content_type"],
        published_at=row["published_at"],
        attempts=row["attempts"],
        collections=row["collections"],
        latest=_figures(row) if row["collections"] else None,
    )


class _CollectionClaim:
    """One analytics dispatch transaction (see ports.CollectionClaim)."""

    def __init__(
        self, store: PostgresAnalyticsStore, conn: Conn, rounds: list[CollectionRound]
    ) -> None:
        self._store = store
        self._conn = conn
        self.rounds: Sequence[CollectionRound] = rounds

    async def quota_usage(
        self, keys: Sequence[UsageKey], since: datetime
    ) -> Mapping[UsageKey, Sequence[datetime]]:
        # The same per-account lock as publishing's quota decisions.
        return await locked_quota_usage(self._conn, self._store.q, keys, since)

    async def defer(self, deferrals: Sequence[Deferral]) -> None:
        if not deferrals:
            return
        await self._conn.execute(
            self._store.q(
                """UPDATE publisher.analytics_tasks t
                      SET state = 'SCHEDULED', run_at = d.until, state_reason = d.reason,
                          round_id = NULL
                     FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS d(id, until, reason)
                    WHERE t.round_id = d.id AND t.state = 'DISPATCHED'"""
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


@dataclass(frozen=True)
class AnalyticsTopics:
    jobs: str
    dlq: str


class PostgresAnalyticsStore:
    """The AnalyticsStore port and the analytics queries, on asyncpg."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        topics: AnalyticsTopics,
        schema: str = SCHEMA,
        max_zones: int = MAX_ZONES,
    ) -> None:
        if not _IDENT.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self._pool = pool
        self._topics = topics
        self._schema = schema
        self._max_zones = max_zones
        self.q = InSchema(schema)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # ------------------------------------------------------------------ dispatch

    @asynccontextmanager
    async def claim_due(self, request: CollectionClaimRequest) -> AsyncIterator[_CollectionClaim]:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                self.q(CLAIM_TASKS_SQL),
                request.now,
                request.limit,
                sorted(request.held_platforms),
            )
            rounds = _rounds(rows, request)
            if rounds:
                ids: list[uuid.UUID] = []
                tokens: list[uuid.UUID] = []
                for r in rounds:
                    for task_id in r.task_ids:
                        ids.append(uuid.UUID(task_id))
                        tokens.append(uuid.UUID(r.round_id))
                await conn.execute(
                    self.q(
                        """UPDATE publisher.analytics_tasks t
                              SET state = 'DISPATCHED', round_id = c.round_id,
                                  run_at = $3::timestamptz + make_interval(secs => $4::float8),
                                  updated_at = $3
                             FROM unnest($1::uuid[], $2::uuid[]) AS c(id, round_id)
                            WHERE t.id = c.id"""
                    ),
                    ids,
                    tokens,
                    request.now,
                    request.lease_seconds,
                )
            yield _CollectionClaim(self, conn, rounds)

    async def release(self, rounds: Sequence[CollectionRound], reason: str, now: datetime) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q(
                    """UPDATE publisher.analytics_tasks
                          SET state = 'SCHEDULED', run_at = $2, state_reason = $3,
                              round_id = NULL, updated_at = $2
                        WHERE round_id = ANY($1::uuid[]) AND state = 'DISPATCHED'"""
                ),
                [uuid.UUID(r.round_id) for r in rounds],
                now,
                reason,
            )

    async def sweep_stale(self, now: datetime, limit: int) -> int:
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                self.q(
                    """WITH lost AS (
                           SELECT id FROM publisher.analytics_tasks
                            WHERE state IN ('DISPATCHED', 'COLLECTING') AND run_at < $1
                            ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                       UPDATE publisher.analytics_tasks t
                          SET state = 'SCHEDULED', run_at = $1, round_id = NULL, updated_at = $1,
                              state_reason = 'Collected again: the previous round was lost.'
                         FROM lost WHERE t.id = lost.id"""
                ),
                now,
                limit,
            )
        return int(status.rsplit(" ", 1)[-1])

    async def track_connection(
        self, tenant_id: str, connection_id: str, platform: str, now: datetime
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                self.q(
                    """INSERT INTO publisher.analytics_tasks
                           (id, tenant_id, connection_id, platform, kind, state, run_at,
                            created_at, updated_at)
                       VALUES ($1, $2, $3, $4, 'account', 'SCHEDULED', $5, $5, $5)
                       ON CONFLICT (tenant_id, connection_id) WHERE kind = 'account'
                       DO NOTHING"""
                ),
                uuid.uuid4(),
                tenant_id,
                connection_id,
                platform,
                now,
            )
            # A reconnect: what waited for one is collected again now.
            await conn.execute(
                self.q(
                    """UPDATE publisher.analytics_tasks
                          SET state = 'SCHEDULED', run_at = $3, updated_at = $3,
                              state_reason = 'Collected again after a reconnect.'
                        WHERE tenant_id = $1 AND connection_id = $2 AND state = 'RETRYING'
                          AND last_category IN ('AUTH_REVOKED', 'PERMISSION_MISSING')"""
                ),
                tenant_id,
                connection_id,
                now,
            )

    # ------------------------------------------------------------------ collect

    async def claim_round(
        self,
        tenant_id: str,
        task_ids: Sequence[str],
        round_id: str,
        now: datetime,
        lease_seconds: float,
    ) -> Sequence[CollectionTask]:
        try:
            ids = [uuid.UUID(t) for t in task_ids]
            token = uuid.UUID(round_id)
        except ValueError:
            return []
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                self.q(
                    f"""UPDATE publisher.analytics_tasks
                           SET state = 'COLLECTING',
                               run_at = $4::timestamptz + make_interval(secs => $5::float8),
                               updated_at = $4
                         WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND round_id = $3
                           AND state = 'DISPATCHED'
                     RETURNING {TASK_COLUMNS}"""
                ),
                tenant_id,
                ids,
                token,
                now,
                lease_seconds,
            )
        order = {t: i for i, t in enumerate(task_ids)}
        return sorted((_task(r) for r in rows), key=lambda t: order.get(t.id, 0))

    async def record(self, results: Sequence[CollectionResult], taken_at: datetime) -> None:
        if not results:
            return
        tenant_id = results[0].task.tenant_id
        async with self._pool.acquire() as conn, conn.transaction():
            # Shared: many rounds of a tenant write at once; a zone being built waits.
            await conn.execute(
                "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 11))",
                _lock_key(tenant_id),
            )
            moved = await self._move_tasks(conn, results, taken_at)
            done = [r for r in results if r.task.id in moved]
            await self._snapshots(conn, done, taken_at)
            await self._rollups(conn, tenant_id, done, taken_at)
            await self._account_days(conn, done, taken_at)
            await self._dead_letters(conn, done)

    async def _move_tasks(
        self, conn: Conn, results: Sequence[CollectionResult], taken_at: datetime
    ) -> set[str]:
        """Each task to its next state, with its latest figures; only tasks still in
        this round's hands move (a round the reconciler took back does not)."""
        columns: list[list[Any]] = [[] for _ in range(9 + len(ROLLUP_METRICS))]
        for r in results:
            read = r.figures is not None or bool(r.account_days) or bool(r.totals)
            latest = r.figures or r.task.latest
            breakdown: Mapping[str, int] = (
                (r.figures.breakdown if r.figures else {}) if r.task.kind == POST else r.totals
            )
            values = [
                uuid.UUID(r.task.id),
                r.state,
                r.run_at,
                r.reason,
                r.attempts,
                read,
                r.category,
                bool(r.dead_letter_reason),
                json.dumps(dict(breakdown)) if read else None,
                *[latest.value(m) if latest is not None else None for m in ROLLUP_METRICS],
            ]
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await conn.fetch(self.q(MOVE_TASKS_SQL), taken_at, *columns)
        return {str(row["id"]) for row in rows}

    async def _snapshots(
        self, conn: Conn, results: Sequence[CollectionResult], taken_at: datetime
    ) -> None:
        posts = [r for r in results if r.task.kind == POST and r.figures is not None]
        if not posts:
            return
        await conn.execute(
            self.q(
                f"""INSERT INTO publisher.analytics_snapshots
                       (task_id, tenant_id, taken_at, {FIGURE_COLUMNS}, breakdown)
                    SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[],
                        {", ".join(f"${4 + i}::bigint[]" for i in range(len(ROLLUP_METRICS)))},
                        ${4 + len(ROLLUP_METRICS)}::jsonb[])
                    ON CONFLICT (task_id, taken_at) DO NOTHING"""
            ),
            [uuid.UUID(r.task.id) for r in posts],
            [r.task.tenant_id for r in posts],
            [taken_at] * len(posts),
            *[[r.figures.value(m) if r.figures else None for r in posts] for m in ROLLUP_METRICS],
            [json.dumps(dict(r.figures.breakdown)) if r.figures else "{}" for r in posts],
        )

    async def _rollups(
        self, conn: Conn, tenant_id: str, results: Sequence[CollectionResult], taken_at: datetime
    ) -> None:
        """Deltas since each post's previous snapshot, at the time they were read; a
        post's first snapshot also counts the post, at the time it was published."""
        rows: list[tuple[datetime, str, str, str, int, Figures | None]] = []
        for r in results:
            task = r.task
            if task.kind != POST or r.figures is None:
                continue
            delta = r.figures.minus(task.latest)
            if not delta.empty:
                rows.append(
                    (taken_at, task.platform, task.connection_id, task.content_type, 0, delta)
                )
            if task.collections == 0 and task.published_at is not None:
                rows.append(
                    (
                        task.published_at,
                        task.platform,
                        task.connection_id,
                        task.content_type,
                        1,
                        None,
                    )
                )
        if rows:
            await add_rollups(conn, self.q, tenant_id, rows)

    async def _account_days(
        self, conn: Conn, results: Sequence[CollectionResult], taken_at: datetime
    ) -> None:
        days = [(r.task, day, figures) for r in results for day, figures in r.account_days]
        if not days:
            return
        await conn.execute(
            self.q(
                f"""INSERT INTO publisher.analytics_account_days AS a
                       (tenant_id, connection_id, day, {FIGURE_COLUMNS}, breakdown, fetched_at)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::date[],
                        {", ".join(f"${4 + i}::bigint[]" for i in range(len(ROLLUP_METRICS)))},
                        ${4 + len(ROLLUP_METRICS)}::jsonb[],
                        ${5 + len(ROLLUP_METRICS)}::timestamptz[])
                    ON CONFLICT (tenant_id, connection_id, day) DO UPDATE
                       SET {", ".join(f"{m} = EXCLUDED.{m}" for m in ROLLUP_METRICS)},
                           breakdown = EXCLUDED.breakdown, fetched_at = EXCLUDED.fetched_at"""
            ),
            [t.tenant_id for t, _, _ in days],
            [t.connection_id for t, _, _ in days],
            [d for _, d, _ in days],
            *[[f.value(m) for _, _, f in days] for m in ROLLUP_METRICS],
            [json.dumps(dict(f.breakdown)) for _, _, f in days],
            [taken_at] * len(days),
        )

    async def _dead_letters(self, conn: Conn, results: Sequence[CollectionResult]) -> None:
        rounds: dict[tuple[str, str, str], list[CollectionResult]] = defaultdict(list)
        for r in results:
            if r.dead_letter_reason:
                rounds[(r.task.tenant_id, r.task.connection_id, r.task.kind)].append(r)
        if not rounds:
            return
        messages = []
        for (tenant_id, connection_id, kind), items in rounds.items():
            first = items[0]
            job = AnalyticsJob(
                tenant_id=tenant_id,
                connection_id=connection_id,
                platform=first.task.platform,
                kind=kind,
                task_ids=[i.task.id for i in items],
                dispatched_at=timestamp(first.run_at),
            )
            headers = {
                name: value.decode()
                for name, value in message_headers(job, tenant_id=tenant_id, idempotency_key="")
            }
            headers.update(
                {
                    H_DLQ_TOPIC: self._topics.jobs,
                    H_DLQ_ERROR: redact_text(first.dead_letter_reason)[:1000],
                    H_DLQ_ERROR_CLASS: "AnalyticsCollectionFailed",
                    H_DLQ_ATTEMPTS: str(max(1, first.task.attempts + 1)),
                }
            )
            messages.append(
                OutgoingMessage(self._topics.dlq, connection_id, job.SerializeToString(), headers)
            )
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

    # ------------------------------------------------------------------ zones

    async def zone_ready(self, tenant_id: str, time_zone: str, now: datetime) -> bool:
        """Whether the tenant's local days in ``time_zone`` are kept, building them from
        the quarter hours on first use (False when the tenant has its most zones)."""
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                self.q(
                    """UPDATE publisher.analytics_zones SET last_used_at = $3
                        WHERE tenant_id = $1 AND time_zone = $2
                          AND last_used_at < $3::timestamptz - interval '1 hour'
                    RETURNING 1"""
                ),
                tenant_id,
                time_zone,
                now,
            ) or await conn.fetchval(
                self.q(
                    """SELECT 1 FROM publisher.analytics_zones
                        WHERE tenant_id = $1 AND time_zone = $2"""
                ),
                tenant_id,
                time_zone,
            )
            if found:
                return True
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 11))", _lock_key(tenant_id)
                )
                zones = await conn.fetch(
                    self.q("SELECT time_zone FROM publisher.analytics_zones WHERE tenant_id = $1"),
                    tenant_id,
                )
                if any(z["time_zone"] == time_zone for z in zones):
                    return True
                if len(zones) >= self._max_zones:
                    return False
                await conn.execute(
                    self.q(
                        """INSERT INTO publisher.analytics_zones
                               (tenant_id, time_zone, created_at, last_used_at)
                           VALUES ($1, $2, $3, $3)"""
                    ),
                    tenant_id,
                    time_zone,
                    now,
                )
                await conn.execute(self.q(BUILD_ZONE_SQL), tenant_id, time_zone)
        return True

    # ------------------------------------------------------------------ reads

    async def rollups(
        self,
        tenant_id: str,
        days: DateRange,
        granularity: str,
        group_by: Sequence[str],
        filters: Filters,
        *,
        daily: bool,
    ) -> Sequence[RollupRow]:
        args: list[Any] = [tenant_id, days.zone_name, days.first, days.last]
        if daily:
            day = "day"
            source = "publisher.analytics_rollup_days"
            where = ["tenant_id = $1", "time_zone = $2", "day BETWEEN $3 AND $4"]
        else:
            day = "(bucket AT TIME ZONE $2)::date"
            source = "publisher.analytics_rollup_quarters"
            where = [
                "tenant_id = $1",
                "bucket >= ($3::date::timestamp AT TIME ZONE $2)",
                "bucket < (($4::date + 1)::timestamp AT TIME ZONE $2)",
            ]
        for column, values in (
            ("platform", filters.platforms),
            ("connection_id", filters.connection_ids),
            ("content_type", filters.content_types),
        ):
            if values:
                args.append(list(values))
                where.append(f"{column} = ANY(${len(args)}::text[])")
        period = {
            "": None,
            "day": day,
            "week": f"date_trunc('week', ({day})::timestamp)::date",
            "month": f"date_trunc('month', ({day})::timestamp)::date",
        }[granularity]
        keys = [c for c in (period,) if c] + [DIMENSION_COLUMNS[d] for d in group_by]
        select = ", ".join(
            [f"{period} AS period" if period else "NULL::date AS period"]
            + [f"{DIMENSION_COLUMNS[d]} AS {DIMENSION_COLUMNS[d]}" for d in group_by]
        )
        group = f"GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}" if keys else ""
        sql = f"SELECT {select}, {_SUMS} FROM {source} WHERE {' AND '.join(where)} {group}"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(self.q(sql), *args)
        return [
            RollupRow(
                period=row["period"],
                platform=row.get("platform", ""),
                connection_id=row.get("connection_id", ""),
                content_type=row.get("content_type", ""),
                posts=int(row["posts"] or 0),
                figures=figures_of({m: row[m] for m in ROLLUP_METRICS}),
            )
            for row in rows
            if keys or row["posts"] is not None
        ]

    async def post_exists(self, tenant_id: str, post_id: str) -> bool:
        try:
            pid = uuid.UUID(post_id)
        except ValueError:
            return False
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                self.q("SELECT 1 FROM publisher.posts WHERE tenant_id = $1 AND id = $2"),
                tenant_id,
                pid,
            )
        return found is not None

    async def post_targets(self, tenant_id: str, post_id: str) -> Sequence[TargetFigures]:
        async with self._pool.acquire() as conn:
            tasks = await conn.fetch(
                self.q(
                    f"""SELECT {_TASK_READ} FROM publisher.analytics_tasks t
                          JOIN publisher.jobs j ON j.id = t.job_id
                         WHERE t.tenant_id = $1 AND t.post_id = $2 AND t.kind = 'post'
                         ORDER BY j.position"""
                ),
                tenant_id,
                uuid.UUID(post_id),
            )
            snapshots = await conn.fetch(
                self.q(
                    f"""SELECT task_id, taken_at, {FIGURE_COLUMNS}, breakdown
                          FROM publisher.analytics_snapshots
                         WHERE tenant_id = $1 AND task_id = ANY($2::uuid[])
                         ORDER BY task_id, taken_at"""
                ),
                tenant_id,
                [t["id"] for t in tasks],
            )
        by_task: dict[str, list[tuple[datetime, Figures]]] = defaultdict(list)
        for row in snapshots:
            by_task[str(row["task_id"])].append((row["taken_at"], _figures(row)))
        return [_target(row, by_task.get(str(row["id"]), [])) for row in tasks]

    async def connection_platform(self, tenant_id: str, connection_id: str) -> str | None:
        async with self._pool.acquire() as conn:
            found: str | None = await conn.fetchval(
                self.q(
                    """SELECT platform FROM (
                           (SELECT platform FROM publisher.analytics_tasks
                             WHERE tenant_id = $1 AND connection_id = $2 LIMIT 1)
                           UNION ALL
                           (SELECT platform FROM publisher.known_connections
                             WHERE tenant_id = $1 AND connection_id = $2)) found
                        LIMIT 1"""
                ),
                tenant_id,
                connection_id,
            )
        return found

    async def account_figures(
        self, tenant_id: str, connection_id: str, first: date, last: date
    ) -> AccountFigures:
        async with self._pool.acquire() as conn:
            task = await conn.fetchrow(
                self.q(
                    f"""SELECT {_TASK_READ} FROM publisher.analytics_tasks t
                         WHERE t.tenant_id = $1 AND t.connection_id = $2 AND t.kind = 'account'"""
                ),
                tenant_id,
                connection_id,
            )
            days = await conn.fetch(
                self.q(
                    f"""SELECT day, {FIGURE_COLUMNS}, breakdown
                          FROM publisher.analytics_account_days
                         WHERE tenant_id = $1 AND connection_id = $2 AND day BETWEEN $3 AND $4
                         ORDER BY day"""
                ),
                tenant_id,
                connection_id,
                first,
                last,
            )
        totals: dict[str, int] = {}
        if task is not None:
            raw = task["breakdown"]
            totals = {
                str(k): int(v)
                for k, v in (json.loads(raw) if isinstance(raw, str) else raw).items()
            }
        return AccountFigures(
            platform=task["platform"] if task is not None else "",
            days=[(row["day"], _figures(row)) for row in days],
            totals=totals,
            collection=_status(task) if task is not None else None,
        )

    async def top_posts(
        self, tenant_id: str, connection_id: str, since: datetime, until: datetime, limit: int
    ) -> Sequence[TargetFigures]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                self.q(
                    f"""SELECT {_TASK_READ} FROM publisher.analytics_tasks t
                         WHERE t.tenant_id = $1 AND t.kind = 'post' AND t.connection_id = $2
                           AND t.published_at >= $3 AND t.published_at < $4
                           AND t.collections > 0
                         ORDER BY coalesce(t.reach, t.impressions, t.video_views, 0) DESC, t.id
                         LIMIT $5"""
                ),
                tenant_id,
                connection_id,
                since,
                until,
                limit,
            )
        return [_target(row, []) for row in rows]

    async def insight_posts(
        self, tenant_id: str, since: datetime, min_age: timedelta, platforms: Sequence[str]
    ) -> Sequence[PostFigure]:
        args: list[Any] = [tenant_id, since, min_age]
        extra = ""
        if platforms:
            args.append(list(platforms))
            extra = "AND platform = ANY($4::text[])"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                self.q(
                    f"""SELECT post_id, connection_id, platform, content_type, published_at,
                               impressions, reach, engagements, video_views
                          FROM publisher.analytics_tasks
                         WHERE tenant_id = $1 AND kind = 'post' AND published_at >= $2
                           AND collections > 0 AND last_collected_at - published_at >= $3
                           {extra}"""
                ),
                *args,
            )
        return [
            PostFigure(
                post_id=str(row["post_id"]),
                connection_id=row["connection_id"],
                platform=row["platform"],
                content_type=row["content_type"],
                published_at=row["published_at"],
                impressions=row["impressions"],
                reach=row["reach"],
                engagements=row["engagements"],
                video_views=row["video_views"],
            )
            for row in rows
        ]


_TASK_READ = f"""t.id, t.tenant_id, t.connection_id, t.platform, t.kind, t.job_id, t.post_id,
    t.platform_post_id, t.content_type, t.published_at, t.state, t.state_reason, t.run_at,
    t.last_collected_at, t.collections, t.dead_letters,
    {", ".join(f"t.{m}" for m in ROLLUP_METRICS)}, t.breakdown"""
DIMENSION_COLUMNS = {
    "platform": "platform",
    "connection": "connection_id",
    "content_type": "content_type",
}


def _status(row: Any) -> CollectionStatus:
    waiting = row["state"] in ("SCHEDULED", "RETRYING")
    return CollectionStatus(
        state=row["state"],
        reason=row["state_reason"],
        next_at=row["run_at"] if waiting else None,
        last_collected_at=row["last_collected_at"],
        collections=row["collections"],
        dead_letters=row["dead_letters"],
    )


def _target(row: Any, snapshots: Sequence[tuple[datetime, Figures]]) -> TargetFigures:
    return TargetFigures(
        task_id=str(row["id"]),
        job_id=str(row["job_id"] or ""),
        post_id=str(row["post_id"] or ""),
        connection_id=row["connection_id"],
        platform=row["platform"],
        platform_post_id=row["platform_post_id"],
        content_type=row["content_type"],
        published_at=row["published_at"],
        latest=_figures(row),
        collection=_status(row),
        snapshots=snapshots,
    )


def _move_tasks_sql() -> str:
    metric_args = ", ".join(f"${11 + i}::bigint[]" for i in range(len(ROLLUP_METRICS)))
    sets = ", ".join(f"{m} = CASE WHEN r.read THEN r.{m} ELSE t.{m} END" for m in ROLLUP_METRICS)
    return f"""UPDATE publisher.analytics_tasks t
                  SET state = r.state, run_at = r.run_at, state_reason = r.reason,
                      attempts = r.attempts, last_category = r.category,
                      round_id = NULL, updated_at = $1,
                      collections = t.collections + r.read::int,
                      last_collected_at = CASE WHEN r.read THEN $1 ELSE t.last_collected_at END,
                      dead_letters = t.dead_letters + r.dead::int,
                      breakdown = coalesce(r.breakdown, t.breakdown),
                      {sets}
                 FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::text[],
                             $6::int[], $7::boolean[], $8::text[], $9::boolean[],
                             $10::jsonb[], {metric_args})
                   AS r(id, state, run_at, reason, attempts, read, category, dead,
                        breakdown, {FIGURE_COLUMNS})
                WHERE t.id = r.id AND t.state = 'COLLECTING'
            RETURNING t.id"""


MOVE_TASKS_SQL = _move_tasks_sql()


async def add_rollups(
    conn: Conn,
    q: Any,
    tenant_id: str,
    rows: Sequence[tuple[datetime, str, str, str, int, Figures | None]],
) -> None:
    """Add deltas (at, platform, connection, content type, posts, figures) to the
    quarter hours and to the local days of every zone kept for the tenant."""
    args: list[Any] = [
        tenant_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        *[[r[5].value(m) if r[5] is not None else None for r in rows] for m in ROLLUP_METRICS],
    ]
    await conn.execute(q(ADD_QUARTERS_SQL), *args)
    await conn.execute(q(ADD_DAYS_SQL), *args)


def _rounds(
    rows: Sequence[asyncpg.Record], request: CollectionClaimRequest
) -> list[CollectionRound]:
    """Claimed tasks grouped per connection and kind, in rounds no bigger than the
    platform's round size (an account's task is a round of its own)."""
    grouped: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for row in rows:
        grouped[(row["tenant_id"], row["connection_id"], row["platform"], row["kind"])].append(
            str(row["id"])
        )
    rounds: list[CollectionRound] = []
    for (tenant_id, connection_id, platform, kind), ids in grouped.items():
        size = 1 if kind == ACCOUNT else request.round_sizes.get(platform, request.default_round)
        for start in range(0, len(ids), max(1, size)):
            rounds.append(
                CollectionRound(
                    round_id=str(uuid.uuid4()),
                    tenant_id=tenant_id,
                    connection_id=connection_id,
                    platform=platform,
                    kind=kind,
                    task_ids=tuple(ids[start : start + size]),
                    dispatched_at=request.now,
                )
            )
    return rounds


def local_day(value: date | None) -> str:
    return value.isoformat() if value is not None else ""
