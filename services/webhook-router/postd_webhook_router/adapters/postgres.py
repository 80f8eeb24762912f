"""All SQL of the webhook router (schema ``webhooks``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from postd_webhook_router.domain.model import (
    InboundSource,
    PendingInbound,
    StoredInbound,
)
from postd_webhook_router.domain.outbound import DueDelivery, EndpointHealth
from postd_webhook_router.ports import (
    OutboxMessage,
    ProcessedInbound,
    SendResult,
    StoreUnavailable,
)

S = "webhooks"

_INSERT_COLUMNS = (
    "id, platform, http_method, verdict, verdict_reason, platform_event_id, dedupe_key, "
    "source_id, headers, body, body_sha256, body_size, remote_addr, received_at, state, "
    "next_attempt_at, tenant_id, connection_id, tenant_ids"
)

_STORE_DEDUPED = f"""
WITH dup AS (
    UPDATE {S}.inbound_events
       SET duplicate_count = duplicate_count + 1, last_duplicate_at = now()
     WHERE platform = $2 AND dedupe_key = $20
    RETURNING id
), ins AS (
    INSERT INTO {S}.inbound_events ({_INSERT_COLUMNS})
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19
     WHERE NOT EXISTS (SELECT 1 FROM dup)
    ON CONFLICT (platform, dedupe_key) WHERE dedupe_key IS NOT NULL
    DO UPDATE SET duplicate_count = {S}.inbound_events.duplicate_count + 1,
                  last_duplicate_at = now()
    RETURNING id, (xmax = 0) AS inserted
)
SELECT id, false AS inserted FROM dup
UNION ALL
SELECT id, inserted FROM ins
"""  # noqa: S608 - schema name is a constant

_STORE_PLAIN = f"""
INSERT INTO {S}.inbound_events ({_INSERT_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
"""  # noqa: S608

_CLAIM = f"""
UPDATE {S}.inbound_events e
   SET next_attempt_at = $2::timestamptz + make_interval(secs => $3)
  FROM (SELECT id, source_id FROM {S}.inbound_events
         WHERE state IN ('pending', 'retrying') AND next_attempt_at <= $2
         ORDER BY next_attempt_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED) due
  LEFT JOIN {S}.inbound_sources src ON src.id = due.source_id
 WHERE e.id = due.id
RETURNING e.id, e.platform, e.body, e.headers, e.received_at, e.platform_event_id,
          e.attempts, e.replay_count, src.id AS src_id, src.tenant_id AS src_tenant,
          src.connection_id AS src_connection, src.platform AS src_platform
"""  # noqa: S608


# Set-based processing writes: one statement per batch, the rows as parallel arrays
# (jsonb values as JSON text; text[] values per row as a JSON array of strings).
_INSERT_NORMALIZED = f"""
INSERT INTO {S}.normalized_events (event_id, raw_event_id, seq, tenant_id, connection_id,
       platform, type, external_account_id, occurred_at, payload, platform_event_id)
SELECT u.event_id, u.raw_event_id, u.seq, u.tenant_id, u.connection_id, u.platform, u.type,
       u.external_account_id, u.occurred_at, u.payload::jsonb, u.platform_event_id
  FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[])
       WITH ORDINALITY AS u(event_id, raw_event_id, seq, tenant_id, connection_id, platform,
                            type, external_account_id, occurred_at, payload,
                            platform_event_id, n)
 ORDER BY u.n
ON CONFLICT (event_id) DO NOTHING
"""  # noqa: S608

_INSERT_OUTBOX = f"""
INSERT INTO {S}.outbox (topic, key, value, headers, raw_event_id)
SELECT u.topic, u.key, u.value, u.headers::jsonb, u.raw_event_id
  FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::uuid[])
       WITH ORDINALITY AS u(topic, key, value, headers, raw_event_id, n)
 ORDER BY u.n
