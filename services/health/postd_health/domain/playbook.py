"""The auto-heal playbook, driven by ``connection.events``.

detect (the status machine) → classify (heals by itself, or needs a person) → pause
and protect (the publisher pauses a connection's jobs when it leaves healthy; nothing
to do here) → notify with a one-click reconnect link asking for the exact scopes →
after the reconnect, tell how many posts fell due meanwhile and offer the backfill.
"""

from __future__ import annotations

from collections.abc import Callable

from postd_common.logging import get_logger
from postd_health.domain import wording
from postd_health.domain.alerts import (
    AlertEngine,
    connection_key,
    expiring_key,
    refresh_failed_key,
)
from postd_health.domain.model import (
    HEALS_ON_SUCCESS,
    AlertKind,
    AlertSpec,
    Category,
    Cause,
    ConnectionInfo,
    MissedJobs,
    Severity,
    Status,
    StatusChange,
    Watch,
)
from postd_health.domain.rules import PlatformRules, apply_plan
from postd_health.ports import (
    Clock,
    ConnectionGone,
    Connectors,
    HealthLog,
    PeerUnavailable,
    Publisher,
    ReconnectLink,
    WatchStore,
)

log = get_logger(__name__)

_CONNECT_SOURCES = frozenset({"connect", "reconnect"})


class Playbook:
    def __init__(
        self,
        connectors: Connectors,
        publisher: Publisher,
        alerts: AlertEngine,
        rules: PlatformRules,
        *,
        backfill_url: Callable[[Watch], str],
    ) -> None:
        self._connectors = connectors
        self._publisher = publisher
        self._alerts = alerts
        self._rules = rules
        self._backfill_url = backfill_url

    async def reconnect_url(self, watch: Watch) -> str:
        """The one-click link, or "" when connectors cannot make one now."""
        return (await self._link(watch)).url

    async def _link(self, watch: Watch) -> ReconnectLink:
        try:
            return await self._connectors.reconnect_link(
                watch.tenant_id, watch.connection_id, watch.platform, watch.capabilities
            )
        except (PeerUnavailable, ConnectionGone) as exc:
            log.warning("no reconnect link", connection_id=watch.connection_id, error=str(exc))
            return ReconnectLink("")

    async def on_change(self, change: StatusChange, watch: Watch) -> None:
        if change.status in (Status.ATTENTION, Status.REVOKED):
            await self._needs_attention(change, watch)
        elif change.status is Status.HEALTHY and change.previous_status in (
            Status.ATTENTION,
            Status.REVOKED,
            Status.EXPIRING_SOON,
        ):
            await self._recovered(change, watch)

    async def _needs_attention(self, change: StatusChange, watch: Watch) -> None:
        name = self._rules.display_name(watch.platform)
        account = watch.account_name or change.account_name or "this account"
        person = watch.status_cause not in HEALS_ON_SUCCESS
        found = await self._link(watch) if person else ReconnectLink("")
        link = found.url
        paused = f"Publishing to {account} is paused; scheduled posts are kept, not dropped."
        if person:
            asks = f" (it asks for: {', '.join(found.scopes)})" if found.scopes else ""
            then = (
                f" Reconnect {account} to resume{asks}: {link}"
                if link
                else f" Reconnect {account} from the connections page to resume."
            )
        else:
            then = (
                f" POSTD keeps checking and resumes by itself once {name} answers again; "
                "nothing to do unless this lasts."
            )
        revoked = change.status is Status.REVOKED
        await self._alerts.fire(
            AlertSpec(
                dedupe_key=connection_key(watch.connection_id),
                tenant_id=watch.tenant_id,
                kind=AlertKind.CONNECTION_ATTENTION,
                severity=Severity.CRITICAL if revoked or person else Severity.WARNING,
                title=f"{name}: {account} "
                + ("lost its access" if revoked else "needs attention" if person else "is failing"),
                message=f"{change.reason.rstrip('.')}. {paused}{then}",
                platform=watch.platform,
                connection_id=watch.connection_id,
                action_url=link,
            )
        )

    async def _recovered(self, change: StatusChange, watch: Watch) -> None:
        name = self._rules.display_name(watch.platform)
        account = watch.account_name or change.account_name or "The account"
        missed = await self._missed(watch)
        message = f"{account} on {name} works again; publishing resumed."
        action = ""
        if missed.count:
            window = ""
            if missed.oldest_due_at is not None and missed.newest_due_at is not None:
                window = (
                    f" (due between {wording.day(missed.oldest_due_at)} and "
                    f"{wording.day(missed.newest_due_at)})"
                )
            plural = "post" if missed.count == 1 else "posts"
            message += (
                f" {missed.count} scheduled {plural} fell due while it was paused{window}: "
                "publish them now, or cancel them."
            )
            action = self._backfill_url(watch)
        await self._alerts.resolve(connection_key(watch.connection_id), message, action)
        await self._alerts.resolve(
            expiring_key(watch.connection_id), f"{account} on {name} was reconnected."
        )
        await self._alerts.resolve(
            refresh_failed_key(watch.connection_id),
            f"The {wording.subject(name, watch.account_name)} works again.",
        )

    async def _missed(self, watch: Watch) -> MissedJobs:
        try:
            return await self._publisher.count_missed(watch.tenant_id, watch.connection_id)
        except (PeerUnavailable, ConnectionGone) as exc:
            log.warning("missed jobs unknown", connection_id=watch.connection_id, error=str(exc))
            return MissedJobs(0)


