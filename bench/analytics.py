"""Analytics at scale: a tenant with 100,000 posts and a year of snapshots (loaded with
COPY), its aggregated queries answered from the rollups, beside the very same
questions answered from the raw snapshots, in the same run.

Seeding follows the service's own schedule (a snapshot every hour in a post's first
day, daily to 30 days): about 5 million snapshots for the big tenant, plus four
smaller tenants sharing the tables. The 15-minute rollups are what the collectors'
deltas add up to (computed while generating); the tenant's local days are then built
by the store's own first-use path (``zone_ready``), timed. Each rollup query runs
through ``PostgresAnalyticsStore.rollups`` (SQL and decoding) ``RUNS`` times after a
warm-up (p50 / p99); each raw query (deltas by ``lag()`` over the snapshots, joined to
the posts) runs 3 times (median), and both answers are checked equal.

``python -m bench.analytics`` (``BENCH_ANALYTICS_POSTS`` for another size).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from postd_common import db
from postd_common.devinfra import EmbeddedPostgres, free_port
from postd_publisher.adapters.analytics_store import AnalyticsTopics, PostgresAnalyticsStore
from postd_publisher.app import MIGRATIONS
from postd_publisher.domain.analytics import ROLLUP_METRICS, CollectionSchedule
from postd_publisher.domain.insights import InsightRules
from postd_publisher.domain.reports import AnalyticsReports, DateRange, Filters

SCHEMA = "publisher_bench"
POSTS = int(os.environ.get("BENCH_ANALYTICS_POSTS", "100000"))
OTHERS = 4  # smaller tenants sharing the tables
OTHER_POSTS = max(1, POSTS // 20)
RUNS = 50
RAW_RUNS = 3
TENANT = "tenant-big"
ZONE = "Europe/Berlin"
END = datetime(2026, 1, 1, tzinfo=UTC)
START = END - timedelta(days=365)
PLATFORMS = {
    "facebook": (3, ("text", "image", "video", "carousel")),
    "instagram": (3, ("image", "carousel", "video")),
    "linkedin": (2, ("text", "image", "carousel")),
    "tiktok": (2, ("video",)),
    "mailchimp": (2, ("text",)),
}
# Share of impressions each metric comes to (the sandbox's plausible ratios).
RATIOS = {
    "impressions": 1.0,
    "reach": 0.72,
    "engagements": 0.065,
    "clicks": 0.018,
    "video_views": 0.55,
    "conversions": 0.002,
    "likes": 0.04,
    "comments": 0.006,
    "shares": 0.004,
    "saves": 0.003,
}
TASK_COLUMNS = (
    "id",
    "tenant_id",
    "connection_id",
    "platform",
    "kind",
    "job_id",
    "post_id",
    "platform_post_id",
    "content_type",
    "published_at",
    "state",
    "state_reason",
    "run_at",
    "collections",
    "last_collected_at",
    *ROLLUP_METRICS,
    "created_at",
    "updated_at",
)
SNAPSHOT_COLUMNS = ("task_id", "tenant_id", "taken_at", *ROLLUP_METRICS)
QUARTER_COLUMNS = (
    "tenant_id",
    "bucket",
    "platform",
    "connection_id",
    "content_type",
    "posts",
    *ROLLUP_METRICS,
)


def connections(tenant: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (f"{tenant}-{platform}-{i}", platform, types)
        for platform, (count, types) in PLATFORMS.items()
        for i in range(count)
    ]


def snapshot_ages(schedule: CollectionSchedule) -> list[timedelta]:
    ages: list[timedelta] = []
    published = START
    at = schedule.first_post_run(published)
    while at is not None:
        ages.append(at - published)
        at = schedule.next_post_run(published, at)
    return ages


def quarter(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


class Seed:
    """Rows for COPY, and the 15-minute rollups their deltas add up to."""

    def __init__(self) -> None:
        self.tasks: list[tuple[Any, ...]] = []
        self.snapshots = 0
        self.quarters: dict[tuple[str, datetime, str, str, str], list[int]] = defaultdict(
            lambda: [0] * (1 + len(ROLLUP_METRICS))
        )

    def posts(
        self, tenant: str, count: int, ages: list[timedelta], rng: random.Random
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Posts spread evenly over the year; yields batches of snapshot rows."""
        accounts = connections(tenant)
        spacing = (END - START) / count
        batch: list[tuple[Any, ...]] = []
        for i in range(count):
            connection_id, platform, types = accounts[rng.randrange(len(accounts))]
            content_type = types[rng.randrange(len(types))]
            published = START + spacing * i + timedelta(seconds=rng.random() * 60)
            potential = 200.0 + 4800.0 * rng.random() ** 2
            tau = 3600.0 * (3.0 + 12.0 * rng.random())
            task_id = uuid.uuid4()
            previous = [0] * len(ROLLUP_METRICS)
            taken = 0
            latest = previous
            for age in ages:
                at = published + age
                if at > END:
                    break
                grown = 1.0 - math.exp(-age.total_seconds() / tau)
                values = [int(potential * RATIOS[m] * grown) for m in ROLLUP_METRICS]
                batch.append((task_id, tenant, at, *values))
                cell = self.quarters[(tenant, quarter(at), platform, connection_id, content_type)]
                for k, (now, before) in enumerate(zip(values, previous, strict=True)):
                    cell[1 + k] += now - before
                previous = latest = values
                taken += 1
            self.quarters[(tenant, quarter(published), platform, connection_id, content_type)][
                0
            ] += 1
            self.snapshots += taken
            last = published + ages[taken - 1] if taken else None
            self.tasks.append(
                (
                    task_id,
                    tenant,
                    connection_id,
                    platform,
                    "post",
                    uuid.uuid4(),
                    uuid.uuid4(),
                    f"p-{task_id.hex[:12]}",
                    content_type,
                    published,
                    "DONE" if taken == len(ages) else "SCHEDULED",
                    "",
                    END,
                    taken,
                    last,
                    *latest,
                    published,
                    END,
                )
            )
            if len(batch) >= 200_000:
                yield batch
                batch = []
        if batch:
            yield batch


