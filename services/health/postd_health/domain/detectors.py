"""Detectors run every minute over the rollups: the API error rate per tenant and
platform, a platform outage across tenants, and the publishing backlog. Each keeps
its incidents open while the condition holds and resolves them once it does not.

A platform outage is an operator-wide alert (empty tenant): the publisher's circuit
breaker acts on it by itself, and the notifier tells every tenant on that platform.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from postd_health.domain.alerts import (
    QUEUE_BACKLOG_KEY,
    AlertEngine,
    error_rate_key,
    outage_key,
)
from postd_health.domain.model import AlertKind, AlertSpec, Severity
from postd_health.domain.rules import PlatformRules
from postd_health.ports import Clock


@dataclass(frozen=True)
class CallTotals:
    tenant_id: str
    platform: str
    requests: int
    failures: int
    passing: int  # failures of the passing kind: timeouts, 5xx, outages


class DetectorReader(Protocol):
    async def call_totals(self, since: datetime) -> list[CallTotals]:
        """Calls per tenant and platform since a time (minute rollups)."""
        ...

    async def queue_figures(self, tenant_id: str) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class DetectorPolicy:
    error_rate_threshold: float = 0.05
    window: timedelta = timedelta(minutes=15)
    min_requests: int = 20
    outage_error_rate: float = 0.5
    outage_min_tenants: int = 3
    outage_min_requests: int = 30
    queue_backlog: int = 1000


class Detectors:
    def __init__(
        self,
        reader: DetectorReader,
        alerts: AlertEngine,
        rules: PlatformRules,
        *,
        policy: DetectorPolicy,
        clock: Clock,
    ) -> None:
        self._reader = reader
        self._alerts = alerts
        self._rules = rules
        self._policy = policy
        self._clock = clock

    async def run_once(self) -> int:
        """Evaluate everything once; returns how many incidents are open after it."""
        now = self._clock()
        totals = await self._reader.call_totals(now - self._policy.window)
        open_count = await self._error_rates(totals)
        open_count += await self._outages(totals)
        open_count += await self._backlog()
        return open_count

    async def _error_rates(self, totals: list[CallTotals]) -> int:
        p = self._policy
        minutes = int(p.window.total_seconds() // 60)
        firing: set[str] = set()
        for t in totals:
            if t.requests < p.min_requests or t.failures / t.requests <= p.error_rate_threshold:
                continue
            key = error_rate_key(t.tenant_id, t.platform)
            firing.add(key)
            name = self._rules.display_name(t.platform)
            rate = t.failures / t.requests
            await self._alerts.fire(
                AlertSpec(
                    dedupe_key=key,
                    tenant_id=t.tenant_id,
                    kind=AlertKind.API_ERROR_RATE,
                    severity=Severity.WARNING,
                    title=f"{name} calls failing ({rate:.0%})",
                    message=f"{t.failures} of {t.requests} calls to {name} failed in the last "
                    f"{minutes} minutes (over {p.error_rate_threshold:.0%}). Failed posts are "
                    "retried; see the dashboard for the kinds of errors.",
                    platform=t.platform,
                )
            )
        await self._alerts.resolve_open(
            AlertKind.API_ERROR_RATE,
            "api_error_rate:",
            firing,
            f"The error rate is back under {p.error_rate_threshold:.0%}.",
        )
        return len(firing)

    async def _outages(self, totals: list[CallTotals]) -> int:
        p = self._policy
        requests: dict[str, int] = defaultdict(int)
        passing: dict[str, int] = defaultdict(int)
        affected: dict[str, int] = defaultdict(int)
        for t in totals:
            requests[t.platform] += t.requests
            passing[t.platform] += t.passing
            if t.requests and t.passing / t.requests >= p.outage_error_rate:
                affected[t.platform] += 1
        firing: set[str] = set()
        for platform, count in requests.items():
            if count < p.outage_min_requests:
                continue
            rate = passing[platform] / count
            if rate < p.outage_error_rate or affected[platform] < p.outage_min_tenants:
                continue
            key = outage_key(platform)
            firing.add(key)
            name = self._rules.display_name(platform)
            await self._alerts.fire(
                AlertSpec(
                    dedupe_key=key,
                    tenant_id="",
                    kind=AlertKind.PLATFORM_OUTAGE,
                    severity=Severity.CRITICAL,
                    title=f"{name} is failing for everyone",
                    message=f"{rate:.0%} of calls to {name} failed with server errors or "
                    f"timeouts across {affected[platform]} workspaces. Publishing to {name} is "
                    "held and retried automatically when it recovers; your connections are "
                    "fine and need no reconnecting.",
                    platform=platform,
                )
            )
        await self._alerts.resolve_open(
            AlertKind.PLATFORM_OUTAGE,
            "platform_outage:",
            firing,
            "The platform answers normally again; held posts are being published.",
        )
        return len(firing)

    async def _backlog(self) -> int:
        figures = await self._reader.queue_figures("")
        pending = int(figures.get("pending", 0))
        if pending > self._policy.queue_backlog:
            await self._alerts.fire(
                AlertSpec(
                    dedupe_key=QUEUE_BACKLOG_KEY,
                    tenant_id="",
                    kind=AlertKind.QUEUE_BACKLOG,
                    severity=Severity.WARNING,
                    title=f"Publishing backlog: {pending:,} jobs pending",
                    message=f"{pending:,} publish jobs are waiting for a retry (threshold "
                    f"{self._policy.queue_backlog:,}). Check the error distribution and "
                    "platform outages.",
                )
            )
            return 1
        await self._alerts.resolve(
            QUEUE_BACKLOG_KEY, f"The publishing backlog is down to {pending:,} jobs."
        )
        return 0
