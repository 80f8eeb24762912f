"""Moving due jobs from PostgreSQL onto ``publish.jobs``, and bringing lost ones back.

The job rows are the outbox. The dispatcher claims due jobs in batches (one
statement, ``FOR UPDATE SKIP LOCKED``, so replicas share the work), fairly across
tenants (each tenant gets an equal share of a batch, and the rotation resumes after
the last tenant served, so one tenant's burst cannot starve another's single post),
checks each account's quota (jobs over quota are deferred, not failed), commits, and
only then produces. If the broker does not take the batch, the jobs are released; if
the process dies after committing, their dispatch lease passes and the reconciler
puts them back on schedule. Nothing depends on Kafka keeping data.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from postd_common.logging import get_logger
from postd_publisher.domain.breaker import BreakerPolicy
from postd_publisher.domain.collector import AnalyticsDispatch
from postd_publisher.domain.quota import (
    PUBLISH,
    QuotaBook,
    QuotaDemand,
    UsageKey,
    plan_dispatch,
)
from postd_publisher.ports import (
    AnalyticsStore,
    ClaimRequest,
    ConnectorsClient,
    ConnectorsUnavailable,
    DispatchClaim,
    DispatchJob,
    JobQueue,
    JobStore,
    QueueUnavailable,
)

log = get_logger(__name__)
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class DispatchSettings:
    batch_size: int = 1000
    # Longest sleep when nothing is due; a create that is due now wakes it at once.
    poll_interval: float = 0.1
    # How long a dispatched job may wait for a worker before it is sent again.
    lease_seconds: float = 60.0
    # Jobs DISPATCHED or PUBLISHING at most (0: no cap). A cap keeps the queue short,
    # so a tenant's new post is not behind another tenant's whole burst.
    max_in_flight: int = 2000
    # After a partial batch, wait this long for more jobs to fall due (fewer, fuller
    # claims under a steady trickle); a full batch goes round again at once.
    batch_window: float = 0.02
    # How stale the view of platform circuit breakers may be.
    breaker_refresh: float = 1.0
    reconcile_interval: float = 1.0
    quota_refresh_interval: float = 600.0
    # A job whose publishing stopped this many workers is set aside (dead-lettered).
    max_lost_workers: int = 3


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        *,
        quotas: QuotaBook,
        breaker: BreakerPolicy,
        settings: DispatchSettings,
        clock: Clock,
        analytics: AnalyticsDispatch | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._quotas = quotas
        self._breaker = breaker
        self._settings = settings
        self._now = clock
        # Analytics collection, served with the room publish jobs leave in a round.
        self._analytics = analytics
        self._cursor = ""
        self._breaker_view: tuple[float, frozenset[str], list[str]] = (-1e18, frozenset(), [])
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                sent = await self.dispatch_once()
                failures = 0
            except QueueUnavailable as exc:
                failures += 1
                log.warning("broker unavailable; jobs released", error=str(exc))
                await _pause(stop, min(5.0, 0.2 * 2**failures))
                continue
            except Exception as exc:  # noqa: BLE001 - PostgreSQL trouble: wait and retry
                failures += 1
                log.error("dispatch failed; retrying", error=f"{type(exc).__name__}: {exc}")
                await _pause(stop, min(5.0, 0.2 * 2**failures))
                continue
            if sent == 0:
                await self._idle(stop)
            elif sent < self._settings.batch_size:
                await self._nap(stop, self._settings.batch_window)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Sleep until the next job falls due, at most ``poll_interval`` (jobs due now
        but held — paused, blocked, an open breaker — are not a reason to spin)."""
        delay = self._settings.poll_interval
        upcoming = await self._store.next_due_at()
        if upcoming is not None:
            until = (upcoming - self._now()).total_seconds()
            if until > 0:
                delay = min(delay, until)
        await self._nap(stop, delay)

    async def _nap(self, stop: asyncio.Event, delay: float) -> None:
        if delay <= 0:
            return
        self.wake.clear()
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def dispatch_once(self) -> int:
        """One claim-and-send round; returns how many jobs were claimed."""
        now = self._now()
        limit = self._settings.batch_size
        held, probing = await self._breakers(now)
        claimed = 0
        for platform in probing:
            claimed += await self._probe(platform, now)
        request = ClaimRequest(
            now=now,
            limit=limit,
            lease_seconds=self._settings.lease_seconds,
            tenant_cursor=self._cursor,
            held_platforms=held,
            max_in_flight=self._settings.max_in_flight,
        )
        async with self._store.claim_due(request) as claim:
            jobs = list(claim.jobs)
            admitted = await self._admit(claim, now) if jobs else set()
        if jobs:
            # Resume the tenant rotation after the last tenant served when the batch
            # was full; start from the beginning otherwise.
            self._cursor = jobs[-1].tenant_id if len(jobs) >= limit else ""
            await self._send([j for j in jobs if j.job_id in admitted], now)
        claimed += len(jobs)
        if self._analytics is not None and len(jobs) < limit:
            # Publishing has priority: collection gets only a round's leftover room, and
            # only when no publish job is waiting for a slot.
            claimed += await self._collect(now, limit - len(jobs), held)
        return claimed

    async def _collect(self, now: datetime, room: int, held: frozenset[str]) -> int:
        assert self._analytics is not None
        try:
            return await self._analytics.dispatch_once(now, room, held)
        except Exception as exc:  # noqa: BLE001 - never let collection hold up publishing
            log.warning("analytics dispatch failed; retrying", error=f"{type(exc).__name__}: {exc}")
            return 0

    async def _send(self, jobs: Sequence[DispatchJob], now: datetime) -> None:
        if not jobs:
            return
        try:
            await self._queue.send(jobs)
        except QueueUnavailable:
            await self._store.release(
                jobs, "The message broker did not take the job; it will be sent again.", now
            )
            raise

    async def _admit(self, claim: DispatchClaim, now: datetime) -> set[str]:
        jobs = claim.jobs
        demands = [
            QuotaDemand(j.job_id, j.tenant_id, j.connection_id, j.platform)
            for j in jobs
            if self._quotas.spent_by(j.platform, PUBLISH)
        ]
        if not demands:
            return {j.job_id for j in jobs}
        keys: set[UsageKey] = {
            (d.tenant_id, d.connection_id, rule.name)
            for d in demands
            for rule in self._quotas.spent_by(d.platform, PUBLISH)
        }
        used = await claim.quota_usage(sorted(keys), now - self._quotas.longest_window())
        plan = plan_dispatch(demands, used, self._quotas, now)
        if plan.deferred:
            await claim.defer(plan.deferred)
        if plan.entries:
            await claim.spend(plan.entries, now)
        deferred = {d.job_id for d in plan.deferred}
        return {j.job_id for j in jobs if j.job_id not in deferred}

    async def _breakers(self, now: datetime) -> tuple[frozenset[str], list[str]]:
        """Platforms held by an open breaker, and those due a probe (re-read at most
        every ``breaker_refresh`` seconds: they change rarely)."""
        loop = asyncio.get_running_loop()
        read_at, held_view, _ = self._breaker_view
        if loop.time() - read_at < self._settings.breaker_refresh:
            return held_view, []
        held: set[str] = set()
        probing: list[str] = []
        for breaker in await self._store.breakers():
            held.add(breaker.platform)
            if breaker.state == "open" and breaker.open_until <= now:
                probing.append(breaker.platform)
            elif (
                breaker.state == "half_open"
                and breaker.probe_started_at is not None
                and now - breaker.probe_started_at
                > timedelta(seconds=self._breaker.probe_timeout_seconds)
            ):
                await self._store.reopen_stale_probe(breaker.platform, now)
        self._breaker_view = (loop.time(), frozenset(held), probing)
        return frozenset(held), probing

    async def _probe(self, platform: str, now: datetime) -> int:
        """Half-open: let one job of a broken platform through to test it."""
        request = ClaimRequest(
            now=now, limit=1, lease_seconds=self._settings.lease_seconds, only_platform=platform
        )
        try:
            async with self._store.claim_due(request) as claim:
                jobs = list(claim.jobs)
                if not jobs:
                    return 0
                if not await claim.mark_probe(platform, jobs[0].job_id):
                    raise _ProbeTaken
        except _ProbeTaken:
            return 0
        log.info("circuit half-open: probing", platform=platform, job_id=jobs[0].job_id)
        await self._send(jobs, now)
        return 1