async def load(conn: asyncpg.Connection) -> dict[str, Any]:
    started = time.monotonic()
    seed = Seed()
    ages = snapshot_ages(CollectionSchedule())
    rng = random.Random(42)
    for tenant, count in [(TENANT, POSTS)] + [(f"tenant-{i}", OTHER_POSTS) for i in range(OTHERS)]:
        for batch in seed.posts(tenant, count, ages, rng):
            await conn.copy_records_to_table(
                "analytics_snapshots", schema_name=SCHEMA, columns=SNAPSHOT_COLUMNS, records=batch
            )
    await conn.copy_records_to_table(
        "analytics_tasks", schema_name=SCHEMA, columns=TASK_COLUMNS, records=seed.tasks
    )
    quarters = [(*key, *cell) for key, cell in seed.quarters.items()]
    for start in range(0, len(quarters), 200_000):
        await conn.copy_records_to_table(
            "analytics_rollup_quarters",
            schema_name=SCHEMA,
            columns=QUARTER_COLUMNS,
            records=quarters[start : start + 200_000],
        )
    for table in ("analytics_tasks", "analytics_snapshots", "analytics_rollup_quarters"):
        await conn.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
    big_quarters = sum(1 for key in seed.quarters if key[0] == TENANT)
    return {
        "load_seconds": time.monotonic() - started,
        "snapshots": seed.snapshots,
        "tasks": len(seed.tasks),
        "quarters": len(quarters),
        "tenant_quarters": big_quarters,
        "snapshots_per_post": len(ages),
    }


# --------------------------------------------------------------------------- queries


