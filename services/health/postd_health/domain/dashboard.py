"""The dashboard's figures, each a current value and a series for a chart.

Series come from rollups (calls per minute or hour) and snapshots (states such as
"expiring within 7 days", taken every few minutes), never from a scan of the raw
data per request. Percentiles come from latency histograms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from postd_common import errors

MAX_TIMEFRAME = timedelta(days=30)
MAX_POINTS = 1000


@dataclass(frozen=True)
class Series:
    current: float
    points: tuple[tuple[datetime, float], ...] = ()


@dataclass(frozen=True)
class Bucket:
    """Calls of one platform in one time bucket (summed over sources and tenants)."""

    start: datetime
    platform: str
    requests: int = 0
    successes: int = 0
    unauthorized: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    other_client_errors: int = 0
    jobs_published: int = 0
    jobs_failed: int = 0
    latency_hist: tuple[int, ...] = ()
    lag_hist: tuple[int, ...] = ()
    refreshes: int = 0
    refresh_failures: int = 0


@dataclass(frozen=True)
class DashboardQuery:
    tenant_id: str  # empty: all tenants
    timeframe: timedelta
    resolution: timedelta
    platforms: tuple[str, ...]
    now: datetime

    @property
    def start(self) -> datetime:
        return align(self.now - self.timeframe, self.resolution)

    def bucket_starts(self) -> list[datetime]:
        starts = []
        t = self.start
        while t <= self.now:
            starts.append(t)
            t += self.resolution
        return starts


class DashboardReader(Protocol):
    async def call_buckets(self, query: DashboardQuery, *, sources: Sequence[str]) -> list[Bucket]:
        """Rollups summed per (bucket of ``query.resolution``, platform)."""
        ...

    async def snapshot_series(
        self, query: DashboardQuery, figures: Sequence[str]
    ) -> Mapping[str, list[tuple[datetime, float]]]:
        """Per figure, the last snapshot in each bucket."""
        ...

    async def token_figures(self, tenant_id: str, now: datetime) -> Mapping[str, float]:
        """Current token-health figures, by index (total, healthy, expiring_7d,
        expiring_24h, attention, revoked)."""
        ...

    async def queue_figures(self, tenant_id: str) -> Mapping[str, float]:
        """Current queue figures (pending, dlq_size) from health's job ledger."""
        ...


TOKEN_FIGURES = ("total", "healthy", "expiring_7d", "expiring_24h", "attention", "revoked")
QUEUE_FIGURES = ("pending", "dlq_size")


def align(moment: datetime, resolution: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=moment.tzinfo)
    steps = (moment - epoch) // resolution
    return epoch + steps * resolution


def percentile(hist: Sequence[int], bounds: Sequence[float], q: float) -> float:
    """The bucket bound under which ``q`` of observations fall (0 when none)."""
    total = sum(hist)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank and count:
            return float(bounds[i]) if i < len(bounds) else float(bounds[-1]) * 2
    return float(bounds[-1]) * 2


def add_hist(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    size = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size))


@dataclass(frozen=True)
class PlatformFigures:
    platform: str
    request_count: Series
    success_rate_percent: Series
    p50_latency_ms: Series
    p95_latency_ms: Series


@dataclass(frozen=True)
class ErrorFigures:
    platform: str  # "" for the total
    unauthorized: Series
    rate_limited: Series
    server_errors: Series
    timeouts: Series
    other_client_errors: Series


@dataclass(frozen=True)
class DashboardData:
    generated_at: datetime
    timeframe: timedelta
    resolution: timedelta
    token_health: Mapping[str, Series]
    api_performance: list[PlatformFigures]
    error_distribution: list[ErrorFigures]
    queue_health: Mapping[str, Series]


@dataclass
class _Acc:
    requests: int = 0
    successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: tuple[int, ...] = ()


