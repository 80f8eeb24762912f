"""LinkedIn without partner refresh through the real connectors: honest warnings at 14,
7 and 1 days (once each), expiring_soon, the forecast in plain words; and the
ConnectionHealthService over real gRPC: tenant isolation, Refresh now, the health log,
notifications."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.events.v1 import alert_pb2
from postd.health.v1 import health_pb2 as hpb
from postd.health.v1.health_pb2_grpc import (
    ConnectionHealthServiceStub,
    add_ConnectionHealthServiceServicer_to_server,
)
from postd_common.grpcutil import create_server, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_health.domain.model import AlertKind, AlertSpec, Severity, Status
from postd_health.ports import CheckQuery
from postd_health.servicer import POLICY, SERVICE_NAME

pytestmark = pytest.mark.integration

MEMBER = "urn:li:person:SbxM1mbr01"


@pytest.fixture
async def api(
    make_replica: Any,
    connectors: Any,
    verifier_for: Callable[[str], IdentityVerifier],
    signer_for: Callable[[str], IdentitySigner],
) -> AsyncIterator[tuple[Any, Callable[[str], ConnectionHealthServiceStub]]]:
    replica = make_replica(connectors_addr=connectors.address)
    server = create_server(
        service="health",
        address="127.0.0.1:0",
        register=[
            lambda s: add_ConnectionHealthServiceServicer_to_server(replica.service.servicer, s)
        ],
        service_names=[SERVICE_NAME],
        verifier=verifier_for("health"),
        policy=POLICY,
    )
    await server.start()
    channels = []

    def stub(caller: str) -> ConnectionHealthServiceStub:
        channel = open_channel(
            f"127.0.0.1:{server.port}", signer=signer_for(caller), audience="health"
        )
        channels.append(channel)
        return ConnectionHealthServiceStub(channel)

    yield replica, stub
    for channel in channels:
        await channel.close()
    await server.stop(0)


async def linkedin_member(replica: Any, connectors: Any, tenant: str) -> Any:
    member = (await connectors.connect(tenant, "linkedin"))[MEMBER]
    info = await replica.service.monitor._connectors.get_connection(tenant, member.id)
    await replica.service.monitor.track(info)
    return member


async def outbox_alerts(replica: Any) -> list[alert_pb2.Alert]:
    seen: list[alert_pb2.Alert] = []

    async def publish(messages: Any) -> None:
        seen.extend(alert_pb2.Alert.FromString(m.value) for m in messages)

    await replica.service.store.relay_outbox(100, publish)
    return seen


async def test_linkedin_warns_at_14_7_and_1_days_once_each(
    api: Any, connectors: Any, clock: Any
) -> None:
    replica, _ = api
    tenant = str(uuid.uuid4())
    member = await linkedin_member(replica, connectors, tenant)
    svc = replica.service
    watch = await svc.store.get_watch(member.id, tenant)
    assert watch is not None
    assert not watch.has_refresh_token
    assert watch.next_refresh_at is None
    expires = watch.expires_at
    assert expires is not None

    told: list[alert_pb2.Alert] = []
    for days, severity in ((14, Severity.INFO), (7, Severity.WARNING), (1, Severity.CRITICAL)):
        clock.offset = (expires - timedelta(days=days) + timedelta(minutes=1)) - (
            clock() - clock.offset
        )
        assert await svc.monitor.run_once() == 1
        assert await svc.monitor.run_once() == 0  # nothing more is due right now
        fresh = await outbox_alerts(replica)
        warnings = [a for a in fresh if a.dedupe_key == f"token_expiring:{member.id}"]
        assert len(warnings) == 1, [a.title for a in fresh]
        assert warnings[0].severity == int(severity)
        assert f"expires in {days} day" in warnings[0].message
        assert "LinkedIn gives no refresh for this app." in warnings[0].message
        assert warnings[0].action_url.endswith(
            f"/v1/connect/linkedin?reconnect={member.id}&capability=publish"
        )
        told += warnings
    assert len({a.alert_id for a in told}) == 1  # one incident, escalated twice

    watch = await svc.store.get_watch(member.id, tenant)
    assert watch is not None
    assert watch.status is Status.EXPIRING_SOON
    assert await connectors.status(tenant, member.id) == common_pb2.CONNECTION_STATUS_EXPIRING_SOON
    # Checks kept running meanwhile (the sandbox still takes the token).
    log = await svc.store.list_checks(CheckQuery(tenant), 10, None)
    assert log
    assert all(c.ok for c in log)


async def test_the_api_shows_health_and_hides_other_tenants(
    api: Any, connectors: Any, clock: Any
) -> None:
    replica, stub = api
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    member = await linkedin_member(replica, connectors, tenant)
    gateway = stub("gateway")

    got = await gateway.GetConnectionHealth(
        hpb.GetConnectionHealthRequest(tenant_id=tenant, connection_id=member.id)
    )
    health = got.health
    assert health.platform == "linkedin"
    assert health.status == common_pb2.CONNECTION_STATUS_HEALTHY
    assert health.forecast.reason_code == "token_expires_no_refresh"
    assert health.forecast.explanation.startswith("LinkedIn token for ")
    assert health.forecast.explanation.endswith(
        "expires in 60 days; LinkedIn gives no refresh for this app."
    )
    assert health.forecast.reconnect_url.endswith(f"reconnect={member.id}&capability=publish")
    assert not health.publishing_paused

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await gateway.GetConnectionHealth(
            hpb.GetConnectionHealthRequest(tenant_id=other, connection_id=member.id)
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await gateway.RunCheckNow(hpb.RunCheckNowRequest(tenant_id=other, connection_id=member.id))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as all_tenants:
        await gateway.ListHealthChecks(hpb.ListHealthChecksRequest())
    assert all_tenants.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub("publisher").GetDashboard(hpb.GetDashboardRequest(tenant_id=tenant))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    for _ in range(3):
        ran = await gateway.RunCheckNow(
            hpb.RunCheckNowRequest(tenant_id=tenant, connection_id=member.id, requested_by="u1")
        )
        assert ran.check.ok
        assert ran.check.kind == hpb.HEALTH_CHECK_KIND_ON_DEMAND
        assert ran.status == common_pb2.CONNECTION_STATUS_HEALTHY
    page = await gateway.ListHealthChecks(
        hpb.ListHealthChecksRequest(tenant_id=tenant, connection_id=member.id, page_size=2)
    )
    assert len(page.checks) == 2
    assert page.next_page_token
    rest = await gateway.ListHealthChecks(
        hpb.ListHealthChecksRequest(
            tenant_id=tenant, connection_id=member.id, page_size=2, page_token=page.next_page_token
        )
    )
    assert len(rest.checks) == 1
    assert not rest.next_page_token
    ids = [c.id for c in (*page.checks, *rest.checks)]
    assert len(set(ids)) == 3
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await gateway.ListHealthChecks(
            hpb.ListHealthChecksRequest(
                tenant_id=tenant, page_size=2, page_token=page.next_page_token
            )
        )
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    mine = await gateway.ListHealthChecks(hpb.ListHealthChecksRequest(tenant_id=other))
    assert list(mine.checks) == []
    everyone = await stub("operator").ListHealthChecks(hpb.ListHealthChecksRequest())
    assert {c.id for c in everyone.checks} >= set(ids)


async def test_notification_settings_never_echo_the_slack_secret(api: Any) -> None:
    _, stub = api
    tenant = str(uuid.uuid4())
    gateway = stub("gateway")
    secret = uuid.uuid4().hex
    url = f"https://hooks.slack.com/services/T0/B0/{secret}"
    updated = await gateway.UpdateNotificationSettings(
        hpb.UpdateNotificationSettingsRequest(
            tenant_id=tenant, email_recipients=["ops@acme.test"], slack_webhook_url=url
        )
    )
    assert updated.settings.slack_configured
    assert secret not in str(updated)
    got = await gateway.GetNotificationSettings(
        hpb.GetNotificationSettingsRequest(tenant_id=tenant)
    )
    assert list(got.settings.email_recipients) == ["ops@acme.test"]
    assert got.settings.slack_webhook_hint == "https://hooks.slack.com/services/…"
    assert secret not in str(got)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await gateway.UpdateNotificationSettings(
            hpb.UpdateNotificationSettingsRequest(tenant_id=tenant, email_recipients=["nope"])
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = await gateway.GetNotificationSettings(
        hpb.GetNotificationSettingsRequest(tenant_id=str(uuid.uuid4()))
    )
    assert not other.settings.slack_configured


async def test_notifications_and_alerts_over_the_api(api: Any) -> None:
    replica, stub = api
    svc = replica.service
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    gateway = stub("gateway")
    fired = await svc.alerts.fire(
        AlertSpec(
            dedupe_key=f"connection_attention:{uuid.uuid4()}",
            tenant_id=tenant,
            kind=AlertKind.CONNECTION_ATTENTION,
            severity=Severity.CRITICAL,
            title="Facebook: Acme lost its access",
            message="Reconnect Acme.",
            platform="facebook",
        )
    )
    assert fired is not None
    assert await svc.notifier.handle(fired) == 1
    listed = await gateway.ListNotifications(hpb.ListNotificationsRequest(tenant_id=tenant))
    assert listed.unread_count == 1
    [note] = listed.notifications
    assert note.alert_id == fired.alert_id
    assert note.alert_state == alert_pb2.ALERT_STATE_FIRING
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await gateway.MarkNotificationRead(
            hpb.MarkNotificationReadRequest(tenant_id=other, notification_ids=[note.id])
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    marked = await gateway.MarkNotificationRead(
        hpb.MarkNotificationReadRequest(tenant_id=tenant, notification_ids=[note.id], read_by="u1")
    )
    assert marked.marked_count == 1
    unread = await gateway.ListNotifications(
        hpb.ListNotificationsRequest(tenant_id=tenant, unread_only=True)
    )
    assert list(unread.notifications) == []
    assert unread.unread_count == 0
    alerts = await gateway.ListAlerts(hpb.ListAlertsRequest(tenant_id=tenant))
    assert [a.alert_id for a in alerts.alerts] == [fired.alert_id]
    assert list((await gateway.ListAlerts(hpb.ListAlertsRequest(tenant_id=other))).alerts) == []
