"""Notifications: alerts from the ``alerts`` topic become in-app notifications per
tenant plus email and Slack messages, each told once per incident state, then sent
(and retried, rate-limited per tenant and channel) by :class:`DeliveryWorker`.

An operator-wide platform outage is told to every tenant with a connection on that
platform. Global recipients (settings) hear operator-wide alerts and tenant alerts
at or above their minimum severity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from postd_common.logging import get_logger
from postd_health.domain.model import (
    Alert,
    AlertKind,
    AlertState,
    Channel,
    Delivery,
    NotificationRoutes,
    Severity,
)
from postd_health.ports import (
    Clock,
    DeliveryFailed,
    DeliveryRequest,
    EmailSender,
    NotificationStore,
    SlackSender,
    WatchStore,
)

log = get_logger(__name__)

GLOBAL = ""  # the operators' inbox and routes
SLACK_TENANT = "tenant"
SLACK_GLOBAL = "global"


@dataclass(frozen=True)
class GlobalRoutes:
    emails: tuple[str, ...] = ()
    slack_webhook_url: str = field(default="", repr=False)
    min_severity: Severity = Severity.WARNING


@dataclass(frozen=True)
class RateLimit:
    """At most ``messages`` per ``window`` per tenant and channel; the rest wait."""

    messages: int = 20
    window: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class DeliveryPolicy:
    email_limit: RateLimit = field(default_factory=RateLimit)
    slack_limit: RateLimit = field(default_factory=lambda: RateLimit(60, timedelta(hours=1)))
    max_attempts: int = 8
    lease: timedelta = timedelta(minutes=2)
    batch_size: int = 50

    def limit(self, channel: Channel) -> RateLimit:
        return self.email_limit if channel is Channel.EMAIL else self.slack_limit


def subject_of(alert: Alert) -> str:
    prefix = "Resolved: " if alert.state is AlertState.RESOLVED else ""
    return f"[POSTD] {prefix}{alert.title}"


def body_of(alert: Alert) -> str:
    lines = [alert.message]
    if alert.action_url:
        verb = "Act here" if alert.state is AlertState.FIRING else "Next step"
        lines += ["", f"{verb}: {alert.action_url}"]
    lines += ["", "— POSTD connection health"]
    return "\n".join(lines)


def slack_text(alert: Alert) -> str:
    mark = {
        Severity.CRITICAL: ":red_circle:",
        Severity.WARNING: ":warning:",
    }.get(alert.severity, ":information_source:")
    if alert.state is AlertState.RESOLVED:
        mark = ":white_check_mark:"
    text = f"{mark} *{subject_of(alert).removeprefix('[POSTD] ')}*\n{alert.message}"
    if alert.action_url:
        label = "Reconnect" if alert.state is AlertState.FIRING else "Open"
        text += f"\n<{alert.action_url}|{label}>"
    return text


class Notifier:
    """Turns one alert into notifications and queued deliveries (idempotent)."""

    def __init__(
        self,
        store: NotificationStore,
        watch: WatchStore,
        *,
        global_routes: GlobalRoutes,
        clock: Clock,
        on_queued: object = None,
    ) -> None:
        self._store = store
        self._watch = watch
        self._global = global_routes
        self._clock = clock
        self._on_queued = on_queued

    async def handle(self, alert: Alert) -> int:
        """Store what this alert means for each audience; returns notifications made."""
        made = 0
        now = self._clock()
        for tenant in await self._tenants(alert):
            routes = await self._store.routes(tenant)
            wanted = self._requests(alert, routes)
            if await self._store.add_notification(alert, tenant, wanted, now) is not None:
                made += 1
        if self._global_hears(alert):
            wanted = self._requests(
                alert,
                NotificationRoutes(
                    GLOBAL,
                    self._global.emails,
                    self._global.slack_webhook_url,
                    self._global.min_severity,
                ),
                slack_target=SLACK_GLOBAL,
            )
            if await self._store.add_notification(alert, GLOBAL, wanted, now) is not None:
                made += 1
        if made and callable(self._on_queued):
            self._on_queued()
        return made

    async def _tenants(self, alert: Alert) -> list[str]:
        if alert.tenant_id:
            return [alert.tenant_id]
        if alert.kind is AlertKind.PLATFORM_OUTAGE and alert.platform:
            return await self._watch.tenants_on_platform(alert.platform)
        return []

    def _global_hears(self, alert: Alert) -> bool:
        if not alert.tenant_id:
            return True
        return alert.severity >= self._global.min_severity and bool(
            self._global.emails or self._global.slack_webhook_url
        )

    def _requests(
        self, alert: Alert, routes: NotificationRoutes, *, slack_target: str = SLACK_TENANT
    ) -> list[DeliveryRequest]:
        if alert.state is AlertState.FIRING and alert.severity < routes.min_severity:
            return []
        subject, body = subject_of(alert), body_of(alert)
        wanted = [DeliveryRequest(Channel.EMAIL, to, subject, body) for to in routes.emails]
        if routes.slack_webhook_url:
            wanted.append(DeliveryRequest(Channel.SLACK, slack_target, subject, slack_text(alert)))
        return wanted


class DeliveryWorker:
    """Sends queued email and Slack messages; retries with backoff; respects the rate
    limits; gives up after ``max_attempts`` or on a permanent refusal."""

    def __init__(
        self,
        store: NotificationStore,
        email: EmailSender,
        slack: SlackSender,
        *,
        global_routes: GlobalRoutes,
        policy: DeliveryPolicy,
        clock: Clock,
    ) -> None:
        self._store = store
        self._email = email
        self._slack = slack
        self._global = global_routes
        self._policy = policy
        self._clock = clock

    async def run_once(self) -> int:
        now = self._clock()
        batch = await self._store.claim_deliveries(now, self._policy.batch_size, self._policy.lease)
        for delivery in batch:
            await self._send(delivery)
        return len(batch)

    async def _send(self, delivery: Delivery) -> None:
        now = self._clock()
        limit = self._policy.limit(delivery.channel)
        sent = await self._store.sent_since(
            delivery.tenant_id, delivery.channel, now - limit.window
        )
        if sent >= limit.messages:
            wait = limit.window / max(1, limit.messages)
            await self._store.finish_delivery(
                delivery.id, sent=False, error="rate limited", retry_at=now + wait, now=now
            )
            return
        try:
            if delivery.channel is Channel.EMAIL:
                await self._email.send(delivery.target, delivery.subject, delivery.body)
            else:
                url = await self._slack_url(delivery)
                if not url:
                    raise DeliveryFailed("no Slack webhook is configured", permanent=True)
                await self._slack.send(url, delivery.body)
        except DeliveryFailed as exc:
            give_up = exc.permanent or delivery.attempts >= self._policy.max_attempts
            delay = exc.retry_after or min(3600.0, 15.0 * 2 ** (delivery.attempts - 1))
            log.warning(
                "delivery failed",
                channel=delivery.channel.value,
                tenant_id=delivery.tenant_id,
                alert_id=delivery.alert_id,
                attempts=delivery.attempts,
                giving_up=give_up,
                error=str(exc),
            )
            await self._store.finish_delivery(
                delivery.id,
                sent=False,
                error=str(exc),
                retry_at=None if give_up else now + timedelta(seconds=delay),
                now=now,
            )
            return
        await self._store.finish_delivery(delivery.id, sent=True, error="", retry_at=None, now=now)
        log.info(
            "delivery sent",
            channel=delivery.channel.value,
            tenant_id=delivery.tenant_id,
            alert_id=delivery.alert_id,
        )

    async def _slack_url(self, delivery: Delivery) -> str:
        if delivery.target == SLACK_GLOBAL:
            return self._global.slack_webhook_url
        routes = await self._store.routes(delivery.tenant_id)
        return routes.slack_webhook_url