class Dashboard:
    def __init__(
        self,
        reader: DashboardReader,
        *,
        latency_bounds: Sequence[float],
        lag_bounds: Sequence[float],
    ) -> None:
        self._reader = reader
        self._latency_bounds = latency_bounds
        self._lag_bounds = lag_bounds

    @staticmethod
    def query(
        tenant_id: str,
        timeframe: timedelta | None,
        resolution: timedelta | None,
        platforms: Sequence[str],
        now: datetime,
    ) -> DashboardQuery:
        frame = timeframe or timedelta(hours=24)
        if frame <= timedelta(0) or frame > MAX_TIMEFRAME:
            raise errors.InvalidArgument(
                "timeframe must be positive and at most 30 days", field="timeframe"
            )
        step = resolution or frame / 48
        if step < timedelta(minutes=1):
            step = timedelta(minutes=1)
        step = timedelta(minutes=round(step.total_seconds() / 60))
        if frame / step > MAX_POINTS:
            raise errors.InvalidArgument(
                f"resolution gives more than {MAX_POINTS} points", field="resolution"
            )
        return DashboardQuery(tenant_id, frame, step, tuple(platforms), now)

    async def build(self, q: DashboardQuery) -> DashboardData:
        starts = q.bucket_starts()
        calls = await self._reader.call_buckets(q, sources=("publish", "check"))
        refreshes = await self._reader.call_buckets(q, sources=("refresh",))
        snapshots = await self._reader.snapshot_series(
            q, [f"token.{f}" for f in TOKEN_FIGURES] + [f"queue.{f}" for f in QUEUE_FIGURES]
        )
        tokens_now = await self._reader.token_figures(q.tenant_id, q.now)
        queue_now = await self._reader.queue_figures(q.tenant_id)
        day_ago = q.now - timedelta(hours=24)

        token_health = {
            name: Series(
                float(tokens_now.get(name, 0.0)), _fill(starts, snapshots.get(f"token.{name}", []))
            )
            for name in TOKEN_FIGURES
        }
        token_health["failed_refreshes_24h"] = Series(
            float(sum(b.requests - b.successes for b in refreshes if b.start >= day_ago)),
            _per_bucket(starts, refreshes, lambda b: b.requests - b.successes),
        )

        platforms = sorted({b.platform for b in calls})
        performance = [
            self._performance(p, starts, [b for b in calls if b.platform == p]) for p in platforms
        ]
        distribution = [self._errors("", starts, calls)] + [
            self._errors(p, starts, [b for b in calls if b.platform == p]) for p in platforms
        ]
        publish = await self._reader.call_buckets(q, sources=("publish",))
        queue = {
            "pending": Series(
                float(queue_now.get("pending", 0)),
                _fill(starts, snapshots.get("queue.pending", [])),
            ),
            "dlq_size": Series(
                float(queue_now.get("dlq_size", 0)),
                _fill(starts, snapshots.get("queue.dlq_size", [])),
            ),
            "published_24h": Series(
                float(sum(b.jobs_published for b in publish if b.start >= day_ago)),
                _per_bucket(starts, publish, lambda b: b.jobs_published),
            ),
            "failed_24h": Series(
                float(sum(b.jobs_failed for b in publish if b.start >= day_ago)),
                _per_bucket(starts, publish, lambda b: b.jobs_failed),
            ),
        }
        lag_all: tuple[int, ...] = ()
        lag_points = []
        for start in starts:
            hist: tuple[int, ...] = ()
            for b in publish:
                if b.start == start:
                    hist = add_hist(hist, b.lag_hist)
            lag_all = add_hist(lag_all, hist)
            lag_points.append((start, percentile(hist, self._lag_bounds, 0.99)))
        queue["dispatch_lag_p99_ms"] = Series(
            percentile(lag_all, self._lag_bounds, 0.99), tuple(lag_points)
        )
        return DashboardData(
            generated_at=q.now,
            timeframe=q.timeframe,
            resolution=q.resolution,
            token_health=token_health,
            api_performance=performance,
            error_distribution=distribution,
            queue_health=queue,
        )

    def _performance(
        self, platform: str, starts: list[datetime], buckets: list[Bucket]
    ) -> PlatformFigures:
        total = _Acc()
        counts, rates, p50s, p95s = [], [], [], []
        for start in starts:
            acc = _Acc()
            for b in buckets:
                if b.start == start:
                    acc.requests += b.requests
                    acc.successes += b.successes
                    acc.latency = add_hist(acc.latency, b.latency_hist)
            total.requests += acc.requests
            total.successes += acc.successes
            total.latency = add_hist(total.latency, acc.latency)
            counts.append((start, float(acc.requests)))
            rates.append((start, _rate(acc.successes, acc.requests)))
            p50s.append((start, percentile(acc.latency, self._latency_bounds, 0.5)))
            p95s.append((start, percentile(acc.latency, self._latency_bounds, 0.95)))
        return PlatformFigures(
            platform=platform,
            request_count=Series(float(total.requests), tuple(counts)),
            success_rate_percent=Series(_rate(total.successes, total.requests), tuple(rates)),
            p50_latency_ms=Series(
                percentile(total.latency, self._latency_bounds, 0.5), tuple(p50s)
            ),
            p95_latency_ms=Series(
                percentile(total.latency, self._latency_bounds, 0.95), tuple(p95s)
            ),
        )

    def _errors(self, platform: str, starts: list[datetime], buckets: list[Bucket]) -> ErrorFigures:
        def series(attr: str) -> Series:
            points = _per_bucket(starts, buckets, lambda b: int(getattr(b, attr)))
            return Series(sum(v for _, v in points), points)

        return ErrorFigures(
            platform=platform,
            unauthorized=series("unauthorized"),
            rate_limited=series("rate_limited"),
            server_errors=series("server_errors"),
            timeouts=series("timeouts"),
            other_client_errors=series("other_client_errors"),
        )


def _rate(successes: int, requests: int) -> float:
    return round(100.0 * successes / requests, 2) if requests else 100.0


def _per_bucket(
    starts: list[datetime], buckets: Sequence[Bucket], value: object
) -> tuple[tuple[datetime, float], ...]:
    assert callable(value)
    sums = dict.fromkeys(starts, 0.0)
    for b in buckets:
        if b.start in sums:
            sums[b.start] += float(value(b))
    return tuple(sums.items())


def _fill(
    starts: list[datetime], points: Sequence[tuple[datetime, float]]
) -> tuple[tuple[datetime, float], ...]:
    """One value per bucket: the snapshot of that bucket, else the last one before it."""
    by_start = dict(points)
    out = []
    last: float | None = None
    for start in starts:
        if start in by_start:
            last = by_start[start]
        out.append((start, last if last is not None else 0.0))
    return tuple(out)