class _ProbeTaken(Exception):
    """Another replica is probing; roll the claim back."""


class Reconciler:
    """Brings back jobs whose dispatch or worker was lost, prunes old bookkeeping,
    and keeps the quota rules in line with connectors' capability matrix."""

    def __init__(
        self,
        store: JobStore,
        connectors: ConnectorsClient,
        *,
        quotas: QuotaBook,
        settings: DispatchSettings,
        clock: Clock,
        wake: Callable[[], None],
        analytics: AnalyticsStore | None = None,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._quotas = quotas
        self._settings = settings
        self._now = clock
        self._wake = wake
        self._analytics = analytics

    async def run(self, stop: asyncio.Event) -> None:
        last_rules = -1e18
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if loop.time() - last_rules > self._settings.quota_refresh_interval:
                    last_rules = loop.time()
                    await self.refresh_quota_rules()
                sweep = await self._store.sweep_stale(
                    self._now(), 1000, self._settings.max_lost_workers
                )
                if sweep.redispatched or sweep.recovered:
                    log.warning(
                        "lost jobs brought back",
                        redispatched=sweep.redispatched,
                        recovered=sweep.recovered,
                    )
                    self._wake()
                if self._analytics is not None:
                    lost = await self._analytics.sweep_stale(self._now(), 1000)
                    if lost:
                        log.warning("lost analytics rounds brought back", tasks=lost)
                if loop.time() - last_prune > 60:
                    last_prune = loop.time()
                    now = self._now()
                    await self._store.prune(
                        now - max(self._quotas.longest_window(), timedelta(hours=1)),
                        now - timedelta(days=7),
                    )
            except Exception as exc:  # noqa: BLE001 - keep sweeping; PostgreSQL may be back soon
                log.error("reconcile failed", error=f"{type(exc).__name__}: {exc}")
            interval = self._settings.reconcile_interval
            await _pause(stop, interval * random.uniform(0.8, 1.2))

    async def refresh_quota_rules(self) -> None:
        try:
            rules = await self._connectors.quota_rules()
        except ConnectorsUnavailable as exc:
            log.info("quota rules from connectors unavailable; keeping current", error=str(exc))
            return
        if rules:
            self._quotas.merge(rules)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