"""  # noqa: S608

_MARK_EMITTED = f"""
UPDATE {S}.inbound_events e
   SET state = 'emitted', next_attempt_at = NULL, last_error = '',
       types = ARRAY(SELECT jsonb_array_elements_text(u.types::jsonb)),
       external_account_id = u.external_account_id,
       tenant_ids = ARRAY(SELECT jsonb_array_elements_text(u.tenant_ids::jsonb)),
       tenant_id = u.tenant_id, connection_id = u.connection_id,
       routed = CASE WHEN jsonb_array_length(u.tenant_ids::jsonb) > 0 THEN 'routed'
                     ELSE 'unrouted' END
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
       AS u(id, types, external_account_id, tenant_ids, tenant_id, connection_id)
 WHERE e.id = u.id
"""  # noqa: S608


def _json_text(value: Any) -> str:
    """JSON as the pool's jsonb codec writes it (postd_common.db)."""
    return json.dumps(value, separators=(",", ":"), default=str)


def _headers_json(headers: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[k, v] for k, v in headers]


def _headers_of(raw: Any) -> list[tuple[str, str]]:
    if isinstance(raw, str):
        raw = json.loads(raw)
    return [(str(k), str(v)) for k, v in raw or []]


def _kafka_headers_json(headers: Sequence[tuple[str, bytes]]) -> list[list[str]]:
    return [[k, v.decode("latin-1")] for k, v in headers]


@dataclass(frozen=True)
class EventFilter:
    tenant_id: str = ""
    platform: str = ""
    verdicts: Sequence[str] = ()
    types: Sequence[str] = ()
    connection_id: str = ""
    received_from: datetime | None = None
    received_to: datetime | None = None


# Server-side failures of a statement (as opposed to a lost connection): in a group
# commit they are narrowed down to the rows that cause them.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)


@dataclass(frozen=True)
class GroupCommit:
    """How inbound deliveries are committed.

    ``max_rows`` rows at most share one transaction (1: a transaction per delivery);
    ``max_concurrent`` transactions at most are in flight. No row waits for a timer:
    a batch is written as soon as a transaction slot is free, so under light load
    each delivery gets its own commit, and under heavy load the rows that arrived
    during one commit share the next. One slot is usually best: every commit waits
    on the same WAL flushes, so concurrent small commits only queue behind each other
    (on a 2-core machine with a shared disk, 2 and 4 slots measured slower than 1).
    """

    max_rows: int = 1
    max_concurrent: int = 1


_Waiting = tuple[list[Any], asyncio.Future[tuple[str, bool]]]


class _InboundCommits:
    """Group commit of ``store_inbound``: each caller is answered only after the
    transaction holding its row committed (or with the error that ended it).

    A batch is one pipelined round trip (asyncpg ``fetchmany``: every row's dedupe
    statement, in order, then one Sync, so the batch commits or fails as a whole).
    Rows are sorted by dedupe key so that concurrent batches lock keys in one order
    and cannot deadlock each other; within a batch a later copy of a key sees the
    earlier one, exactly as consecutive single commits would. A lost connection fails
    every caller of the batch (StoreUnavailable: the gateway answers 503 and the
    platform retries; nothing was acknowledged). An error PostgreSQL raised for a
    statement rolls the batch back, and its rows are then written one per
    transaction, so one bad row fails alone.
    """

    def __init__(self, store: PostgresStore, policy: GroupCommit) -> None:
        self._store = store
        self._policy = policy
        self._queue: list[_Waiting] = []
        self._writers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def store(self, args: list[Any]) -> tuple[str, bool]:
        future: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        if self._writers < self._policy.max_concurrent:
            self._writers += 1
            # The writer takes its batch when it first runs: every row queued in this
            # turn of the event loop joins it.
            task = asyncio.create_task(self._write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _write(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._policy.max_rows]
                del self._queue[: self._policy.max_rows]
                await self._commit(batch)
        finally:
            self._writers -= 1

    async def _commit(self, batch: list[_Waiting]) -> None:
        ordered = sorted(batch, key=lambda item: (item[0][1], item[0][6] or ""))
        try:
            results = await self._store.insert_batch([args for args, _ in ordered])
        except (StoreUnavailable, *_CONNECTION_ERRORS) as exc:
            error = exc if isinstance(exc, StoreUnavailable) else _unavailable(exc)
            for _, future in ordered:
                if not future.done():
                    future.set_exception(error)
            return
        except asyncpg.PostgresError:
            await asyncio.gather(*(self._alone(args, future) for args, future in ordered))
            return
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _, future in ordered:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, future in ordered:
                future.cancel()
            raise
        for (_, future), result in zip(ordered, results, strict=True):
            if not future.done():  # the caller may have given up (deadline)
                future.set_result(result)

    async def _alone(self, args: list[Any], future: asyncio.Future[tuple[str, bool]]) -> None:
        try:
            result = await self._store.insert_one(args)
        except Exception as exc:  # noqa: BLE001 - handed to the caller it belongs to
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    error = StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}")
    error.__cause__ = exc
    return error