def raw_sql(granularity: str, dims: tuple[str, ...], filters: dict[str, Any]) -> str:
    """The same question from the snapshots: each snapshot's delta from the previous
    one of its post (lag), in the local bucket of when it was taken."""
    day = "(d.taken_at AT TIME ZONE $2)::date"
    period = {
        "": "NULL::date",
        "day": day,
        "week": f"date_trunc('week', ({day})::timestamp)::date",
        "month": f"date_trunc('month', ({day})::timestamp)::date",
    }[granularity]
    columns = {
        "platform": "t.platform",
        "connection": "t.connection_id",
        "content_type": "t.content_type",
    }
    keys = ([period] if granularity else []) + [columns[d] for d in dims]
    lags = ", ".join(
        f"s.{m} - coalesce(lag(s.{m}) OVER w, 0) AS {m}"
        for m in ("impressions", "reach", "engagements")
    )
    where = ""
    if "platform" in filters:
        where = "AND t.platform = $5"
    group = f"GROUP BY {', '.join(keys)}" if keys else ""
    return f"""
        WITH d AS (
            SELECT s.task_id, s.taken_at, {lags}
              FROM {SCHEMA}.analytics_snapshots s
             WHERE s.tenant_id = $1
            WINDOW w AS (PARTITION BY s.task_id ORDER BY s.taken_at))
        SELECT {period} AS period{"".join(", " + columns[d] for d in dims)},
               sum(d.impressions) AS impressions, sum(d.reach) AS reach,
               sum(d.engagements) AS engagements
          FROM d JOIN {SCHEMA}.analytics_tasks t ON t.id = d.task_id
         WHERE d.taken_at >= ($3::date::timestamp AT TIME ZONE $2)
           AND d.taken_at < (($4::date + 1)::timestamp AT TIME ZONE $2) {where}
         {group}"""  # noqa: S608


QUERIES: list[tuple[str, str, tuple[str, ...], int, dict[str, Any]]] = [
    ("last 30 days, by day and platform", "day", ("platform",), 30, {}),
    (
        "last 90 days, Instagram, by day and content type",
        "day",
        ("content_type",),
        90,
        {"platform": "instagram"},
    ),
    ("a year, by week and connection", "week", ("connection",), 365, {}),
    ("a year, by month and content type", "month", ("content_type",), 365, {}),
    ("a year, totals", "", (), 365, {}),
]


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[list[float], Any]:
    await call()  # warm
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


async def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="postd-bench-analytics-"))
    pg = EmbeddedPostgres(work / "pg", free_port(), durable=False)
    pg.start()
    try:
        await db.migrate_dsn(pg.dsn, SCHEMA, MIGRATIONS)
        conn = await asyncpg.connect(pg.dsn)
        pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
        try:
            results: dict[str, Any] = {"posts": POSTS, **await load(conn)}
            store = PostgresAnalyticsStore(
                pool, topics=AnalyticsTopics("analytics.jobs", "analytics.jobs.dlq"), schema=SCHEMA
            )
            started = time.perf_counter()
            assert await store.zone_ready(TENANT, ZONE, END)
            results["zone_build_ms"] = (time.perf_counter() - started) * 1000
            results["tenant_days"] = await conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.analytics_rollup_days WHERE tenant_id = $1",  # noqa: S608
                TENANT,
            )
            zone = ZoneInfo(ZONE)
            last = (END - timedelta(seconds=1)).astimezone(zone).date()
            measured = []
            for label, granularity, dims, days, flt in QUERIES:
                first = last - timedelta(days=days - 1)
                span = DateRange(zone, ZONE, first, last)
                filters = Filters(platforms=(flt["platform"],)) if "platform" in flt else Filters()

                def rollup(
                    span: DateRange = span,
                    g: str = granularity,
                    d: tuple[str, ...] = dims,
                    f: Filters = filters,
                ) -> Awaitable[Any]:
                    return store.rollups(TENANT, span, g, d, f, daily=True)

                fast, rows = await timed(rollup, RUNS)
                args: list[Any] = [TENANT, ZONE, first, last]
                if "platform" in flt:
                    args.append(flt["platform"])
                sql = raw_sql(granularity, dims, flt)

                def scan(sql: str = sql, args: list[Any] = args) -> Awaitable[Any]:
                    return conn.fetch(sql, *args)

                slow, raw = await timed(scan, RAW_RUNS)
                same = sum(r.figures.impressions or 0 for r in rows) == sum(
                    int(r["impressions"] or 0) for r in raw
                ) and len(rows) == len(raw)
                measured.append(
                    {
                        "query": label,
                        "groups": len(rows),
                        "p50_ms": pct(fast, 50),
                        "p99_ms": pct(fast, 99),
                        "raw_ms": statistics.median(slow),
                        "same_answer": same,
                    }
                )
            results["queries"] = measured
            # Another zone the first time (built once from the quarter hours), and the
            # quarter-hour path for a tenant at its most zones.
            kolkata = ZoneInfo("Asia/Kolkata")
            started = time.perf_counter()
            await store.zone_ready(TENANT, "Asia/Kolkata", END)
            results["second_zone_build_ms"] = (time.perf_counter() - started) * 1000
            month = DateRange(kolkata, "Asia/Kolkata", last - timedelta(days=29), last)
            quarter_times, _ = await timed(
                lambda: store.rollups(TENANT, month, "day", ("platform",), Filters(), daily=False),
                10,
            )
            results["quarter_hour_30_days_p50_ms"] = pct(quarter_times, 50)
            reports = AnalyticsReports(store, lambda: END, rules=InsightRules())
            insight_times, report = await timed(lambda: reports.insights(TENANT, time_zone=ZONE), 3)
            results["insights_ms"] = statistics.median(insight_times)
            results["insights_posts"] = report.posts_considered
            results["insights_findings"] = sum(
                1 for i in report.insights if i.verdict.value == "FINDING"
            )
        finally:
            await pool.close()
            await conn.close()
    finally:
        pg.stop()
    return results


