"""The expiry watch, synthetic checks and the status machine's driver.

:class:`ConnectionMonitor` claims due rows of the watch (several replicas share the
work: a claimed row is skipped by the others until its lease ends), refreshes tokens
ahead of expiry by each platform's rule, runs the cheap synthetic check, warns where
no refresh exists, feeds every outcome to the status machine and asks connectors for
the transitions it calls for. Publish outcomes and webhooks come in through
:meth:`ConnectionMonitor.observe`.

Single flight: a row is worked on by one holder of its claim at a time, and connectors
keeps its own single flight per connection, so a rotating refresh token is spent once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from postd_common import errors
from postd_common.logging import get_logger
from postd_health.domain import wording
from postd_health.domain.alerts import (
    AlertEngine,
    expiring_key,
    refresh_failed_key,
    severity_for_stage,
)
from postd_health.domain.model import (
    AlertKind,
    AlertSpec,
    Category,
    Cause,
    CheckKind,
    CheckRecord,
    ConnectionInfo,
    Failure,
    Severity,
    Source,
    Status,
    Watch,
)
from postd_health.domain.rules import PlatformRule, PlatformRules, apply_plan, person_deadline
from postd_health.domain.status import (
    Signal,
    TransientBudget,
    Transition,
    judge_expiry,
    observe,
)
from postd_health.ports import (
    CallSample,
    CheckReport,
    Clock,
    ConnectionGone,
    Connectors,
    HealthLog,
    Metrics,
    PeerUnavailable,
    RefreshOutcome,
    StatusConflict,
    WatchStore,
)

log = get_logger(__name__)

# When several signals call for transitions at once, the most serious wins.
_RANK = {
    Status.HEALTHY: 0,
    Status.EXPIRING_SOON: 1,
    Status.ATTENTION: 2,
    Status.REVOKED: 3,
}


@dataclass(frozen=True)
class MonitorPolicy:
    budget: TransientBudget = field(default_factory=TransientBudget)
    lease: timedelta = timedelta(minutes=2)
    batch_size: int = 50
    concurrency: int = 8
    # Passing refresh failures in a row before "token refresh failed" is alerted
    # (a failure that needs a person alerts at once).
    refresh_alert_after: int = 2
    # How long RunCheckNow waits for another worker's claim on the same row.
    claim_wait: timedelta = timedelta(seconds=20)
    peer_retry: timedelta = timedelta(seconds=60)
    worker_id: str = field(default_factory=lambda: f"health-{uuid.uuid4().hex[:8]}")


class HealthStore(WatchStore, HealthLog, Metrics, Protocol):
    """The parts of the store the monitor uses."""


@dataclass(frozen=True)
class CheckNowResult:
    check: CheckRecord
    refreshed: bool
    status: Status
    status_reason: str


@dataclass
class _Work:
    """What one pass over a claimed row learned."""

    signals: list[Signal] = field(default_factory=list)
    records: list[CheckRecord] = field(default_factory=list)
    info: ConnectionInfo | None = None
    refreshed: bool = False
    refresh_failure: Failure | None = None
    checked: bool = False
    samples: list[CallSample] = field(default_factory=list)


ReconnectLinker = Callable[[Watch], Awaitable[str]]


class ConnectionMonitor:
    def __init__(
        self,
        store: HealthStore,
        connectors: Connectors,
        rules: PlatformRules,
        alerts: AlertEngine,
        *,
        policy: MonitorPolicy,
        clock: Clock,
        reconnect_url: ReconnectLinker | None = None,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._rules = rules
        self._alerts = alerts
        self._policy = policy
        self._clock = clock
        self._reconnect_url = reconnect_url
        self._semaphore = asyncio.Semaphore(policy.concurrency)

    # ------------------------------------------------------------------ scheduling

    async def run_once(self) -> int:
        """Claim the rows that are due and work on them; returns how many."""
        now = self._clock()
        claimed = await self._store.claim_due(
            now, self._policy.batch_size, self._policy.lease, self._policy.worker_id
        )
        if claimed:
            await asyncio.gather(*(self._guarded(w) for w in claimed))
        return len(claimed)

    async def _guarded(self, watch: Watch) -> None:
        async with self._semaphore:
            try:
                await self._work(watch, CheckKind.SCHEDULED, refresh=None)
            except PeerUnavailable as exc:
                log.warning(
                    "peer unavailable; row released for a later try",
                    connection_id=watch.connection_id,
                    error=str(exc),
                )

    async def run_check_now(
        self, tenant_id: str, connection_id: str, *, refresh: bool, requested_by: str
    ) -> CheckNowResult:
        """ "Refresh now": claim the row (waiting for another worker's claim), refresh if
        asked, check, judge. Raises NotFound, FailedPrecondition, Unavailable."""
        watch = await self._claim_waiting(tenant_id, connection_id)
        if watch.status is Status.DISCONNECTED:
            await self._store.mutate_watch(connection_id, _keep, claim_id=watch.claim_id)
            raise errors.FailedPrecondition(
                "The connection is disconnected; reconnect it before checking.",
                code="disconnected",
            )
        log.info("check requested", connection_id=connection_id, by=requested_by)
        result = await self._work(watch, CheckKind.ON_DEMAND, refresh=refresh)
        assert result is not None
        return result

    async def _claim_waiting(self, tenant_id: str, connection_id: str) -> Watch:
        deadline = self._clock() + self._policy.claim_wait
        delay = 0.05
        while True:
            try:
                claimed = await self._store.claim_one(
                    connection_id,
                    tenant_id,
                    self._clock(),
                    self._policy.lease,
                    self._policy.worker_id,
                )
            except LookupError as exc:
                claimed = await self._adopt(tenant_id, connection_id)
                if claimed is None:
                    raise errors.NotFound(
                        "No such connection.", code="connection_not_found"
                    ) from exc
            if claimed is not None:
                return claimed
            if self._clock() >= deadline:
                raise errors.Unavailable(
                    "Another check of this connection is running; try again shortly.",
                    retry_after=2.0,
                )
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    async def _adopt(self, tenant_id: str, connection_id: str) -> Watch | None:
        """Start watching a connection health has not heard of (events missed, or
        created before health ran), then claim it."""
        try:
            info = await self._connectors.get_connection(tenant_id, connection_id)
        except ConnectionGone:
            return None
        await self.track(info)
        return await self._store.claim_one(
            connection_id, tenant_id, self._clock(), self._policy.lease, self._policy.worker_id
        )

    async def track(self, info: ConnectionInfo) -> Watch | None:
        """Insert or refresh the watch row from connectors' facts."""
        now = self._clock()
        rule = self._rules.for_platform(info.platform)

        def mutate(current: Watch | None) -> Watch:
            if current is None:
                watch = Watch.from_connection(info)
                watch.status_since = info.status_changed_at or now
            else:
                watch = current
                status_before = watch.status
                watch.absorb(info)
                if watch.status is status_before and watch.status_cause is Cause.NONE:
                    watch.status_reason = info.status_reason or watch.status_reason
            return apply_plan(watch, rule, now)

        return await self._store.mutate_watch(info.connection_id, mutate)

    # ------------------------------------------------------------------ one row

    async def _work(
        self, watch: Watch, kind: CheckKind, *, refresh: bool | None
    ) -> CheckNowResult | None:
        now = self._clock()
        rule = self._rules.for_platform(watch.platform)
        due_refresh = watch.next_refresh_at is not None and watch.next_refresh_at <= now
        do_refresh = due_refresh if refresh is None else refresh
        do_check = kind is CheckKind.ON_DEMAND or (
            watch.next_check_at is not None and watch.next_check_at <= now
        )
        do_warn = watch.next_warn_at is not None and watch.next_warn_at <= now
        work = _Work()
        try:
            if do_refresh:
                await self._refresh(watch, work, now, forced=refresh is True)
            if do_check and not work.checked:
                report = await self._connectors.check(watch.tenant_id, watch.connection_id)
                self._take_check(watch, work, report, kind)
        except ConnectionGone as exc:
            await self._gone(watch, exc)
            if kind is CheckKind.ON_DEMAND:
                raise errors.NotFound("No such connection.", code="connection_not_found") from exc
            return None
        except PeerUnavailable:
            retry = now + self._policy.peer_retry

            def later(current: Watch | None) -> Watch | None:
                if current is None:
                    return None
                current.due_at = min(filter(None, (current.due_at, retry)), default=retry)
                return current

            await self._store.mutate_watch(watch.connection_id, later, claim_id=watch.claim_id)
            raise

        chosen: list[Transition] = []
        warnings: list[tuple[int, int, datetime]] = []

        def mutate(current: Watch | None) -> Watch | None:
            if current is None:
                return None
            w = current
            if work.info is not None:
                w.absorb(work.info)
            for signal in work.signals:
                transition = observe(w, signal, rule, self._policy.budget)
                if transition is not None:
                    chosen.append(transition)
            if work.checked or work.refreshed:
                w.last_check_at = now
            if not chosen:
                expiry = judge_expiry(w, rule, now)
                if expiry is not None:
                    chosen.append(expiry)
            if do_warn:
                warnings.extend(_due_warnings(w, rule, now))
                w.warned_days = tuple(sorted({*w.warned_days, *(d for _, d, _ in warnings)}))
            return apply_plan(w, rule, now)

        stored = await self._store.mutate_watch(
            watch.connection_id, mutate, claim_id=watch.claim_id
        )
        if stored is None:
            return None
        status = stored.status
        reason = stored.status_reason
        if chosen:
            transition = max(chosen, key=lambda t: _RANK.get(t.target, 0))
            if transition.target is not stored.status:
                status = await self.apply_transition(stored, transition)
                reason = transition.reason if status is transition.target else reason
        for record in work.records:
            await self._store.record_check(replace(record, status_after=status))
        for sample in work.samples:
            await self._store.add_sample(sample)
        await self._alert_refresh(stored, work, rule.display_name)
        for index, _days, deadline in warnings:
            if index >= 0:
                await self._warn(stored, rule, index, deadline, now)
        if kind is CheckKind.ON_DEMAND:
            last = work.records[-1] if work.records else None
            if last is None:
                raise errors.Unavailable("The check did not run; try again.", retry_after=2.0)
            return CheckNowResult(
                replace(last, status_after=status), work.refreshed, status, reason
            )
        return None

    async def _refresh(self, watch: Watch, work: _Work, now: datetime, *, forced: bool) -> None:
        left = wording.until(watch.expires_at, now) if watch.expires_at else "no expiry"
        report = await self._connectors.refresh(
            watch.tenant_id,
            watch.connection_id,
            reason=f"health: token expires {left}" if not forced else "health: refresh now",
            force=True,
        )
        if report.connection is not None:
            work.info = report.connection
        ok = report.outcome in (RefreshOutcome.REFRESHED, RefreshOutcome.NOT_DUE)
        if report.outcome is RefreshOutcome.CHECKED and report.check is not None:
            self._take_check(watch, work, report.check, CheckKind.REFRESH)
            return
        at = self._clock()
        if ok:
            work.refreshed = report.outcome is RefreshOutcome.REFRESHED
            work.signals.append(Signal.success(Source.REFRESH, at))
        else:
            failure = report.failure or Failure(Category.UNKNOWN, platform=watch.platform)
            work.refresh_failure = failure
            work.signals.append(Signal.failed(Source.REFRESH, at, failure))
        work.records.append(
            _record(
                watch, CheckKind.REFRESH, ok, at, report.latency, report.failure if not ok else None
            )
        )
        work.samples.append(
            CallSample(
                at,
                watch.tenant_id,
                watch.platform,
                "refresh",
                ok,
                None if ok else work.refresh_failure,
                report.latency,
            )
        )

    def _take_check(self, watch: Watch, work: _Work, report: CheckReport, kind: CheckKind) -> None:
        work.checked = True
        failure = report.failure
        if report.ok and report.granted_scopes and watch.scopes:
            missing = tuple(s for s in watch.scopes if s not in set(report.granted_scopes))
            if missing:
                failure = Failure(
                    Category.PERMISSION_MISSING,
                    platform=watch.platform,
                    message=f"{self._rules.display_name(watch.platform)} no longer grants "
                    f"{', '.join(missing)}.",
                    missing_scopes=missing,
                )
        ok = report.ok and failure is None
        # Health judges on its own clock (the budget's span, the log), not the peer's.
        at = self._clock()
        if ok:
            work.signals.append(Signal.success(Source.HEALTH_CHECK, at))
        else:
            failure = failure or Failure(Category.UNKNOWN, platform=watch.platform)
            work.signals.append(Signal.failed(Source.HEALTH_CHECK, at, failure))
        work.records.append(_record(watch, kind, ok, at, report.latency, None if ok else failure))
        work.samples.append(
            CallSample(
                at,
                watch.tenant_id,
                watch.platform,
                "check",
                report.ok,
                report.failure,
                report.latency,
            )
        )

    # ------------------------------------------------------------------ signals

    async def observe(self, tenant_id: str, connection_id: str, signal: Signal) -> Status | None:
        """Feed one outside signal (a publish outcome, a webhook) to the status machine
        and request the transition it calls for. Returns the status afterwards, or
        None when the connection is unknown to connectors."""
        now = self._clock()
        chosen: list[Transition] = []
        known = True

        def mutate(current: Watch | None) -> Watch | None:
            nonlocal known
            if current is None or current.tenant_id != tenant_id:
                known = False
                return None
            rule = self._rules.for_platform(current.platform)
            transition = observe(current, signal, rule, self._policy.budget)
            if transition is not None:
                chosen.append(transition)
            return apply_plan(current, rule, now)

        stored = await self._store.mutate_watch(connection_id, mutate)
        if not known:
            try:
                info = await self._connectors.get_connection(tenant_id, connection_id)
            except ConnectionGone:
                return None
            await self.track(info)
            stored = await self._store.mutate_watch(connection_id, mutate)
        if stored is None:
            return None
        if chosen and chosen[-1].target is not stored.status:
            return await self.apply_transition(stored, chosen[-1])
        return stored.status

    async def apply_transition(self, watch: Watch, transition: Transition) -> Status:
        """Ask connectors for the change (compare-and-swap on the status health saw);
        on success record it on the watch. Returns the status now."""
        now = self._clock()
        rule = self._rules.for_platform(watch.platform)
        try:
            update = await self._connectors.update_status(
                watch.tenant_id,
                watch.connection_id,
                status=transition.target,
                expected=watch.status,
                reason=transition.reason,
                category=transition.category,
                failure=transition.failure,
                source=transition.source.value,
            )
        except StatusConflict:
            # Someone else changed it first; take connectors' word and judge again later.
            info = await self._connectors.get_connection(watch.tenant_id, watch.connection_id)
            await self.track(info)
            log.info(
                "status changed elsewhere first",
                connection_id=watch.connection_id,
                wanted=transition.target.value,
                now=info.status.value,
            )
            return info.status
        except ConnectionGone as exc:
            await self._gone(watch, exc)
            return Status.DISCONNECTED

        def record(current: Watch | None) -> Watch | None:
            if current is None:
                return None
            if current.status is not transition.target:
                current.status_since = now
            current.absorb(update.connection)
            current.status = transition.target
            current.status_reason = transition.reason
            current.status_cause = transition.cause
            return apply_plan(current, rule, now)

        await self._store.mutate_watch(watch.connection_id, record)
        log.info(
            "status transition",
            connection_id=watch.connection_id,
            tenant_id=watch.tenant_id,
            previous=watch.status.value,
            status=transition.target.value,
            cause=transition.cause.value,
            source=transition.source.value,
            changed=update.changed,
        )
        return transition.target

    async def _gone(self, watch: Watch, exc: ConnectionGone) -> None:
        def disconnect(current: Watch | None) -> Watch | None:
            if current is None:
                return None
            current.status = Status.DISCONNECTED
            current.status_reason = str(exc) or "The connection no longer exists."
            current.status_cause = Cause.CONNECTORS
            current.status_since = self._clock()
            return apply_plan(current, self._rules.for_platform(current.platform), self._clock())

        await self._store.mutate_watch(watch.connection_id, disconnect, claim_id=watch.claim_id)

    # ------------------------------------------------------------------ alerts

    async def _alert_refresh(self, watch: Watch, work: _Work, platform_name: str) -> None:
        key = refresh_failed_key(watch.connection_id)
        if work.refreshed:
            await self._alerts.resolve(
                key, f"The {wording.subject(platform_name, watch.account_name)} refreshed again."
            )
            return
        failure = work.refresh_failure
        if failure is None:
            return
        if failure.category.passing and watch.refresh_failures < self._policy.refresh_alert_after:
            return
        person = not failure.category.passing
        await self._alerts.fire(
            AlertSpec(
                dedupe_key=key,
                tenant_id=watch.tenant_id,
                kind=AlertKind.TOKEN_REFRESH_FAILED,
                severity=Severity.CRITICAL if person else Severity.WARNING,
                title=f"{platform_name} token refresh failing for "
                f"{watch.account_name or watch.connection_id}",
                message=(
                    f"POSTD could not refresh the "
                    f"{wording.subject(platform_name, watch.account_name)}: "
                    f"{(failure.message or failure.category.value).rstrip('.')}. "
                    + (
                        "A person must reconnect the account."
                        if person
                        else "POSTD keeps retrying; nothing to do yet."
                    )
                ),
                platform=watch.platform,
                connection_id=watch.connection_id,
                action_url=await self._link(watch) if person else "",
            )
        )

    async def _warn(
        self, watch: Watch, rule: PlatformRule, index: int, deadline: datetime, now: datetime
    ) -> None:
        platform_name = rule.display_name
        what = wording.subject(platform_name, watch.account_name)
        found = person_deadline(watch, rule)
        why = (
            f"{platform_name} then needs a person to sign in again."
            if found is not None and found.reason_code == "refresh_token_expires"
            else rule.explain_no_refresh()
        )
        await self._alerts.fire(
            AlertSpec(
                dedupe_key=expiring_key(watch.connection_id),
                tenant_id=watch.tenant_id,
                kind=AlertKind.CONNECTION_ATTENTION,
                severity=severity_for_stage(index, len(rule.warn_days)),
                title=f"{what[0].upper()}{what[1:]} expires {wording.until(deadline, now)}",
                message=f"{what[0].upper()}{what[1:]} expires {wording.until(deadline, now)} "
                f"({wording.day(deadline)}); {why} Reconnect before then to keep publishing.",
                platform=watch.platform,
                connection_id=watch.connection_id,
                action_url=await self._link(watch),
            )
        )

    async def _link(self, watch: Watch) -> str:
        if self._reconnect_url is None:
            return ""
        return await self._reconnect_url(watch)


def _keep(current: Watch | None) -> Watch | None:
    return current


def _due_warnings(
    watch: Watch, rule: PlatformRule, now: datetime
) -> list[tuple[int, int, datetime]]:
    """Warnings whose time has come (index in the rule's stages, days, deadline); only
    the latest is told when several have passed, the rest get index -1 (marked as
    given, not told)."""
    deadline = person_deadline(watch, rule)
    if deadline is None or watch.status is Status.REVOKED:
        return []
    passed = [
        (i, d)
        for i, d in enumerate(rule.warn_days)
        if d not in watch.warned_days and deadline.at - timedelta(days=d) <= now
    ]
    if not passed:
        return []
    return [(i, d, deadline.at) for i, d in passed[-1:]] + [
        (-1, d, deadline.at) for _, d in passed[:-1]
    ]


def _record(
    watch: Watch,
    kind: CheckKind,
    ok: bool,
    at: datetime,
    latency: timedelta | None,
    failure: Failure | None,
) -> CheckRecord:
    return CheckRecord(
        id=str(uuid.uuid4()),
        tenant_id=watch.tenant_id,
        connection_id=watch.connection_id,
        platform=watch.platform,
        kind=kind,
        ok=ok,
        checked_at=at,
        latency=latency,
        failure=failure,
        status_after=watch.status,
    )
