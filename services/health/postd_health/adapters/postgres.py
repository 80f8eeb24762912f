"""All of health's SQL: the watch, the health log, history, rollups, alerts, outbox,
notifications and deliveries, in one schema (``health`` in production; tests give
each test its own).

Every method may raise :class:`~postd_health.ports.StoreUnavailable` when PostgreSQL
cannot be reached; tenant data is always selected with its ``tenant_id``.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

import asyncpg

from postd_common.db import Params

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from postd_health.adapters import protos
from postd_health.domain.dashboard import Bucket, DashboardQuery, align
from postd_health.domain.detectors import CallTotals
from postd_health.domain.model import (
    Alert,
    AlertKind,
    AlertSpec,
    AlertState,
    Category,
    Cause,
    Channel,
    CheckKind,
    CheckRecord,
    Delivery,
    Failure,
    Notification,
    NotificationRoutes,
    Severity,
    Status,
    StatusChange,
    Watch,
)
from postd_health.ports import (
    CallSample,
    CheckQuery,
    DeliveryRequest,
    OutboxMessage,
    PublishObservation,
    StoreUnavailable,
    WatchMutation,
)

P = ParamSpec("P")
R = TypeVar("R")

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]*$")
# Buckets of the dashboard's series start at whole multiples of the resolution from here
# (the same origin as postd_health.domain.dashboard.align).
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)

# Upper bounds (milliseconds) of the latency histogram's buckets; one more for "above".
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
)
# Due-to-finished lag of publish jobs, milliseconds.
LAG_BOUNDS_MS: tuple[float, ...] = (
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    900000,
    3600000,
)

_WATCH_FIELDS = (
    "tenant_id",
    "platform",
    "account_name",
    "external_id",
    "status",
    "status_reason",
    "status_cause",
    "status_since",
    "scopes",
    "capabilities",
    "expires_at",
    "refresh_expires_at",
    "has_refresh_token",
    "token_issued_at",
    "last_refreshed_at",
    "consecutive_failures",
    "first_failure_at",
    "last_failure_category",
    "refresh_failures",
    "last_check_at",
    "retry_at",
    "refresh_requested_at",
    "next_refresh_at",
    "next_check_at",
    "next_warn_at",
    "warned_days",
)


def histogram(value_ms: float | None, bounds: Sequence[float]) -> list[int]:
    """A one-hot count vector for one observation (all zeros when there is none)."""
    counts = [0] * (len(bounds) + 1)
    if value_ms is None:
        return counts
    for i, bound in enumerate(bounds):
        if value_ms <= bound:
            counts[i] = 1
            return counts
    counts[-1] = 1
    return counts


def _unavailable(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(
                "PostgreSQL is unreachable; try again shortly.", retry_after=2.0
            ) from exc
        except TimeoutError as exc:
            raise StoreUnavailable("PostgreSQL timed out; try again shortly.") from exc

    return wrapper


def _watch(row: asyncpg.Record) -> Watch:
    category = row["last_failure_category"]
    return Watch(
        connection_id=row["connection_id"],
        tenant_id=row["tenant_id"],
        platform=row["platform"],
        status=Status(row["status"]),
        account_name=row["account_name"],
        external_id=row["external_id"],
        status_reason=row["status_reason"],
        status_cause=Cause(row["status_cause"]),
        status_since=row["status_since"],
        scopes=tuple(row["scopes"]),
        capabilities=tuple(row["capabilities"]),
        expires_at=row["expires_at"],
        refresh_expires_at=row["refresh_expires_at"],
        has_refresh_token=row["has_refresh_token"],
        token_issued_at=row["token_issued_at"],
        last_refreshed_at=row["last_refreshed_at"],
        consecutive_failures=row["consecutive_failures"],
        first_failure_at=row["first_failure_at"],
        last_failure_category=Category(category) if category else None,
        refresh_failures=row["refresh_failures"],
        last_check_at=row["last_check_at"],
        retry_at=row["retry_at"],
        refresh_requested_at=row["refresh_requested_at"],
        next_refresh_at=row["next_refresh_at"],
        next_check_at=row["next_check_at"],
        next_warn_at=row["next_warn_at"],
        warned_days=tuple(row["warned_days"]),
        due_at=row["due_at"],
        claim_id=str(row["claim_id"]) if row["claim_id"] else None,
    )


def _watch_values(w: Watch) -> list[Any]:
    return [
        w.tenant_id,
        w.platform,
        w.account_name,
        w.external_id,
        w.status.value,
        w.status_reason,
        w.status_cause.value,
        w.status_since,
        list(w.scopes),
        list(w.capabilities),
        w.expires_at,
        w.refresh_expires_at,
        w.has_refresh_token,
        w.token_issued_at,
        w.last_refreshed_at,
        w.consecutive_failures,
        w.first_failure_at,
        w.last_failure_category.value if w.last_failure_category else None,
        w.refresh_failures,
        w.last_check_at,
        w.retry_at,
        w.refresh_requested_at,
        w.next_refresh_at,
        w.next_check_at,
        w.next_warn_at,
        list(w.warned_days),
    ]


def _check(row: asyncpg.Record) -> CheckRecord:
    failure = row["failure"]
    latency = row["latency_ms"]
    return CheckRecord(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        connection_id=row["connection_id"],
        platform=row["platform"],
        kind=CheckKind(row["kind"]),
        ok=row["ok"],
        checked_at=row["checked_at"],
        latency=timedelta(milliseconds=latency) if latency is not None else None,
        failure=Failure.from_json(failure) if failure else None,
        status_after=Status(row["status_after"]),
    )


def _change(row: asyncpg.Record) -> StatusChange:
    category = row["category"]
    return StatusChange(
        event_id=row["event_id"],
        tenant_id=row["tenant_id"],
        connection_id=row["connection_id"],
        platform=row["platform"],
        previous_status=Status(row["previous_status"]),
        status=Status(row["status"]),
        reason=row["reason"],
        category=Category(category) if category else None,
        source=row["source"],
        occurred_at=row["occurred_at"],
    )


def _alert(row: asyncpg.Record) -> Alert:
    return Alert(
        alert_id=str(row["alert_id"]),
        tenant_id=row["tenant_id"],
        kind=AlertKind(row["kind"]),
        severity=Severity(row["severity"]),
        state=AlertState(row["state"]),
        title=row["title"],
        message=row["message"],
        dedupe_key=row["dedupe_key"],
        started_at=row["started_at"],
        platform=row["platform"],
        connection_id=row["connection_id"],
        action_url=row["action_url"],
        resolved_at=row["resolved_at"],
    )


def _notification(row: asyncpg.Record) -> Notification:
    return Notification(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        alert_id=row["alert_id"],
        kind=AlertKind(row["kind"]),
        severity=Severity(row["severity"]),
        alert_state=AlertState(row["alert_state"]),
        title=row["title"],
        message=row["message"],
        created_at=row["created_at"],
        platform=row["platform"],
        connection_id=row["connection_id"],
        action_url=row["action_url"],
        read_at=row["read_at"],
        read_by=row["read_by"],
    )


class PostgresStore:
    """Implements the WatchStore, HealthLog, Metrics, AlertStore and NotificationStore
    ports (and the readers of the dashboard and detectors) on one pool."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "health") -> None:
        if not _SCHEMA.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self._pool = pool
        self._s = schema

    # ------------------------------------------------------------------ watch

    @_unavailable
    async def get_watch(self, connection_id: str, tenant_id: str | None = None) -> Watch | None:
        row = await self._pool.fetchrow(
            f"SELECT * FROM {self._s}.connection_watch WHERE connection_id = $1",  # noqa: S608
            connection_id,
        )
        if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
            return None
        return _watch(row)

    @_unavailable
    async def mutate_watch(
        self, connection_id: str, mutate: WatchMutation, *, claim_id: str | None = None
    ) -> Watch | None:
        for attempt in range(2):
            try:
                return await self._mutate_once(connection_id, mutate, claim_id)
            except asyncpg.UniqueViolationError:
                # Two first sightings raced to insert; the second now finds the row.
                if attempt:
                    raise
        return None

    async def _mutate_once(
        self, connection_id: str, mutate: WatchMutation, claim_id: str | None
    ) -> Watch | None:
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM {s}.connection_watch WHERE connection_id = $1 FOR UPDATE",  # noqa: S608
                connection_id,
            )
            current = _watch(row) if row is not None else None
            new = mutate(current)
            if new is None:
                return current
            values = _watch_values(new)
            if row is None:
                columns = ", ".join(("connection_id", *_WATCH_FIELDS, "due_at"))
                params = ", ".join(f"${i}" for i in range(1, len(_WATCH_FIELDS) + 3))
                stored = await conn.fetchrow(
                    f"INSERT INTO {s}.connection_watch ({columns}) VALUES ({params}) RETURNING *",  # noqa: S608
                    connection_id,
                    *values,
                    new.due_at,
                )
                assert stored is not None
                return _watch(stored)
            held = row["claim_id"] is not None
            mine = held and claim_id is not None and str(row["claim_id"]) == claim_id
            sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(_WATCH_FIELDS))
            n = len(_WATCH_FIELDS) + 2
            if held and not mine:
                # Another worker holds the row: leave its claim and due time alone; it
                # plans again from the whole row when it lets go.
                tail = "updated_at = now()"
                extra: list[Any] = []
            else:
                tail = (
                    f"due_at = ${n}, claim_id = NULL, claimed_by = NULL, "
                    "claimed_until = NULL, updated_at = now()"
                )
                extra = [new.due_at]
            stored = await conn.fetchrow(
                f"UPDATE {s}.connection_watch SET {sets}, {tail} "  # noqa: S608
                "WHERE connection_id = $1 RETURNING *",
                connection_id,
                *values,
                *extra,
            )
            assert stored is not None
            return _watch(stored)

    @_unavailable
    async def claim_due(
        self, now: datetime, limit: int, lease: timedelta, worker: str
    ) -> list[Watch]:
        s = self._s
        rows = await self._pool.fetch(
            f"""WITH due AS (
                    SELECT connection_id FROM {s}.connection_watch
                     WHERE due_at <= $1
                     ORDER BY due_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                UPDATE {s}.connection_watch w
                   SET claim_id = gen_random_uuid(), claimed_by = $3,
                       claimed_until = $1 + $4::interval, due_at = $1 + $4::interval
                  FROM due
                 WHERE w.connection_id = due.connection_id
             RETURNING w.*""",  # noqa: S608
            now,
            limit,
            worker,
            lease,
        )
        return [_watch(r) for r in rows]

    @_unavailable
    async def claim_one(
        self, connection_id: str, tenant_id: str, now: datetime, lease: timedelta, worker: str
    ) -> Watch | None:
        s = self._s
        row = await self._pool.fetchrow(
            f"""UPDATE {s}.connection_watch
                   SET claim_id = gen_random_uuid(), claimed_by = $4,
                       claimed_until = $3 + $5::interval, due_at = $3 + $5::interval
                 WHERE connection_id = $1 AND tenant_id = $2
                   AND (claim_id IS NULL OR claimed_until <= $3)
             RETURNING *""",  # noqa: S608
            connection_id,
            tenant_id,
            now,
            worker,
            lease,
        )
        if row is not None:
            return _watch(row)
        exists = await self._pool.fetchval(
            f"SELECT 1 FROM {s}.connection_watch WHERE connection_id = $1 AND tenant_id = $2",  # noqa: S608
            connection_id,
            tenant_id,
        )
        if not exists:
            raise LookupError(connection_id)
        return None

    @_unavailable
    async def tenants_on_platform(self, platform: str) -> list[str]:
        rows = await self._pool.fetch(
            f"""SELECT DISTINCT tenant_id FROM {self._s}.connection_watch
                 WHERE platform = $1 AND status <> 'disconnected'""",  # noqa: S608
            platform,
        )
        return [r["tenant_id"] for r in rows]

    # ------------------------------------------------------------------ health log

    @_unavailable
    async def record_check(self, check: CheckRecord) -> None:
        await self._pool.execute(
            f"""INSERT INTO {self._s}.health_checks
                  (id, tenant_id, connection_id, platform, kind, ok, checked_at,
                   latency_ms, failure, status_after)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (id) DO NOTHING""",  # noqa: S608
            uuid.UUID(check.id),
            check.tenant_id,
            check.connection_id,
            check.platform,
            check.kind.value,
            check.ok,
            check.checked_at,
            check.latency.total_seconds() * 1000 if check.latency is not None else None,
            check.failure.to_json() if check.failure else None,
            check.status_after.value,
        )

    @_unavailable
    async def list_checks(
        self, query: CheckQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[CheckRecord]:
        where = ["true"]
        arg = Params()
        if query.tenant_id:
            where.append(f"tenant_id = {arg(query.tenant_id)}")
        if query.connection_id:
            where.append(f"connection_id = {arg(query.connection_id)}")
        if query.platform:
            where.append(f"platform = {arg(query.platform)}")
        if query.failures_only:
            where.append("NOT ok")
        if query.since is not None:
            where.append(f"checked_at >= {arg(query.since)}")
        if query.until is not None:
            where.append(f"checked_at < {arg(query.until)}")
        if after is not None:
            where.append(f"(checked_at, id) < ({arg(after[0])}, {arg(uuid.UUID(after[1]))})")
        rows = await self._pool.fetch(
            f"SELECT * FROM {self._s}.health_checks WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY checked_at DESC, id DESC LIMIT {arg(limit)}",
            *arg.values,
        )
        return [_check(r) for r in rows]

    @_unavailable
    async def record_status_change(self, change: StatusChange) -> bool:
        row = await self._pool.fetchrow(
            f"""INSERT INTO {self._s}.status_history
                  (event_id, tenant_id, connection_id, platform, previous_status, status,
                   reason, category, source, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",  # noqa: S608
            change.event_id,
            change.tenant_id,
            change.connection_id,
            change.platform,
            change.previous_status.value,
            change.status.value,
            change.reason,
            change.category.value if change.category else None,
            change.source,
            change.occurred_at,
        )
        return row is not None

    @_unavailable
    async def history(self, tenant_id: str, connection_id: str, limit: int) -> list[StatusChange]:
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.status_history
                 WHERE tenant_id = $1 AND connection_id = $2
                 ORDER BY occurred_at DESC, event_id DESC LIMIT $3""",  # noqa: S608
            tenant_id,
            connection_id,
            limit,
        )
        return [_change(r) for r in rows]

    @_unavailable
    async def processed(self, consumer: str, key: str) -> bool:
        """Whether a message was already applied."""
        found = await self._pool.fetchval(
            f"""SELECT 1 FROM {self._s}.processed_messages
                 WHERE consumer = $1 AND message_key = $2""",  # noqa: S608
            consumer,
            key,
        )
        return bool(found)

    @_unavailable
    async def first_time(self, consumer: str, key: str) -> bool:
        """Remember a message as applied; False when it already was."""
        row = await self._pool.fetchrow(
            f"""INSERT INTO {self._s}.processed_messages (consumer, message_key)
                VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1""",  # noqa: S608
            consumer,
            key,
        )
        return row is not None

    # ------------------------------------------------------------------ rollups

    async def _add_rollup(
        self,
        conn: Conn,
        sample: CallSample,
        *,
        jobs_published: int = 0,
        jobs_failed: int = 0,
        lag_ms: float | None = None,
    ) -> None:
        failure = sample.failure
        error_class = failure.error_class.value if failure and not sample.ok else None
        passing = int(bool(failure and not sample.ok and failure.category.passing))
        latency = sample.latency.total_seconds() * 1000 if sample.latency is not None else None
        minute = sample.at.replace(second=0, microsecond=0)
        hour = minute.replace(minute=0)
        for granularity, bucket in (("minute", minute), ("hour", hour)):
            await conn.execute(
                f"""INSERT INTO {self._s}.call_rollups AS r
                      (granularity, bucket, tenant_id, platform, source, requests, successes,
                       unauthorized, rate_limited, server_errors, timeouts,
                       other_client_errors, passing_failures, jobs_published, jobs_failed,
                       latency_hist, lag_hist)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                            $16, $17)
                    ON CONFLICT (granularity, bucket, tenant_id, platform, source) DO UPDATE SET
                      requests = r.requests + EXCLUDED.requests,
                      successes = r.successes + EXCLUDED.successes,
                      unauthorized = r.unauthorized + EXCLUDED.unauthorized,
                      rate_limited = r.rate_limited + EXCLUDED.rate_limited,
                      server_errors = r.server_errors + EXCLUDED.server_errors,
                      timeouts = r.timeouts + EXCLUDED.timeouts,
                      other_client_errors = r.other_client_errors + EXCLUDED.other_client_errors,
                      passing_failures = r.passing_failures + EXCLUDED.passing_failures,
                      jobs_published = r.jobs_published + EXCLUDED.jobs_published,
                      jobs_failed = r.jobs_failed + EXCLUDED.jobs_failed,
                      latency_hist = {self._s}.add_counts(r.latency_hist, EXCLUDED.latency_hist),
                      lag_hist = {self._s}.add_counts(r.lag_hist, EXCLUDED.lag_hist)""",  # noqa: S608
                granularity,
                bucket,
                sample.tenant_id,
                sample.platform,
                sample.source,
                1 if sample.source != "none" else 0,
                int(sample.ok),
                int(error_class == "unauthorized"),
                int(error_class == "rate_limited"),
                int(error_class == "server_errors"),
                int(error_class == "timeouts"),
                int(error_class == "other_client_errors"),
                passing,
                jobs_published,
                jobs_failed,
                histogram(latency, LATENCY_BOUNDS_MS),
                histogram(lag_ms, LAG_BOUNDS_MS),
            )

    @_unavailable
    async def add_sample(self, sample: CallSample) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._add_rollup(conn, sample)

    @_unavailable
    async def record_publish(self, observation: PublishObservation) -> bool:
        s = self._s
        o = observation
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                f"""INSERT INTO {s}.processed_messages (consumer, message_key)
                    VALUES ('publish_results', $1) ON CONFLICT DO NOTHING RETURNING 1""",  # noqa: S608
                f"{o.job_id}:{o.attempt}:{o.outcome}",
            )
            if not fresh:
                return False
            published = o.outcome == "published"
            failed = o.outcome in ("failed", "dead_lettered")
            lag = (
                (o.sample.at - o.due_at).total_seconds() * 1000
                if published and o.due_at is not None
                else None
            )
            if o.outcome != "cancelled":
                await self._add_rollup(
                    conn,
                    o.sample,
                    jobs_published=int(published),
                    jobs_failed=int(failed),
                    lag_ms=lag,
                )
            state = {"retry_scheduled": "retrying"}.get(o.outcome, o.outcome)
            await conn.execute(
                f"""INSERT INTO {s}.publish_jobs AS j
                      (job_id, tenant_id, platform, connection_id, state, attempt, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (job_id) DO UPDATE SET
                      state = EXCLUDED.state, attempt = EXCLUDED.attempt,
                      updated_at = EXCLUDED.updated_at
                    WHERE j.attempt <= EXCLUDED.attempt""",  # noqa: S608
                o.job_id,
                o.sample.tenant_id,
                o.sample.platform,
                o.connection_id,
                state,
                o.attempt,
                o.sample.at,
            )
            return True

    # ------------------------------------------------------------------ alerts

    async def _outbox(self, conn: Conn, alert: Alert, topic: str) -> None:
        await conn.execute(
            f"""INSERT INTO {self._s}.outbox (topic, key, value, tenant_id)
                VALUES ($1, $2, $3, $4)""",  # noqa: S608
            topic,
            alert.dedupe_key,
            protos.alert_to_proto(alert).SerializeToString(),
            alert.tenant_id,
        )

    @_unavailable
    async def open_alert(self, spec: AlertSpec, now: datetime, topic: str) -> Alert | None:
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT * FROM {s}.alerts WHERE dedupe_key = $1 AND state = 'firing'
                    FOR UPDATE""",  # noqa: S608
                spec.dedupe_key,
            )
            if row is not None:
                if int(spec.severity) <= row["severity"]:
                    await conn.execute(
                        f"""UPDATE {s}.alerts SET last_seen_at = $2, occurrences = occurrences + 1
                             WHERE alert_id = $1""",  # noqa: S608
                        row["alert_id"],
                        now,
                    )
                    return None
                row = await conn.fetchrow(
                    f"""UPDATE {s}.alerts
                           SET severity = $2, title = $3, message = $4, action_url = $5,
                               last_seen_at = $6, occurrences = occurrences + 1
                         WHERE alert_id = $1 RETURNING *""",  # noqa: S608
                    row["alert_id"],
                    int(spec.severity),
                    spec.title,
                    spec.message,
                    spec.action_url or row["action_url"],
                    now,
                )
            else:
                row = await conn.fetchrow(
                    f"""INSERT INTO {s}.alerts
                          (alert_id, dedupe_key, tenant_id, kind, severity, state, title,
                           message, platform, connection_id, action_url, started_at,
                           last_seen_at)
                        VALUES ($1, $2, $3, $4, $5, 'firing', $6, $7, $8, $9, $10, $11, $11)
                        ON CONFLICT (dedupe_key) WHERE state = 'firing' DO NOTHING
                        RETURNING *""",  # noqa: S608
                    uuid.uuid4(),
                    spec.dedupe_key,
                    spec.tenant_id,
                    spec.kind.value,
                    int(spec.severity),
                    spec.title,
                    spec.message,
                    spec.platform,
                    spec.connection_id,
                    spec.action_url,
                    now,
                )
                if row is None:
                    return None
            assert row is not None
            alert = _alert(row)
            await self._outbox(conn, alert, topic)
            return alert

    @_unavailable
    async def resolve_alert(
        self, dedupe_key: str, message: str, now: datetime, topic: str, *, action_url: str = ""
    ) -> Alert | None:
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE {s}.alerts
                       SET state = 'resolved', resolved_at = $2, message = $3,
                           action_url = CASE WHEN $4 = '' THEN action_url ELSE $4 END
                     WHERE dedupe_key = $1 AND state = 'firing' RETURNING *""",  # noqa: S608
                dedupe_key,
                now,
                message,
                action_url,
            )
            if row is None:
                return None
            alert = _alert(row)
            await self._outbox(conn, alert, topic)
            return alert

    @_unavailable
    async def open_alerts(self, kind: AlertKind, prefix: str) -> list[Alert]:
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.alerts
                 WHERE state = 'firing' AND kind = $1 AND starts_with(dedupe_key, $2)""",  # noqa: S608
            kind.value,
            prefix,
        )
        return [_alert(r) for r in rows]

    @_unavailable
    async def list_alerts(
        self,
        *,
        tenant_id: str,
        states: Sequence[AlertState],
        kinds: Sequence[AlertKind],
        platform: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Alert]:
        where: list[str] = []
        arg = Params()
        if tenant_id:
            # A tenant sees its own alerts and the platform outages that affect everyone.
            where.append(
                f"(tenant_id = {arg(tenant_id)} OR (tenant_id = '' AND kind = 'platform_outage'))"
            )
        if states:
            where.append(f"state = ANY({arg([s.value for s in states])}::text[])")
        if kinds:
            where.append(f"kind = ANY({arg([k.value for k in kinds])}::text[])")
        if platform:
            where.append(f"platform = {arg(platform)}")
        if since is not None:
            where.append(f"started_at >= {arg(since)}")
        if until is not None:
            where.append(f"started_at < {arg(until)}")
        if after is not None:
            where.append(f"(started_at, alert_id) < ({arg(after[0])}, {arg(uuid.UUID(after[1]))})")
        clause = " AND ".join(where) or "true"
        rows = await self._pool.fetch(
            f"SELECT * FROM {self._s}.alerts WHERE {clause} "  # noqa: S608
            f"ORDER BY started_at DESC, alert_id DESC LIMIT {arg(limit)}",
            *arg.values,
        )
        return [_alert(r) for r in rows]

    @_unavailable
    async def relay_outbox(
        self, limit: int, publish: Callable[[Sequence[OutboxMessage]], Awaitable[None]]
    ) -> int:
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""SELECT id, topic, key, value, tenant_id FROM {s}.outbox
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",  # noqa: S608
                limit,
            )
            if not rows:
                return 0
            await publish(
                [
                    OutboxMessage(r["topic"], r["key"], bytes(r["value"]), r["tenant_id"])
                    for r in rows
                ]
            )
            await conn.execute(
                f"DELETE FROM {s}.outbox WHERE id = ANY($1::bigint[])",  # noqa: S608
                [r["id"] for r in rows],
            )
            return len(rows)

    # ------------------------------------------------------------------ notifications

    @_unavailable
    async def add_notification(
        self,
        alert: Alert,
        tenant_id: str,
        deliveries: Sequence[DeliveryRequest],
        now: datetime,
    ) -> Notification | None:
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            if alert.state is AlertState.FIRING:
                told = await conn.fetchval(
                    f"""SELECT 1 FROM {s}.notifications
                         WHERE tenant_id = $1 AND alert_id = $2 AND alert_state = 'firing'
                           AND severity >= $3""",  # noqa: S608
                    tenant_id,
                    alert.alert_id,
                    int(alert.severity),
                )
                if told:
                    return None
            row = await conn.fetchrow(
                f"""INSERT INTO {s}.notifications
                      (id, tenant_id, alert_id, kind, severity, alert_state, title, message,
                       platform, connection_id, action_url, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                    ON CONFLICT (tenant_id, alert_id, alert_state, severity) DO NOTHING
                    RETURNING *""",  # noqa: S608
                uuid.uuid4(),
                tenant_id,
                alert.alert_id,
                alert.kind.value,
                int(alert.severity),
                alert.state.value,
                alert.title,
                alert.message,
                alert.platform,
                alert.connection_id,
                alert.action_url,
                now,
            )
            if row is None:
                return None
            for d in deliveries:
                await conn.execute(
                    f"""INSERT INTO {s}.deliveries
                          (id, notification_id, tenant_id, alert_id, channel, target, subject,
                           body, next_attempt_at, created_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                        ON CONFLICT (notification_id, channel, target) DO NOTHING""",  # noqa: S608
                    uuid.uuid4(),
                    row["id"],
                    tenant_id,
                    alert.alert_id,
                    d.channel.value,
                    d.target,
                    d.subject,
                    d.body,
                    now,
                )
            return _notification(row)

    @_unavailable
    async def list_notifications(
        self, tenant_id: str, unread_only: bool, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Notification], int]:
        s = self._s
        where = ["tenant_id = $1"]
        args: list[Any] = [tenant_id]
        if unread_only:
            where.append("read_at IS NULL")
        if after is not None:
            args += [after[0], uuid.UUID(after[1])]
            where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self._pool.fetch(
            f"SELECT * FROM {s}.notifications WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        unread = await self._pool.fetchval(
            f"SELECT count(*) FROM {s}.notifications WHERE tenant_id = $1 AND read_at IS NULL",  # noqa: S608
            tenant_id,
        )
        return [_notification(r) for r in rows], int(unread)

    @_unavailable
    async def mark_read(
        self, tenant_id: str, ids: Sequence[str], all_unread: bool, by: str, now: datetime
    ) -> int:
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            if all_unread:
                result = await conn.execute(
                    f"""UPDATE {s}.notifications SET read_at = $2, read_by = $3
                         WHERE tenant_id = $1 AND read_at IS NULL""",  # noqa: S608
                    tenant_id,
                    now,
                    by,
                )
                return int(result.split()[-1])
            wanted = [uuid.UUID(i) for i in ids]
            found = await conn.fetchval(
                f"""SELECT count(*) FROM {s}.notifications
                     WHERE tenant_id = $1 AND id = ANY($2::uuid[])""",  # noqa: S608
                tenant_id,
                wanted,
            )
            if found != len(set(wanted)):
                raise LookupError("notification")
            result = await conn.execute(
                f"""UPDATE {s}.notifications SET read_at = $3, read_by = $4
                     WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND read_at IS NULL""",  # noqa: S608
                tenant_id,
                wanted,
                now,
                by,
            )
            return int(result.split()[-1])

    @_unavailable
    async def claim_deliveries(self, now: datetime, limit: int, lease: timedelta) -> list[Delivery]:
        s = self._s
        rows = await self._pool.fetch(
            f"""WITH due AS (
                    SELECT id FROM {s}.deliveries
                     WHERE state = 'pending' AND next_attempt_at <= $1
                     ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                UPDATE {s}.deliveries d
                   SET next_attempt_at = $1 + $3::interval, attempts = d.attempts + 1
                  FROM due WHERE d.id = due.id
             RETURNING d.*""",  # noqa: S608
            now,
            limit,
            lease,
        )
        return [
            Delivery(
                id=str(r["id"]),
                tenant_id=r["tenant_id"],
                alert_id=r["alert_id"],
                channel=Channel(r["channel"]),
                target=r["target"],
                subject=r["subject"],
                body=r["body"],
                attempts=r["attempts"],
            )
            for r in rows
        ]

    @_unavailable
    async def finish_delivery(
        self,
        delivery_id: str,
        *,
        sent: bool,
        error: str,
        retry_at: datetime | None,
        now: datetime,
    ) -> None:
        state = "sent" if sent else ("pending" if retry_at is not None else "failed")
        await self._pool.execute(
            f"""UPDATE {self._s}.deliveries
                   SET state = $2, last_error = $3,
                       sent_at = CASE WHEN $2 = 'sent' THEN $5::timestamptz END,
                       next_attempt_at = coalesce($4, next_attempt_at)
                 WHERE id = $1""",  # noqa: S608
            uuid.UUID(delivery_id),
            state,
            error[:500],
            retry_at,
            now,
        )

    @_unavailable
    async def sent_since(self, tenant_id: str, channel: Channel, since: datetime) -> int:
        count = await self._pool.fetchval(
            f"""SELECT count(*) FROM {self._s}.deliveries
                 WHERE tenant_id = $1 AND channel = $2 AND state = 'sent' AND sent_at >= $3""",  # noqa: S608
            tenant_id,
            channel.value,
            since,
        )
        return int(count)

    @_unavailable
    async def deliveries_of(self, alert_id: str) -> list[asyncpg.Record]:
        """Every delivery of an alert (for operators and tests)."""
        return list(
            await self._pool.fetch(
                f"SELECT * FROM {self._s}.deliveries WHERE alert_id = $1 ORDER BY created_at",  # noqa: S608
                alert_id,
            )
        )

    @_unavailable
    async def routes(self, tenant_id: str) -> NotificationRoutes:
        row = await self._pool.fetchrow(
            f"SELECT * FROM {self._s}.notification_routes WHERE tenant_id = $1",  # noqa: S608
            tenant_id,
        )
        if row is None:
            return NotificationRoutes(tenant_id)
        return NotificationRoutes(
            tenant_id=tenant_id,
            emails=tuple(row["emails"]),
            slack_webhook_url=row["slack_webhook_url"],
            min_severity=Severity(row["min_severity"]),
        )

    @_unavailable
    async def set_routes(self, routes: NotificationRoutes) -> None:
        await self._pool.execute(
            f"""INSERT INTO {self._s}.notification_routes
                  (tenant_id, emails, slack_webhook_url, min_severity, updated_at)
                VALUES ($1, $2, $3, $4, now())
                ON CONFLICT (tenant_id) DO UPDATE SET
                  emails = EXCLUDED.emails, slack_webhook_url = EXCLUDED.slack_webhook_url,
                  min_severity = EXCLUDED.min_severity, updated_at = now()""",  # noqa: S608
            routes.tenant_id,
            list(routes.emails),
            routes.slack_webhook_url,
            int(routes.min_severity),
        )

    # ------------------------------------------------------------------ dashboard

    @_unavailable
    async def call_buckets(self, query: DashboardQuery, *, sources: Sequence[str]) -> list[Bucket]:
        fine = query.resolution < timedelta(hours=1) and query.timeframe <= timedelta(days=2)
        args: list[Any] = [
            query.resolution,
            ORIGIN,
            "minute" if fine else "hour",
            align(query.start, timedelta(minutes=1) if fine else timedelta(hours=1)),
            query.now,
            list(sources),
        ]
        where = [
            "granularity = $3",
            "bucket >= $4",
            "bucket <= $5",
            "source = ANY($6::text[])",
        ]
        if query.tenant_id:
            args.append(query.tenant_id)
            where.append(f"tenant_id = ${len(args)}")
        if query.platforms:
            args.append(list(query.platforms))
            where.append(f"platform = ANY(${len(args)}::text[])")
        s = self._s
        rows = await self._pool.fetch(
            f"""SELECT date_bin($1::interval, bucket, $2) AS start, platform,
                       sum(requests)::int AS requests, sum(successes)::int AS successes,
                       sum(unauthorized)::int AS unauthorized,
                       sum(rate_limited)::int AS rate_limited,
                       sum(server_errors)::int AS server_errors,
                       sum(timeouts)::int AS timeouts,
                       sum(other_client_errors)::int AS other_client_errors,
                       sum(jobs_published)::int AS jobs_published,
                       sum(jobs_failed)::int AS jobs_failed,
                       {s}.sum_counts(latency_hist) AS latency_hist,
                       {s}.sum_counts(lag_hist) AS lag_hist
                  FROM {s}.call_rollups
                 WHERE {" AND ".join(where)}
                 GROUP BY 1, 2""",  # noqa: S608
            *args,
        )
        return [
            Bucket(
                start=r["start"],
                platform=r["platform"],
                requests=r["requests"],
                successes=r["successes"],
                unauthorized=r["unauthorized"],
                rate_limited=r["rate_limited"],
                server_errors=r["server_errors"],
                timeouts=r["timeouts"],
                other_client_errors=r["other_client_errors"],
                jobs_published=r["jobs_published"],
                jobs_failed=r["jobs_failed"],
                latency_hist=tuple(r["latency_hist"] or ()),
                lag_hist=tuple(r["lag_hist"] or ()),
            )
            for r in rows
        ]

    @_unavailable
    async def snapshot_series(
        self, query: DashboardQuery, figures: Sequence[str]
    ) -> Mapping[str, list[tuple[datetime, float]]]:
        rows = await self._pool.fetch(
            f"""SELECT DISTINCT ON (figure, start) figure,
                       date_bin($1::interval, bucket, $2) AS start, value
                  FROM {self._s}.figure_snapshots
                 WHERE tenant_id = $3 AND figure = ANY($4::text[])
                   AND bucket >= $5 AND bucket <= $6
                 ORDER BY figure, start, bucket DESC""",  # noqa: S608
            query.resolution,
            ORIGIN,
            query.tenant_id,
            list(figures),
            query.start,
            query.now,
        )
        out: dict[str, list[tuple[datetime, float]]] = {}
        for r in rows:
            out.setdefault(r["figure"], []).append((r["start"], float(r["value"])))
        return out

    async def _token_counts(
        self, conn: Conn | asyncpg.Pool, tenant_id: str | None, now: datetime
    ) -> list[asyncpg.Record]:
        where = "status <> 'disconnected'"
        args: list[Any] = [now + timedelta(days=7), now + timedelta(hours=24), now]
        if tenant_id is not None:
            args.append(tenant_id)
            where += f" AND tenant_id = ${len(args)}"
        return list(
            await conn.fetch(
                f"""SELECT tenant_id,
                           count(*) AS total,
                           count(*) FILTER (WHERE status = 'healthy') AS healthy,
                           count(*) FILTER (WHERE next_refresh_at IS NULL AND expires_at < $1
                                            AND expires_at > $3) AS expiring_7d,
                           count(*) FILTER (WHERE next_refresh_at IS NULL AND expires_at < $2
                                            AND expires_at > $3) AS expiring_24h,
                           count(*) FILTER (WHERE status = 'attention') AS attention,
                           count(*) FILTER (WHERE status = 'revoked') AS revoked
                      FROM {self._s}.connection_watch
                     WHERE {where}
                     GROUP BY tenant_id""",  # noqa: S608
                *args,
            )
        )

    @_unavailable
    async def token_figures(self, tenant_id: str, now: datetime) -> Mapping[str, float]:
        if not tenant_id:
            # All tenants: the latest snapshot, not a scan of every connection per call.
            rows = await self._pool.fetch(
                f"""SELECT DISTINCT ON (figure) figure, value FROM {self._s}.figure_snapshots
                     WHERE tenant_id = '' AND starts_with(figure, 'token.')
                     ORDER BY figure, bucket DESC""",  # noqa: S608
            )
            return {r["figure"].removeprefix("token."): float(r["value"]) for r in rows}
        rows = await self._token_counts(self._pool, tenant_id, now)
        if not rows:
            return {}
        return {k: float(v) for k, v in rows[0].items() if k != "tenant_id"}

    @_unavailable
    async def queue_figures(self, tenant_id: str) -> Mapping[str, float]:
        args: list[Any] = []
        where = "state IN ('retrying', 'dead_lettered')"
        if tenant_id:
            args.append(tenant_id)
            where += " AND tenant_id = $1"
        row = await self._pool.fetchrow(
            f"""SELECT count(*) FILTER (WHERE state = 'retrying') AS pending,
                       count(*) FILTER (WHERE state = 'dead_lettered') AS dlq_size
                  FROM {self._s}.publish_jobs WHERE {where}""",  # noqa: S608
            *args,
        )
        assert row is not None
        return {"pending": float(row["pending"]), "dlq_size": float(row["dlq_size"])}

    @_unavailable
    async def take_snapshots(self, now: datetime, every: timedelta) -> int:
        """Write this bucket's token and queue figures per tenant and for all tenants."""
        bucket = align(now, every)
        s = self._s
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await self._token_counts(conn, None, now)
            queue = await conn.fetch(
                f"""SELECT tenant_id,
                           count(*) FILTER (WHERE state = 'retrying') AS pending,
                           count(*) FILTER (WHERE state = 'dead_lettered') AS dlq_size
                      FROM {s}.publish_jobs WHERE state IN ('retrying', 'dead_lettered')
                     GROUP BY tenant_id""",  # noqa: S608
            )
            values: list[tuple[datetime, str, str, float]] = []
            totals: dict[str, float] = {}
            for r in rows:
                for name in (
                    "total",
                    "healthy",
                    "expiring_7d",
                    "expiring_24h",
                    "attention",
                    "revoked",
                ):
                    values.append((bucket, r["tenant_id"], f"token.{name}", float(r[name])))
                    totals[f"token.{name}"] = totals.get(f"token.{name}", 0.0) + float(r[name])
            for r in queue:
                for name in ("pending", "dlq_size"):
                    values.append((bucket, r["tenant_id"], f"queue.{name}", float(r[name])))
                    totals[f"queue.{name}"] = totals.get(f"queue.{name}", 0.0) + float(r[name])
            for name in (
                *(
                    f"token.{n}"
                    for n in (
                        "total",
                        "healthy",
                        "expiring_7d",
                        "expiring_24h",
                        "attention",
                        "revoked",
                    )
                ),
                "queue.pending",
                "queue.dlq_size",
            ):
                values.append((bucket, "", name, totals.get(name, 0.0)))
            await conn.executemany(
                f"""INSERT INTO {s}.figure_snapshots (bucket, tenant_id, figure, value)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (figure, tenant_id, bucket) DO UPDATE SET value = EXCLUDED.value""",  # noqa: S608
                values,
            )
            return len(values)

    # ------------------------------------------------------------------ detectors

    @_unavailable
    async def call_totals(self, since: datetime) -> list[CallTotals]:
        rows = await self._pool.fetch(
            f"""SELECT tenant_id, platform, sum(requests)::int AS requests,
                       sum(requests - successes)::int AS failures,
                       sum(passing_failures)::int AS passing
                  FROM {self._s}.call_rollups
                 WHERE granularity = 'minute' AND bucket >= $1
                   AND source IN ('publish', 'check')
                 GROUP BY tenant_id, platform""",  # noqa: S608
            since,
        )
        return [
            CallTotals(r["tenant_id"], r["platform"], r["requests"], r["failures"], r["passing"])
            for r in rows
        ]

    @_unavailable
    async def prune(self, now: datetime, keep: timedelta) -> int:
        """Drop what is past its retention; returns rows deleted."""
        s = self._s
        deleted = 0
        day = timedelta(days=1)
        statements = (
            (f"DELETE FROM {s}.call_rollups WHERE granularity = 'minute' AND bucket < $1", 2 * day),  # noqa: S608
            (f"DELETE FROM {s}.call_rollups WHERE granularity = 'hour' AND bucket < $1", keep),  # noqa: S608
            (f"DELETE FROM {s}.health_checks WHERE checked_at < $1", keep),  # noqa: S608
            (f"DELETE FROM {s}.figure_snapshots WHERE bucket < $1", keep),  # noqa: S608
            (f"DELETE FROM {s}.processed_messages WHERE processed_at < $1", 7 * day),  # noqa: S608
            (
                f"DELETE FROM {s}.publish_jobs WHERE updated_at < $1 "  # noqa: S608
                "AND state NOT IN ('retrying', 'dead_lettered')",
                2 * day,
            ),
        )
        for sql, age in statements:
            cutoff = now - age
            result = await self._pool.execute(sql, cutoff)
            deleted += int(result.split()[-1])
        return deleted
