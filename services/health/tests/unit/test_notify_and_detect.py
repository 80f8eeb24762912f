"""The notifier, the delivery worker, the alert engine, the detectors and the playbook
on fakes of their ports: who hears what, rate limits, retries, dedupe."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postd_health.domain.alerts import AlertEngine
from postd_health.domain.dashboard import percentile
from postd_health.domain.detectors import CallTotals, DetectorPolicy, Detectors
from postd_health.domain.model import (
    Alert,
    AlertKind,
    AlertSpec,
    AlertState,
    Cause,
    Channel,
    Delivery,
    MissedJobs,
    Notification,
    NotificationRoutes,
    Severity,
    Status,
    StatusChange,
    Watch,
)
from postd_health.domain.notify import (
    DeliveryPolicy,
    DeliveryWorker,
    GlobalRoutes,
    Notifier,
    RateLimit,
)
from postd_health.domain.playbook import Playbook
from postd_health.domain.rules import PlatformRules
from postd_health.ports import DeliveryFailed, DeliveryRequest, OutboxMessage, ReconnectLink

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = PlatformRules.load()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeAlertStore:
    open: dict[str, Alert] = field(default_factory=dict)
    outbox: list[Alert] = field(default_factory=list)

    async def open_alert(self, spec: AlertSpec, now: datetime, topic: str) -> Alert | None:
        current = self.open.get(spec.dedupe_key)
        if current is not None and spec.severity <= current.severity:
            return None
        alert = Alert(
            alert_id=current.alert_id if current else str(uuid.uuid4()),
            tenant_id=spec.tenant_id,
            kind=spec.kind,
            severity=spec.severity,
            state=AlertState.FIRING,
            title=spec.title,
            message=spec.message,
            dedupe_key=spec.dedupe_key,
            started_at=current.started_at if current else now,
            platform=spec.platform,
            connection_id=spec.connection_id,
            action_url=spec.action_url,
        )
        self.open[spec.dedupe_key] = alert
        self.outbox.append(alert)
        return alert

    async def resolve_alert(
        self, dedupe_key: str, message: str, now: datetime, topic: str, *, action_url: str = ""
    ) -> Alert | None:
        current = self.open.pop(dedupe_key, None)
        if current is None:
            return None
        done = replace(
            current,
            state=AlertState.RESOLVED,
            message=message,
            resolved_at=now,
            action_url=action_url or current.action_url,
        )
        self.outbox.append(done)
        return done

    async def open_alerts(self, kind: AlertKind, prefix: str) -> list[Alert]:
        return [a for k, a in self.open.items() if a.kind is kind and k.startswith(prefix)]

    async def relay_outbox(
        self, limit: int, publish: Callable[[Sequence[OutboxMessage]], Awaitable[None]]
    ) -> int:
        return 0


@dataclass
class FakeNotificationStore:
    routes_by_tenant: dict[str, NotificationRoutes] = field(default_factory=dict)
    notifications: list[tuple[Notification, list[DeliveryRequest]]] = field(default_factory=list)
    pending: list[Delivery] = field(default_factory=list)
    finished: list[tuple[str, bool, str, datetime | None]] = field(default_factory=list)
    sent: list[tuple[str, Channel, datetime]] = field(default_factory=list)

    async def add_notification(
        self, alert: Alert, tenant_id: str, deliveries: Sequence[DeliveryRequest], now: datetime
    ) -> Notification | None:
        for n, _ in self.notifications:
            same = n.tenant_id == tenant_id and n.alert_id == alert.alert_id
            if (
                same
                and n.alert_state is alert.state
                and (alert.state is AlertState.RESOLVED or n.severity >= alert.severity)
            ):
                return None
        note = Notification(
            str(uuid.uuid4()),
            tenant_id,
            alert.alert_id,
            alert.kind,
            alert.severity,
            alert.state,
            alert.title,
            alert.message,
            now,
        )
        self.notifications.append((note, list(deliveries)))
        for d in deliveries:
            self.pending.append(
                Delivery(
                    str(uuid.uuid4()),
                    tenant_id,
                    alert.alert_id,
                    d.channel,
                    d.target,
                    d.subject,
                    d.body,
                    0,
                )
            )
        return note

    async def claim_deliveries(self, now: datetime, limit: int, lease: timedelta) -> list[Delivery]:
        batch = [replace(d, attempts=d.attempts + 1) for d in self.pending[:limit]]
        self.pending = self.pending[limit:]
        return batch

    async def finish_delivery(
        self, delivery_id: str, *, sent: bool, error: str, retry_at: datetime | None, now: datetime
    ) -> None:
        self.finished.append((delivery_id, sent, error, retry_at))

    async def sent_since(self, tenant_id: str, channel: Channel, since: datetime) -> int:
        return sum(1 for t, c, at in self.sent if t == tenant_id and c is channel and at >= since)

    async def routes(self, tenant_id: str) -> NotificationRoutes:
        return self.routes_by_tenant.get(tenant_id, NotificationRoutes(tenant_id))

    async def set_routes(self, routes: NotificationRoutes) -> None:
        self.routes_by_tenant[routes.tenant_id] = routes


@dataclass
class FakeWatchStore:
    tenants: dict[str, list[str]] = field(default_factory=dict)

    async def tenants_on_platform(self, platform: str) -> list[str]:
        return self.tenants.get(platform, [])


def fake(port: object) -> Any:
    """A fake of a port, typed loosely: it implements only what the test calls."""
    return port


def alert(tenant: str = "t1", **kw: Any) -> Alert:
    base: dict[str, Any] = {
        "alert_id": "a1",
        "tenant_id": tenant,
        "kind": AlertKind.TOKEN_REFRESH_FAILED,
        "severity": Severity.WARNING,
        "state": AlertState.FIRING,
        "title": "Refresh failing",
        "message": "It fails.",
        "dedupe_key": "k",
        "started_at": NOW,
    }
    base.update(kw)
    return Alert(**base)


async def test_a_tenant_alert_reaches_its_routes_once() -> None:
    store = FakeNotificationStore()
    await store.set_routes(
        NotificationRoutes("t1", ("a@x.test", "b@x.test"), "https://hooks.slack.com/services/S")
    )
    notifier = Notifier(
        fake(store), fake(FakeWatchStore()), global_routes=GlobalRoutes(), clock=Clock()
    )
    assert await notifier.handle(alert()) == 1
    assert await notifier.handle(alert()) == 0  # the same firing again
    assert await notifier.handle(alert(severity=Severity.INFO)) == 0  # a lesser one
    assert await notifier.handle(alert(severity=Severity.CRITICAL)) == 1  # escalated
    assert await notifier.handle(alert(state=AlertState.RESOLVED)) == 1
    assert await notifier.handle(alert(state=AlertState.RESOLVED)) == 0
    (_, wanted), *_ = store.notifications
    assert [(d.channel, d.target) for d in wanted] == [
        (Channel.EMAIL, "a@x.test"),
        (Channel.EMAIL, "b@x.test"),
        (Channel.SLACK, "tenant"),
    ]
    assert all("hooks.slack.com" not in d.body for d in wanted)


async def test_an_outage_is_told_to_every_tenant_on_the_platform_and_to_operators() -> None:
    store = FakeNotificationStore()
    watch = FakeWatchStore({"instagram": ["t1", "t2"]})
    notifier = Notifier(
        fake(store),
        fake(watch),
        global_routes=GlobalRoutes(emails=("ops@postd.test",)),
        clock=Clock(),
    )
    outage = alert(
        "", kind=AlertKind.PLATFORM_OUTAGE, platform="instagram", severity=Severity.CRITICAL
    )
    assert await notifier.handle(outage) == 3
    assert sorted(n.tenant_id for n, _ in store.notifications) == ["", "t1", "t2"]
    [(_, ops)] = [(n, d) for n, d in store.notifications if n.tenant_id == ""]
    assert [d.target for d in ops] == ["ops@postd.test"]


async def test_below_the_minimum_severity_only_the_in_app_list_hears() -> None:
    store = FakeNotificationStore()
    await store.set_routes(NotificationRoutes("t1", ("a@x.test",), min_severity=Severity.CRITICAL))
    notifier = Notifier(
        fake(store), fake(FakeWatchStore()), global_routes=GlobalRoutes(), clock=Clock()
    )
    assert await notifier.handle(alert(severity=Severity.WARNING)) == 1
    [(_, wanted)] = store.notifications
    assert wanted == []


class Senders:
    def __init__(self, failure: DeliveryFailed | None = None) -> None:
        self.failure = failure
        self.emails: list[tuple[str, str]] = []
        self.slack: list[tuple[str, str]] = []

    async def send(self, *args: str) -> None:
        if self.failure is not None:
            raise self.failure
        if len(args) == 3:
            self.emails.append((args[0], args[1]))
        else:
            self.slack.append((args[0], args[1]))


def delivery(
    channel: Channel = Channel.EMAIL, target: str = "a@x.test", attempts: int = 0
) -> Delivery:
    return Delivery(str(uuid.uuid4()), "t1", "a1", channel, target, "subject", "body", attempts)


async def test_the_rate_limit_defers_instead_of_dropping() -> None:
    store = FakeNotificationStore()
    clock = Clock()
    store.sent = [("t1", Channel.EMAIL, NOW - timedelta(minutes=m)) for m in range(2)]
    senders = Senders()
    worker = DeliveryWorker(
        fake(store),
        senders,
        senders,
        global_routes=GlobalRoutes(),
        policy=DeliveryPolicy(email_limit=RateLimit(2, timedelta(hours=1))),
        clock=clock,
    )
    store.pending = [delivery()]
    assert await worker.run_once() == 1
    assert senders.emails == []
    [(_, sent, error, retry_at)] = store.finished
    assert not sent
    assert error == "rate limited"
    assert retry_at == NOW + timedelta(minutes=30)


async def test_a_removed_slack_hook_fails_for_good_and_a_passing_error_retries() -> None:
    store = FakeNotificationStore()
    await store.set_routes(NotificationRoutes("t1", slack_webhook_url="https://hooks/x"))
    gone = Senders(DeliveryFailed("Slack answered 404 'no_service'", permanent=True))
    worker = DeliveryWorker(
        fake(store),
        gone,
        gone,
        global_routes=GlobalRoutes(),
        policy=DeliveryPolicy(),
        clock=Clock(),
    )
    store.pending = [delivery(Channel.SLACK, "tenant")]
    await worker.run_once()
    assert store.finished[-1][1:] == (False, "Slack answered 404 'no_service'", None)
    flaky = Senders(DeliveryFailed("the mail server is unreachable: OSError"))
    worker = DeliveryWorker(
        fake(store),
        flaky,
        flaky,
        global_routes=GlobalRoutes(),
        policy=DeliveryPolicy(),
        clock=Clock(),
    )
    store.pending = [delivery()]
    await worker.run_once()
    assert store.finished[-1][3] == NOW + timedelta(seconds=15)
    store.pending = [delivery(attempts=DeliveryPolicy().max_attempts)]
    await worker.run_once()
    assert store.finished[-1][3] is None  # attempts used up


@dataclass
class FakeReader:
    totals: list[CallTotals]
    queue: Mapping[str, float] = field(default_factory=lambda: {"pending": 0.0, "dlq_size": 0.0})

    async def call_totals(self, since: datetime) -> list[CallTotals]:
        return self.totals

    async def queue_figures(self, tenant_id: str) -> Mapping[str, float]:
        return self.queue


async def test_detectors_open_and_resolve_incidents() -> None:
    store = FakeAlertStore()
    clock = Clock()
    engine = AlertEngine(store, topic="alerts", clock=clock)
    reader = FakeReader(
        [
            CallTotals("t1", "instagram", 20, 1, 1),  # 5 %: not over
            CallTotals("t2", "instagram", 100, 60, 60),
            CallTotals("t3", "instagram", 50, 40, 40),
            CallTotals("t4", "instagram", 40, 30, 30),
            CallTotals("t5", "linkedin", 10, 10, 0),  # too few calls to judge
        ],
        {"pending": 1500.0, "dlq_size": 3.0},
    )
    detectors = Detectors(reader, engine, RULES, policy=DetectorPolicy(), clock=clock)
    assert await detectors.run_once() == 5  # three error rates, one outage, the backlog
    keys = set(store.open)
    assert keys == {
        "api_error_rate:t2:instagram",
        "api_error_rate:t3:instagram",
        "api_error_rate:t4:instagram",
        "platform_outage:instagram",
        "queue_backlog",
    }
    assert store.open["platform_outage:instagram"].tenant_id == ""
    outbox_size = len(store.outbox)
    await detectors.run_once()
    assert len(store.outbox) == outbox_size  # no news
    reader.totals = [CallTotals("t2", "instagram", 100, 1, 1)]
    reader.queue = {"pending": 10.0, "dlq_size": 0.0}
    assert await detectors.run_once() == 0
    assert store.open == {}
    resolved = [a for a in store.outbox if a.state is AlertState.RESOLVED]
    assert len(resolved) == 5


@dataclass
class FakeConnectors:
    link: ReconnectLink = field(
        default_factory=lambda: ReconnectLink(
            "https://app/v1/connect/facebook?reconnect=c1", ("pages_manage_posts",)
        )
    )

    async def reconnect_link(self, *args: Any) -> ReconnectLink:
        return self.link


@dataclass
class FakePublisher:
    missed: MissedJobs = field(default_factory=lambda: MissedJobs(0))

    async def count_missed(self, tenant_id: str, connection_id: str) -> MissedJobs:
        return self.missed


def change(
    previous: Status, status: Status, reason: str = "Facebook says access was removed."
) -> StatusChange:
    return StatusChange(
        "e1", "t1", "c1", "facebook", previous, status, reason, None, "webhook", NOW, "Acme"
    )


def page(status: Status, cause: Cause) -> Watch:
    return Watch(
        "c1",
        "t1",
        "facebook",
        status,
        account_name="Acme",
        status_cause=cause,
        capabilities=("publish",),
    )


async def test_the_playbook_asks_a_person_only_when_one_is_needed() -> None:
    store = FakeAlertStore()
    engine = AlertEngine(store, topic="alerts", clock=Clock())
    playbook = Playbook(
        fake(FakeConnectors()),
        FakePublisher(),
        engine,
        RULES,
        backfill_url=lambda w: "https://app/missed",
    )
    await playbook.on_change(
        change(Status.HEALTHY, Status.REVOKED), page(Status.REVOKED, Cause.WEBHOOK)
    )
    fired = store.open["connection_attention:c1"]
    assert fired.severity is Severity.CRITICAL
    assert fired.action_url.endswith("reconnect=c1")
    assert "it asks for: pages_manage_posts" in fired.message
    assert "scheduled posts are kept" in fired.message

    store2 = FakeAlertStore()
    playbook2 = Playbook(
        fake(FakeConnectors()),
        FakePublisher(),
        AlertEngine(store2, topic="alerts", clock=Clock()),
        RULES,
        backfill_url=lambda w: "x",
    )
    await playbook2.on_change(
        change(Status.HEALTHY, Status.ATTENTION, "6 calls failed."),
        page(Status.ATTENTION, Cause.TRANSIENT_BUDGET),
    )
    passing = store2.open["connection_attention:c1"]
    assert passing.severity is Severity.WARNING
    assert passing.action_url == ""
    assert "resumes by itself" in passing.message


async def test_recovery_resolves_with_the_missed_posts_offer() -> None:
    store = FakeAlertStore()
    engine = AlertEngine(store, topic="alerts", clock=Clock())
    publisher = FakePublisher(
        MissedJobs(3, NOW - timedelta(days=2), NOW - timedelta(hours=1), False)
    )
    playbook = Playbook(
        fake(FakeConnectors()),
        publisher,
        engine,
        RULES,
        backfill_url=lambda w: f"https://app/{w.connection_id}/missed",
    )
    await playbook.on_change(
        change(Status.HEALTHY, Status.REVOKED), page(Status.REVOKED, Cause.WEBHOOK)
    )
    await playbook.on_change(
        change(Status.REVOKED, Status.HEALTHY, "Reconnected."), page(Status.HEALTHY, Cause.NONE)
    )
    resolved = store.outbox[-1]
    assert resolved.state is AlertState.RESOLVED
    assert "3 scheduled posts fell due while it was paused" in resolved.message
    assert resolved.action_url == "https://app/c1/missed"


@pytest.mark.parametrize(
    ("hist", "q", "expected"),
    [
        ([0, 0, 0], 0.5, 0.0),
        ([10, 0, 0], 0.5, 10.0),
        ([1, 1, 8], 0.95, 200.0),
        ([5, 5, 0], 0.5, 10.0),
    ],
)
def test_percentiles_from_histograms(hist: list[int], q: float, expected: float) -> None:
    assert percentile(hist, (10, 100), q) == expected