class ConnectionEvents:
    """Applies ``connection.events`` (connectors' announcements) to the watch and the
    history, then runs the playbook for the latest state."""

    def __init__(
        self,
        store: WatchStore,
        log_store: HealthLog,
        connectors: Connectors,
        rules: PlatformRules,
        playbook: Playbook,
        *,
        clock: Clock,
    ) -> None:
        self._store = store
        self._log = log_store
        self._connectors = connectors
        self._rules = rules
        self._playbook = playbook
        self._clock = clock

    async def handle(self, change: StatusChange) -> None:
        await self._log.record_status_change(change)
        info: ConnectionInfo | None = None
        existing = await self._store.get_watch(change.connection_id, change.tenant_id)
        if (
            existing is None
            or change.source in _CONNECT_SOURCES
            or (change.status is Status.HEALTHY and existing.status is not Status.HEALTHY)
        ):
            try:
                info = await self._connectors.get_connection(change.tenant_id, change.connection_id)
            except ConnectionGone:
                info = None
        now = self._clock()
        rule = self._rules.for_platform(change.platform)

        def apply(current: Watch | None) -> Watch | None:
            if current is None:
                if info is None:
                    return None
                watch = Watch.from_connection(info)
            else:
                watch = current
                if watch.tenant_id != change.tenant_id:
                    return None
            # One connection's events arrive in order (keyed by connection id): the
            # latest one is connectors' word, whatever health wrote locally meanwhile.
            if watch.status is not change.status:
                watch.status_cause = _cause_of(change)
                watch.status = change.status
                watch.status_since = change.occurred_at
            watch.status_reason = change.reason or watch.status_reason
            if info is not None:
                status, cause, reason = watch.status, watch.status_cause, watch.status_reason
                watch.absorb(info)
                watch.status, watch.status_cause, watch.status_reason = status, cause, reason
            if change.source in _CONNECT_SOURCES:
                watch.status_cause = Cause.NONE
                watch.consecutive_failures = 0
                watch.first_failure_at = None
                watch.refresh_failures = 0
                watch.retry_at = None
                watch.refresh_requested_at = None
            watch.account_name = watch.account_name or change.account_name
            return apply_plan(watch, rule, now)

        watch = await self._store.mutate_watch(change.connection_id, apply)
        if watch is None or watch.status is not change.status:
            return  # an older event, or one for a connection nobody knows
        await self._playbook.on_change(change, watch)


def _cause_of(change: StatusChange) -> Cause:
    if change.source in _CONNECT_SOURCES or change.status is Status.HEALTHY:
        return Cause.NONE
    if change.source == "disconnect" or change.status is Status.DISCONNECTED:
        return Cause.CONNECTORS
    if change.source == "webhook":
        return Cause.WEBHOOK
    return {
        Category.AUTH_REVOKED: Cause.AUTH,
        Category.PERMISSION_MISSING: Cause.PERMISSION,
        Category.AUTH_EXPIRED: Cause.EXPIRY,
        Category.TRANSIENT: Cause.TRANSIENT_BUDGET,
        Category.PLATFORM_OUTAGE: Cause.TRANSIENT_BUDGET,
    }.get(change.category or Category.UNKNOWN, Cause.CONNECTORS)