def report(r: dict[str, Any]) -> None:
    print(f"## Analytics: a tenant with {r['posts']:,} posts and a year of snapshots")
    print()
    print(
        f"{r['snapshots']:,} snapshots ({r['snapshots_per_post']} per post on the default "
        f"schedule; the big tenant and {OTHERS} of {OTHER_POSTS:,} posts) and {r['tasks']:,} "
        f"posts loaded with COPY in {r['load_seconds']:.0f} s. Rollups: "
        f"{r['quarters']:,} quarter-hour rows ({r['tenant_quarters']:,} of the tenant), "
        f"{r['tenant_days']:,} local-day rows for {ZONE}, built from the quarter hours in "
        f"{r['zone_build_ms']:,.0f} ms the first time the zone was asked for. Rollup "
        f"queries: p50 / p99 of {RUNS} runs; raw: the same question from the snapshots "
        f"(deltas by lag()), median of {RAW_RUNS}; both answers compared."
    )
    print()
    print(
        "| query | groups | rollups p50 | rollups p99 | raw snapshots | raw / rollups "
        "| same answer |"
    )
    print("|---|---|---|---|---|---|---|")
    for q in r["queries"]:
        print(
            f"| {q['query']} | {q['groups']:,} | {q['p50_ms']:.1f} ms | {q['p99_ms']:.1f} ms | "
            f"{q['raw_ms']:,.0f} ms | {q['raw_ms'] / q['p99_ms']:,.0f}x | "
            f"{'yes' if q['same_answer'] else 'NO'} |"
        )
    worst = max(q["p99_ms"] for q in r["queries"])
    print()
    print(
        f"- Every aggregated query under 100 ms at p99: {'yes' if worst < 100 else 'NO'} "
        f"(worst {worst:.1f} ms)."
    )
    print(
        f"- A second zone (Asia/Kolkata, +5:30) built on first use in "
        f"{r['second_zone_build_ms']:,.0f} ms; a tenant past its zones is answered from the "
        f"quarter hours: 30 days by day and platform in {r['quarter_hour_30_days_p50_ms']:.0f} "
        "ms (p50)."
    )
    print(
        f"- Insights over the last 90 days ({r['insights_posts']:,} posts compared, "
        f"{r['insights_findings']} findings): {r['insights_ms']:,.0f} ms (median of 3)."
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