class PostgresStore:
    """The webhook router's PostgreSQL adapter. Every method raises
    :class:`StoreUnavailable` when PostgreSQL cannot be reached."""

    def __init__(self, pool: asyncpg.Pool, group_commit: GroupCommit | None = None) -> None:
        self._pool = pool
        policy = group_commit or GroupCommit()
        self._commits = _InboundCommits(self, policy) if policy.max_rows > 1 else None

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def _background(self) -> AsyncIterator[Any]:
        """A transaction of processing or relay work, committed without waiting for
        its WAL flush (``synchronous_commit`` off for this transaction only).

        Safe because everything such a transaction records can be done again: a
        crash may lose its last few hundred milliseconds, and then a lease runs out
        and the delivery is processed again into the same normalised event ids, or
        an outbox row is relayed twice (consumers already dedupe on the event id;
        the relay is at-least-once anyway). What it must not do is delay the
        commits that acknowledge webhooks, which all wait on the same WAL flushes.
        Inbound deliveries are never stored this way.
        """
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO off")
            yield conn

    # ------------------------------------------------------------------ sources

    async def find_source(self, platform: str, key_hash: bytes) -> InboundSource | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT id, tenant_id, connection_id, platform FROM {S}.inbound_sources "  # noqa: S608
                "WHERE platform = $1 AND key_hash = $2 AND revoked_at IS NULL",
                platform,
                key_hash,
            )
        if row is None:
            return None
        return InboundSource(
            str(row["id"]), row["tenant_id"], row["connection_id"], row["platform"]
        )

    async def create_source(self, source: InboundSource, key_hash: bytes, key_hint: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                f"INSERT INTO {S}.inbound_sources (id, tenant_id, connection_id, platform, "  # noqa: S608
                "key_hash, key_hint) VALUES ($1, $2, $3, $4, $5, $6)",
                source.id,
                source.tenant_id,
                source.connection_id,
                source.platform,
                key_hash,
                key_hint,
            )

    async def list_sources(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT id, tenant_id, connection_id, platform, key_hint, created_at "  # noqa: S608
                f"FROM {S}.inbound_sources WHERE tenant_id = $1 AND revoked_at IS NULL "
                "ORDER BY created_at DESC",
                tenant_id,
            )
        return [dict(r) for r in rows]

    async def revoke_source(self, tenant_id: str, source_id: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(
                f"UPDATE {S}.inbound_sources SET revoked_at = now() "  # noqa: S608
                "WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                tenant_id,
                source_id,
            )
        return bool(status.endswith(" 1"))

    # ------------------------------------------------------------------ ingest

    async def store_inbound(self, event: StoredInbound) -> tuple[str, bool]:
        source = event.source
        args: list[Any] = [
            event.id,
            event.platform,
            event.method,
            event.verdict.value,
            event.verdict_reason,
            event.platform_event_id,
            event.dedupe_key,
            source.id if source else None,
            _headers_json(event.headers),
            event.body,
            event.body_sha256,
            event.body_size,
            event.remote_addr,
            event.received_at,
            event.state.value,
            (event.due_at or event.received_at) if event.state.value == "pending" else None,
            source.tenant_id if source else "",
            source.connection_id if source else "",
            [source.tenant_id] if source else [],
            event.previous_dedupe_key,
        ]
        if self._commits is not None:
            return await self._commits.store(args)
        return await self.insert_one(args)

    async def insert_one(self, args: Sequence[Any]) -> tuple[str, bool]:
        """One delivery in its own transaction (``store_inbound``'s arguments)."""
        async with self._conn() as conn:
            if args[6] is None:  # no dedupe key: a rejection
                await conn.execute(_STORE_PLAIN, *args[:19])
                return str(args[0]), True
            row = await conn.fetchrow(_STORE_DEDUPED, *args)
        assert row is not None
        return str(row["id"]), bool(row["inserted"])

    async def insert_batch(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, bool]]:
        """Many deliveries in one transaction, in order; all or none are stored."""
        async with self._conn() as conn:
            records = await conn.fetchmany(_STORE_DEDUPED, rows)
        # One result row per statement: from the previous-window update or the insert.
        return [(str(r["id"]), bool(r["inserted"])) for r in records]

    # ------------------------------------------------------------------ processing

    async def claim_pending(
        self, limit: int, now: datetime, lease_seconds: float
    ) -> list[PendingInbound]:
        async with self._background() as conn:
            rows = await conn.fetch(_CLAIM, limit, now, lease_seconds)
        claimed = []
        for r in rows:
            source = (
                InboundSource(
                    str(r["src_id"]), r["src_tenant"], r["src_connection"], r["src_platform"]
                )
                if r["src_id"] is not None
                else None
            )
            claimed.append(
                PendingInbound(
                    id=str(r["id"]),
                    platform=r["platform"],
                    body=bytes(r["body"] or b""),
                    headers=_headers_of(r["headers"]),
                    received_at=r["received_at"],
                    platform_event_id=r["platform_event_id"],
                    source=source,
                    attempts=r["attempts"],
                    replay_count=r["replay_count"],
                )
            )
        return claimed

    async def release_pending(self, ids: Sequence[str], now: datetime) -> None:
        async with self._background() as conn:
            await conn.execute(
                f"""UPDATE {S}.inbound_events SET next_attempt_at = $2
                     WHERE id = ANY($1::uuid[]) AND state IN ('pending', 'retrying')
                       AND next_attempt_at > $2""",  # noqa: S608
                list(ids),
                now,
            )

    async def complete(self, results: Sequence[ProcessedInbound]) -> None:
        """A processed batch in one transaction: three statements whatever its size
        (the rows go as arrays: a statement per row cost PostgreSQL an executor run
        each, and the relay more round trips)."""
        normalized = [n for r in results for n in r.normalized]
        messages = [(m, r.raw_id) for r in results for m in r.messages]
        async with self._background() as conn:
            if normalized:
                await conn.execute(
                    _INSERT_NORMALIZED,
                    [n["event_id"] for n in normalized],
                    [n["raw_event_id"] for n in normalized],
                    [n["seq"] for n in normalized],
                    [n["tenant_id"] for n in normalized],
                    [n["connection_id"] for n in normalized],
                    [n["platform"] for n in normalized],
                    [n["type"] for n in normalized],
                    [n["external_account_id"] for n in normalized],
                    [n["occurred_at"] for n in normalized],
                    [_json_text(n["payload"]) for n in normalized],
                    [n["platform_event_id"] for n in normalized],
                )
            await self._enqueue(conn, messages)
            await conn.execute(
                _MARK_EMITTED,
                [r.raw_id for r in results],
                [_json_text(list(r.types)) for r in results],
                [r.external_account_id for r in results],
                [_json_text(sorted({rt.tenant_id for rt in r.routes})) for r in results],
                [r.routes[0].tenant_id if r.routes else "" for r in results],
                [r.routes[0].connection_id if r.routes else "" for r in results],
            )

    async def _enqueue(
        self, conn: asyncpg.Connection, messages: Sequence[tuple[OutboxMessage, str | None]]
    ) -> None:
        """Outbox rows in one statement, ids (so relay order) in the order given."""
        if not messages:
            return
        await conn.execute(
            _INSERT_OUTBOX,
            [m.topic for m, _ in messages],
            [m.key for m, _ in messages],
            [m.value for m, _ in messages],
            [_json_text(_kafka_headers_json(m.headers)) for m, _ in messages],
            [raw for _, raw in messages],
        )

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Put messages in the outbox on their own (alerts, replays)."""
        async with self._conn() as conn:
            await self._enqueue(conn, [(m, None) for m in messages])

    async def fail(
        self,
        raw_id: str,
        error: str,
        next_attempt_at: datetime | None,
        dead_letter: OutboxMessage | None,
    ) -> None:
        async with self._background() as conn:
            await conn.execute(
                f"UPDATE {S}.inbound_events SET attempts = attempts + 1, last_error = $2, "  # noqa: S608
                "next_attempt_at = $3, state = $4 WHERE id = $1",
                raw_id,
                error,
                next_attempt_at,
                "retrying" if dead_letter is None else "dead_lettered",
            )
            if dead_letter is not None:
                await self._enqueue(conn, [(dead_letter, raw_id)])

    async def relay_outbox(
        self, limit: int, publish: Callable[[Sequence[OutboxMessage]], Awaitable[None]]
    ) -> int:
        async with self._background() as conn:
            rows = await conn.fetch(
                f"SELECT id, topic, key, value, headers, raw_event_id FROM {S}.outbox "  # noqa: S608
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            if not rows:
                return 0
            messages = [
                OutboxMessage(
                    r["topic"],
                    r["key"],
                    bytes(r["value"]),
                    [(k, v.encode("latin-1")) for k, v in _headers_of(r["headers"])],
                )
                for r in rows
            ]
            await publish(messages)
            await conn.execute(
                f"DELETE FROM {S}.outbox WHERE id = ANY($1::bigint[])",  # noqa: S608
                [r["id"] for r in rows],
            )
            raw_ids = list({r["raw_event_id"] for r in rows if r["raw_event_id"] is not None})
            if raw_ids:
                await conn.execute(
                    f"UPDATE {S}.inbound_events SET emitted_at = now() "  # noqa: S608
                    "WHERE id = ANY($1::uuid[])",
                    raw_ids,
                )
        return len(rows)

    # ------------------------------------------------------------------ queries

    async def list_events(
        self, where: EventFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[dict[str, Any]]:
        clauses, args = self._event_where(where)
        if after is not None:
            args += [after[0], after[1]]
            clauses.append(f"(received_at, id) < (${len(args) - 1}, ${len(args)}::uuid)")
        args.append(limit)
        sql = (
            f"SELECT * FROM {S}.inbound_events WHERE {' AND '.join(clauses) or 'true'} "  # noqa: S608
            f"ORDER BY received_at DESC, id DESC LIMIT ${len(args)}"
        )
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [dict(r) for r in rows]

    @staticmethod
    def _event_where(where: EventFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if where.tenant_id:
            add("? = ANY(tenant_ids)", where.tenant_id)
        if where.platform:
            add("platform = ?", where.platform)
        if where.verdicts:
            add("verdict = ANY(?::text[])", list(where.verdicts))
        if where.types:
            add("types && ?::text[]", list(where.types))
        if where.connection_id:
            add("connection_id = ?", where.connection_id)
        if where.received_from is not None:
            add("received_at >= ?", where.received_from)
        if where.received_to is not None:
            add("received_at < ?", where.received_to)
        return clauses, args

    async def get_event(self, tenant_id: str, event_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            try:
                row = await conn.fetchrow(
                    f"SELECT * FROM {S}.inbound_events WHERE id = $1::uuid "  # noqa: S608
                    "AND ($2 = '' OR $2 = ANY(tenant_ids))",
                    event_id,
                    tenant_id,
                )
            except asyncpg.exceptions.DataError:
                return None
        return dict(row) if row is not None else None

    async def replay_records(
        self,
        tenant_id: str,
        event_ids: Sequence[str],
        where: EventFilter | None,
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Normalised events to re-emit, and the stored ids they come from. With
        ``event_ids``, only this tenant's accepted deliveries (missing ids are simply
        absent from the result)."""
        async with self._conn() as conn:
            if event_ids:
                raw = await conn.fetch(
                    f"SELECT id FROM {S}.inbound_events WHERE id = ANY($1::uuid[]) "  # noqa: S608
                    "AND verdict = 'accepted' AND ($2 = '' OR $2 = ANY(tenant_ids))",
                    list(event_ids),
                    tenant_id,
                )
            else:
                assert where is not None
                clauses, args = self._event_where(where)
                clauses.append("verdict = 'accepted'")
                raw = await conn.fetch(
                    f"SELECT id FROM {S}.inbound_events WHERE {' AND '.join(clauses)}",  # noqa: S608
                    *args,
                )
            ids = [r["id"] for r in raw]
            if not ids:
                return [], []
            rows = await conn.fetch(
                f"""SELECT n.*, e.received_at, e.replay_count + 1 AS replay_count
                      FROM {S}.normalized_events n JOIN {S}.inbound_events e
                        ON e.id = n.raw_event_id
                     WHERE n.raw_event_id = ANY($1::uuid[])
                       AND ($2 = '' OR n.tenant_id = $2)
                       AND (cardinality($3::text[]) = 0 OR n.type = ANY($3::text[]))
                     ORDER BY e.received_at, n.seq""",  # noqa: S608
                ids,
                tenant_id,
                list(where.types) if where is not None else [],
            )
        records = []
        for r in rows:
            record = dict(r)
            record["event_id"] = str(record["event_id"])
            record["raw_event_id"] = str(record["raw_event_id"])
            records.append(record)
        return [str(i) for i in ids], records

    async def mark_replayed(
        self, raw_ids: Sequence[str], messages: Sequence[OutboxMessage]
    ) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                f"UPDATE {S}.inbound_events SET replay_count = replay_count + 1 "  # noqa: S608
                "WHERE id = ANY($1::uuid[])",
                list(raw_ids),
            )
            await self._enqueue(conn, [(m, None) for m in messages])

    # ------------------------------------------------------------------ endpoints

    _ENDPOINT_FIELDS = frozenset(
        {
            "url",
            "description",
            "event_types",
            "state",
            "disabled_reason",
            "consecutive_failures",
            "failing_since",
            "secret_hint",
            "secret_generation",
            "previous_secret_expires_at",
        }
    )

    async def insert_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO {S}.endpoints (id, tenant_id, url, description, event_types, "  # noqa: S608
                "secret_hint, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                endpoint["id"],
                endpoint["tenant_id"],
                endpoint["url"],
                endpoint["description"],
                endpoint["event_types"],
                endpoint["secret_hint"],
                endpoint["created_by"],
            )
        assert row is not None
        return dict(row)

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            try:
                row = await conn.fetchrow(
                    f"SELECT * FROM {S}.endpoints WHERE tenant_id = $1 AND id = $2::uuid",  # noqa: S608
                    tenant_id,
                    endpoint_id,
                )
            except asyncpg.exceptions.DataError:
                return None
        return dict(row) if row else None

    async def list_endpoints(
        self, tenant_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT * FROM {S}.endpoints WHERE tenant_id = $1 "  # noqa: S608
                "AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid)) "
                "ORDER BY created_at DESC, id DESC LIMIT $4",
                tenant_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        return [dict(r) for r in rows]

    async def update_endpoint(
        self, tenant_id: str, endpoint_id: str, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        assert set(changes) <= self._ENDPOINT_FIELDS, set(changes) - self._ENDPOINT_FIELDS
        names = list(changes)
        sets = ", ".join(f"{n} = ${i + 3}" for i, n in enumerate(names))
        sets = f"{sets}, updated_at = now()" if sets else "updated_at = now()"
        async with self._conn() as conn:
            try:
                row = await conn.fetchrow(
                    f"UPDATE {S}.endpoints SET {sets} "  # noqa: S608 - names from an allow-list
                    "WHERE tenant_id = $1 AND id = $2::uuid RETURNING *",
                    tenant_id,
                    endpoint_id,
                    *[changes[n] for n in names],
                )
            except asyncpg.exceptions.DataError:
                return None
        return dict(row) if row else None

    async def delete_endpoint(self, tenant_id: str, endpoint_id: str) -> bool:
        async with self._conn() as conn:
            try:
                status = await conn.execute(
                    f"DELETE FROM {S}.endpoints WHERE tenant_id = $1 AND id = $2::uuid",  # noqa: S608
                    tenant_id,
                    endpoint_id,
                )
            except asyncpg.exceptions.DataError:
                return False
        return bool(status == "DELETE 1")

    async def create_deliveries(
        self, tenant_id: str, event_type: str, source_event_id: str, payload: bytes
    ) -> int:
        async with self._conn() as conn:
            status = await conn.execute(
                f"""INSERT INTO {S}.deliveries (id, tenant_id, endpoint_id, message_id,
                        source_event_id, event_type, payload)
                    SELECT gen_random_uuid(), tenant_id, id,
                           'msg_' || replace(gen_random_uuid()::text, '-', ''),
                           $2, $3, $4
                      FROM {S}.endpoints
                     WHERE tenant_id = $1 AND state = 'enabled'
                       AND (cardinality(event_types) = 0 OR $3 = ANY(event_types))
                    ON CONFLICT (endpoint_id, source_event_id) DO NOTHING""",  # noqa: S608
                tenant_id,
                source_event_id,
                event_type,
                payload,
            )
        return int(status.rsplit(" ", 1)[-1])

    async def claim_deliveries(
        self, limit: int, now: datetime, lease_seconds: float
    ) -> list[DueDelivery]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""UPDATE {S}.deliveries d
                       SET next_attempt_at = $2::timestamptz + make_interval(secs => $3)
                      FROM (SELECT dd.id FROM {S}.deliveries dd
                              JOIN {S}.endpoints ep ON ep.id = dd.endpoint_id
                             WHERE dd.state IN ('pending', 'retrying')
                               AND dd.next_attempt_at <= $2 AND ep.state = 'enabled'
                             ORDER BY dd.next_attempt_at
                             LIMIT $1
                             FOR UPDATE OF dd SKIP LOCKED) due,
                           {S}.endpoints e
                     WHERE d.id = due.id AND e.id = d.endpoint_id
                 RETURNING d.id, d.tenant_id, d.endpoint_id, e.url, d.message_id, d.event_type,
                           d.payload, d.attempt_count, d.created_at, e.secret_generation,
                           e.previous_secret_expires_at""",  # noqa: S608
                limit,
                now,
                lease_seconds,
            )
        return [
            DueDelivery(
                id=str(r["id"]),
                tenant_id=r["tenant_id"],
                endpoint_id=str(r["endpoint_id"]),
                url=r["url"],
                message_id=r["message_id"],
                event_type=r["event_type"],
                payload=bytes(r["payload"]),
                attempt_count=r["attempt_count"],
                created_at=r["created_at"],
                secret_generation=r["secret_generation"],
                previous_secret_expires_at=r["previous_secret_expires_at"],
            )
            for r in rows
        ]

    async def record_attempt(
        self,
        delivery: DueDelivery,
        result: SendResult,
        now: datetime,
        next_attempt_at: datetime | None,
    ) -> EndpointHealth:
        state = "succeeded" if result.ok else ("retrying" if next_attempt_at else "failed")
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                f"""UPDATE {S}.deliveries
                       SET state = $2, attempt_count = attempt_count + 1,
                           last_http_status = $3, last_error = $4, last_latency_ms = $5,
                           next_attempt_at = COALESCE($6, next_attempt_at),
                           finished_at = CASE WHEN $2 IN ('succeeded', 'failed')
                                              THEN $7::timestamptz ELSE NULL END
                     WHERE id = $1""",  # noqa: S608
                delivery.id,
                state,
                result.status,
                result.error,
                result.latency_seconds * 1000,
                next_attempt_at,
                now,
            )
            await conn.execute(
                f"INSERT INTO {S}.delivery_attempts (delivery_id, attempt, attempted_at, "  # noqa: S608
                "http_status, error, latency_ms) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT DO NOTHING",
                delivery.id,
                delivery.attempt_count + 1,
                now,
                result.status,
                result.error,
                result.latency_seconds * 1000,
            )
            if result.ok:
                row = await conn.fetchrow(
                    f"""UPDATE {S}.endpoints SET consecutive_failures = 0, failing_since = NULL,
                               last_success_at = $2
                         WHERE id = $1
                     RETURNING state, consecutive_failures, failing_since, alert_id, url""",  # noqa: S608
                    delivery.endpoint_id,
                    now,
                )
            else:
                row = await conn.fetchrow(
                    f"""UPDATE {S}.endpoints
                           SET consecutive_failures = consecutive_failures + 1,
                               failing_since = COALESCE(failing_since, $2),
                               last_failure_at = $2
                         WHERE id = $1
                     RETURNING state, consecutive_failures, failing_since, alert_id, url""",  # noqa: S608
                    delivery.endpoint_id,
                    now,
                )
        if row is None:  # deleted meanwhile
            return EndpointHealth("deleted", 0, None, None, delivery.url)
        return EndpointHealth(
            row["state"],
            row["consecutive_failures"],
            row["failing_since"],
            str(row["alert_id"]) if row["alert_id"] else None,
            row["url"],
        )

    async def fire_alert(self, endpoint_id: str, alert_id: str, message: OutboxMessage) -> bool:
        async with self._conn() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE {S}.endpoints SET alert_id = $2 WHERE id = $1 AND alert_id IS NULL",  # noqa: S608
                endpoint_id,
                alert_id,
            )
            if status != "UPDATE 1":
                return False
            await self._enqueue(conn, [(message, None)])
        return True

    async def resolve_alert(self, endpoint_id: str, alert_id: str, message: OutboxMessage) -> bool:
        async with self._conn() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE {S}.endpoints SET alert_id = NULL WHERE id = $1 AND alert_id = $2",  # noqa: S608
                endpoint_id,
                alert_id,
            )
            if status != "UPDATE 1":
                return False
            await self._enqueue(conn, [(message, None)])
        return True

    async def disable_failing(self, endpoint_id: str, reason: str, message: OutboxMessage) -> bool:
        async with self._conn() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE {S}.endpoints SET state = 'disabled_failing', disabled_reason = $2, "  # noqa: S608
                "updated_at = now() WHERE id = $1 AND state = 'enabled'",
                endpoint_id,
                reason,
            )
            if status != "UPDATE 1":
                return False
            await conn.execute(
                f"UPDATE {S}.deliveries SET state = 'failed', finished_at = now(), "  # noqa: S608
                "last_error = 'endpoint disabled' "
                "WHERE endpoint_id = $1 AND state IN ('pending', 'retrying')",
                endpoint_id,
            )
            await self._enqueue(conn, [(message, None)])
        return True

    async def list_deliveries(
        self,
        tenant_id: str,
        endpoint_id: str,
        states: Sequence[str],
        event_type: str,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {S}.deliveries
                     WHERE tenant_id = $1
                       AND ($2 = '' OR endpoint_id = $2::uuid)
                       AND (cardinality($3::text[]) = 0 OR state = ANY($3::text[]))
                       AND ($4 = '' OR event_type = $4)
                       AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
                     ORDER BY created_at DESC, id DESC LIMIT $7""",  # noqa: S608
                tenant_id,
                endpoint_id,
                list(states),
                event_type,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
        return [dict(r) for r in rows]
