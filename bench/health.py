"""Health's expiry scan at scale: 1,000,000 watched connections (loaded with COPY), and
the cost of finding the due ones when 100 are due versus 10,000, beside a full-scan
baseline of the very same query measured in the same run.

The scan is the scheduler's claim (``SELECT ... WHERE due_at <= $1 ORDER BY due_at ...
FOR UPDATE SKIP LOCKED`` on the partial index ``connection_watch_due``); the baseline
runs it with index access switched off, so PostgreSQL reads every row. Figures are
``EXPLAIN (ANALYZE, BUFFERS)`` execution times (median of several runs) and shared
buffers touched; what carries over between machines are the ratios.

``python -m bench.health`` (``BENCH_HEALTH_ROWS`` to change the million).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from postd_common import db
from postd_common.devinfra import EmbeddedPostgres, free_port
from postd_health.app import MIGRATIONS

SCHEMA = "health_bench"
ROWS = int(os.environ.get("BENCH_HEALTH_ROWS", "1000000"))
DUE_COUNTS = (100, 10_000)
RUNS = 7
TENANTS = 5_000
PLATFORMS = ("facebook", "instagram", "linkedin", "tiktok", "google_business", "pinterest")

# The scheduler's claim, read side (its UPDATE takes the rows this selects).
CLAIM = f"""SELECT connection_id, tenant_id, platform, expires_at
              FROM {SCHEMA}.connection_watch
             WHERE due_at <= $1
             ORDER BY due_at
             FOR UPDATE SKIP LOCKED"""  # noqa: S608


def records(base: datetime) -> Iterator[tuple[Any, ...]]:
    """Row i is due at base + i seconds and expires 30 minutes later: the first k
    rows are exactly those due by base + (k - 1) s."""
    for i in range(ROWS):
        due = base + timedelta(seconds=i)
        yield (
            str(uuid.UUID(int=i + 1)),
            f"tenant-{i % TENANTS:05d}",
            PLATFORMS[i % len(PLATFORMS)],
            "Acme",
            "healthy",
            due + timedelta(minutes=30),
            True,
            due,
            due,
            due + timedelta(hours=6),
            due,
        )


COLUMNS = (
    "connection_id",
    "tenant_id",
    "platform",
    "account_name",
    "status",
    "expires_at",
    "has_refresh_token",
    "token_issued_at",
    "next_refresh_at",
    "next_check_at",
    "due_at",
)


async def load(conn: asyncpg.Connection, base: datetime) -> float:
    started = asyncio.get_running_loop().time()
    batch: list[tuple[Any, ...]] = []
    for record in records(base):
        batch.append(record)
        if len(batch) == 100_000:
            await conn.copy_records_to_table(
                "connection_watch", schema_name=SCHEMA, columns=COLUMNS, records=batch
            )
            batch = []
    if batch:
        await conn.copy_records_to_table(
            "connection_watch", schema_name=SCHEMA, columns=COLUMNS, records=batch
        )
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.connection_watch")
    return asyncio.get_running_loop().time() - started


def _walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _walk(child)


async def explain(conn: asyncpg.Connection, cutoff: datetime, *, full_scan: bool) -> dict[str, Any]:
    """One EXPLAIN ANALYZE of the claim, in a transaction rolled back (its row locks
    are let go)."""
    tr = conn.transaction()
    await tr.start()
    try:
        if full_scan:
            await conn.execute(
                "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
                "SET LOCAL enable_indexonlyscan = off"
            )
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {CLAIM}", cutoff)
    finally:
        await tr.rollback()
    doc = json.loads(raw)[0] if isinstance(raw, str) else raw[0]
    top = doc["Plan"]
    nodes = list(_walk(top))
    scan = next(n for n in nodes if "Scan" in n["Node Type"])
    return {
        "ms": float(doc["Execution Time"]),
        "rows": int(top["Actual Rows"]),
        "buffers": int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)),
        "scan": scan["Node Type"] + (f" on {scan['Index Name']}" if "Index Name" in scan else ""),
    }


async def measure(conn: asyncpg.Connection, cutoff: datetime, *, full_scan: bool) -> dict[str, Any]:
    await explain(conn, cutoff, full_scan=full_scan)  # warm the cache
    runs = [await explain(conn, cutoff, full_scan=full_scan) for _ in range(RUNS)]
    first = runs[0]
    return {
        "ms": statistics.median(r["ms"] for r in runs),
        "rows": first["rows"],
        "buffers": first["buffers"],
        "scan": first["scan"],
    }


async def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="postd-bench-health-"))
    pg = EmbeddedPostgres(work / "pg", free_port(), durable=False)
    pg.start()
    try:
        await db.migrate_dsn(pg.dsn, SCHEMA, MIGRATIONS)
        conn = await asyncpg.connect(pg.dsn)
        try:
            base = datetime(2026, 1, 1, tzinfo=UTC)
            load_seconds = await load(conn, base)
            total = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.connection_watch")  # noqa: S608
            results: dict[str, Any] = {"rows": int(total), "load_seconds": load_seconds}
            for due in DUE_COUNTS:
                cutoff = base + timedelta(seconds=due - 1)
                results[f"index_{due}"] = await measure(conn, cutoff, full_scan=False)
                results[f"full_{due}"] = await measure(conn, cutoff, full_scan=True)
        finally:
            await conn.close()
    finally:
        pg.stop()
    return results


def report(r: dict[str, Any]) -> None:
    small, large = DUE_COUNTS
    print(f"## Health: expiry scan over {r['rows']:,} watched connections")
    print()
    print(
        f"{r['rows']:,} rows of `health.connection_watch` loaded with COPY in "
        f"{r['load_seconds']:.1f} s. The scheduler's claim (`due_at <= $1 ORDER BY due_at "
        "FOR UPDATE SKIP LOCKED`), EXPLAIN (ANALYZE, BUFFERS), median of "
        f"{RUNS} runs, against the same query with index access off (full scan)."
    )
    print()
    print("| due rows | plan | rows returned | execution | shared buffers |")
    print("|---|---|---|---|---|")
    for due in DUE_COUNTS:
        for kind, label in (("index", "index"), ("full", "full-scan baseline")):
            m = r[f"{kind}_{due}"]
            print(
                f"| {due:,} | {label}: {m['scan']} | {m['rows']:,} | {m['ms']:.2f} ms | "
                f"{m['buffers']:,} |"
            )
    i_small, i_large = r[f"index_{small}"], r[f"index_{large}"]
    f_small, f_large = r[f"full_{small}"], r[f"full_{large}"]
    print()
    print(
        f"- Indexed: {large:,} due cost {i_large['ms'] / i_small['ms']:.1f}x the time and "
        f"{i_large['buffers'] / max(1, i_small['buffers']):.1f}x the buffers of {small:,} due "
        f"({large // small}x the rows): the cost follows the rows that are due."
    )
    print(
        f"- Full scan: {f_large['ms'] / f_small['ms']:.1f}x the time and "
        f"{f_large['buffers'] / max(1, f_small['buffers']):.1f}x the buffers between the two: "
        "it reads every row whatever is due."
    )
    print(
        f"- Index vs full scan with {small:,} due: {f_small['ms'] / i_small['ms']:.0f}x faster, "
        f"{f_small['buffers'] / max(1, i_small['buffers']):.0f}x fewer buffers; with "
        f"{large:,} due: {f_large['ms'] / i_large['ms']:.0f}x faster."
    )


def main() -> dict[str, Any]:
    result = asyncio.run(run())
    report(result)
    print()
    print(f"<!-- {json.dumps(result, default=str)} -->")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
