"""Answers about a tenant's analytics: aggregated figures, one post, one connection,
insights. Validation and defaults here; the figures come from the rollups through
the AnalyticsReader port (no scan of snapshots per request).

Time buckets are local dates in the request's IANA zone. The zone's local days are
kept as their own rollup (built from the 15-minute UTC rollups the first time a zone
is asked for, then kept up to date with them); when a tenant already has its most
zones, the 15-minute rollups are summed into local days on the fly, which is exact
too (every zone's midnight falls on a quarter hour), only slower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from postd_common.errors import InvalidArgument, NotFound
from postd_publisher.domain.analytics import CONTENT_TYPES, ROLLUP_METRICS, Figures, figures_of
from postd_publisher.domain.insights import (
    DayFigure,
    Insight,
    InsightRules,
    PostFigure,
    insights,
)

Clock = Callable[[], datetime]
GRANULARITIES = ("", "day", "week", "month")
DIMENSIONS = ("platform", "connection", "content_type")
DEFAULT_DAYS = 30
MAX_DAYS = 400


@dataclass(frozen=True)
class DateRange:
    zone: ZoneInfo
    zone_name: str
    first: date
    last: date  # inclusive


@dataclass(frozen=True)
class Filters:
    platforms: tuple[str, ...] = ()
    connection_ids: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class RollupRow:
    period: date | None
    platform: str
    connection_id: str
    content_type: str
    posts: int
    figures: Figures


@dataclass(frozen=True)
class Report:
    rows: Sequence[RollupRow]
    totals: RollupRow
    range: DateRange
    source: str  # daily | quarter_hour


@dataclass(frozen=True)
class CollectionStatus:
    state: str
    reason: str
    next_at: datetime | None
    last_collected_at: datetime | None
    collections: int
    dead_letters: int


@dataclass(frozen=True)
class TargetFigures:
    task_id: str
    job_id: str
    post_id: str
    connection_id: str
    platform: str
    platform_post_id: str
    content_type: str
    published_at: datetime | None
    latest: Figures
    collection: CollectionStatus
    snapshots: Sequence[tuple[datetime, Figures]] = ()


@dataclass(frozen=True)
class AccountFigures:
    platform: str
    days: Sequence[tuple[date, Figures]]
    totals: Mapping[str, int]
    collection: CollectionStatus | None


@dataclass(frozen=True)
class ConnectionReport:
    connection_id: str
    account: AccountFigures
    posts_by_day: Sequence[RollupRow]
    top_posts: Sequence[TargetFigures]
    range: DateRange


@dataclass(frozen=True)
class InsightReport:
    insights: Sequence[Insight]
    zone_name: str
    posts_considered: int
    rules: str


class AnalyticsReader(Protocol):
    """Reads of the analytics tables; every method filters by tenant. All do I/O."""

    async def zone_ready(self, tenant_id: str, time_zone: str, now: datetime) -> bool: ...

    async def rollups(
        self,
        tenant_id: str,
        days: DateRange,
        granularity: str,
        group_by: Sequence[str],
        filters: Filters,
        *,
        daily: bool,
    ) -> Sequence[RollupRow]: ...

    async def post_exists(self, tenant_id: str, post_id: str) -> bool: ...

    async def post_targets(self, tenant_id: str, post_id: str) -> Sequence[TargetFigures]:
        """The post's collected targets with every snapshot, in the post's order."""
        ...

    async def connection_platform(self, tenant_id: str, connection_id: str) -> str | None:
        """The platform of a connection the publisher knows for this tenant."""
        ...

    async def account_figures(
        self, tenant_id: str, connection_id: str, first: date, last: date
    ) -> AccountFigures: ...

    async def top_posts(
        self, tenant_id: str, connection_id: str, since: datetime, until: datetime, limit: int
    ) -> Sequence[TargetFigures]: ...

    async def insight_posts(
        self, tenant_id: str, since: datetime, min_age: timedelta, platforms: Sequence[str]
    ) -> Sequence[PostFigure]: ...


def resolve_range(
    zone_name: str, first: str, last: str, now: datetime, default_days: int = DEFAULT_DAYS
) -> DateRange:
    name = zone_name or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"unknown time zone {name!r}", field="time_zone") from None
    today = now.astimezone(zone).date()
    try:
        end = date.fromisoformat(last) if last else today
    except ValueError:
        raise InvalidArgument("to_date is not YYYY-MM-DD", field="to_date") from None
    try:
        start = date.fromisoformat(first) if first else end - timedelta(days=default_days - 1)
    except ValueError:
        raise InvalidArgument("from_date is not YYYY-MM-DD", field="from_date") from None
    if end < start:
        raise InvalidArgument("to_date is before from_date", field="to_date")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidArgument(f"at most {MAX_DAYS} days at once", field="from_date")
    return DateRange(zone, name, start, end)


def total_of(rows: Sequence[RollupRow]) -> RollupRow:
    sums: dict[str, int | None] = {m: None for m in ROLLUP_METRICS}
    posts = 0
    for row in rows:
        posts += row.posts
        for m in ROLLUP_METRICS:
            value = row.figures.value(m)
            if value is not None:
                sums[m] = (sums[m] or 0) + value
    return RollupRow(None, "", "", "", posts, figures_of(sums))


@dataclass
class AnalyticsReports:
    reader: AnalyticsReader
    clock: Clock
    rules: InsightRules = field(default_factory=InsightRules)
    insight_days: int = 90

    async def query(
        self,
        tenant_id: str,
        *,
        time_zone: str = "",
        from_date: str = "",
        to_date: str = "",
        granularity: str = "",
        group_by: Sequence[str] = (),
        filters: Filters = Filters(),
    ) -> Report:
        _need(tenant_id)
        if granularity not in GRANULARITIES:
            raise InvalidArgument(f"unknown granularity {granularity!r}", field="granularity")
        unknown = [d for d in group_by if d not in DIMENSIONS]
        if unknown:
            raise InvalidArgument(f"cannot group by {unknown[0]!r}", field="group_by")
        bad_types = [t for t in filters.content_types if t not in CONTENT_TYPES]
        if bad_types:
            raise InvalidArgument(f"unknown content type {bad_types[0]!r}", field="content_types")
        days = resolve_range(time_zone, from_date, to_date, self.clock())
        daily = await self.reader.zone_ready(tenant_id, days.zone_name, self.clock())
        rows = await self.reader.rollups(
            tenant_id, days, granularity, tuple(dict.fromkeys(group_by)), filters, daily=daily
        )
        return Report(rows, total_of(rows), days, "daily" if daily else "quarter_hour")

    async def post(self, tenant_id: str, post_id: str) -> Sequence[TargetFigures]:
        _need(tenant_id)
        if not await self.reader.post_exists(tenant_id, post_id):
            raise NotFound("no such post", field="post_id")
        return await self.reader.post_targets(tenant_id, post_id)

    async def connection(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        time_zone: str = "",
        from_date: str = "",
        to_date: str = "",
    ) -> ConnectionReport:
        _need(tenant_id)
        platform = await self.reader.connection_platform(tenant_id, connection_id)
        if platform is None:
            raise NotFound("no such connection", field="connection_id")
        days = resolve_range(time_zone, from_date, to_date, self.clock())
        daily = await self.reader.zone_ready(tenant_id, days.zone_name, self.clock())
        by_day = await self.reader.rollups(
            tenant_id, days, "day", (), Filters(connection_ids=(connection_id,)), daily=daily
        )
        account = await self.reader.account_figures(tenant_id, connection_id, days.first, days.last)
        since = _local_midnight(days.first, days.zone)
        until = _local_midnight(days.last + timedelta(days=1), days.zone)
        top = await self.reader.top_posts(tenant_id, connection_id, since, until, 10)
        return ConnectionReport(connection_id, account, by_day, top, days)

    async def insights(
        self,
        tenant_id: str,
        *,
        time_zone: str = "",
        days: int = 0,
        platforms: Sequence[str] = (),
    ) -> InsightReport:
        _need(tenant_id)
        lookback = days or self.insight_days
        if not 1 <= lookback <= 365:
            raise InvalidArgument("days is between 1 and 365", field="days")
        now = self.clock()
        span = resolve_range(time_zone, "", "", now, default_days=15)
        posts = await self.reader.insight_posts(
            tenant_id, now - timedelta(days=lookback), self.rules.min_age, tuple(platforms)
        )
        daily = await self.reader.zone_ready(tenant_id, span.zone_name, now)
        rows = await self.reader.rollups(
            tenant_id,
            span,
            "day",
            ("platform",),
            Filters(platforms=tuple(platforms)),
            daily=daily,
        )
        day_figures = [
            DayFigure(
                r.period,
                r.platform,
                r.figures.impressions,
                r.figures.reach,
                r.figures.video_views,
            )
            for r in rows
            if r.period is not None
        ]
        found = insights(posts, day_figures, zone=span.zone, today=span.last, rules=self.rules)
        return InsightReport(found, span.zone_name, len(posts), self.rules.describe())


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _need(tenant_id: str) -> None:
    if not tenant_id:
        raise InvalidArgument("tenant_id is required", field="tenant_id")
