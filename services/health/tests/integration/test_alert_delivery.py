"""Alerts end to end: ten refresh failures make one incident; its FIRING and RESOLVED
travel through the outbox and the real broker to health's notifier, which tells the
tenant once each in-app, by email (a local SMTP server) and on Slack (the sandbox's
incoming-webhook receiver)."""

from __future__ import annotations

import asyncio
import email
import uuid
from collections.abc import Awaitable, Callable, Iterator
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from postd_common.devinfra import free_port
from postd_health.domain.model import AlertKind, AlertState, NotificationRoutes, Severity

pytestmark = pytest.mark.integration


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


async def until(condition: Callable[[], Awaitable[bool]], what: str, limit: float = 30.0) -> None:
    """Poll until ``condition`` holds; fail naming ``what`` after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_ten_failures_one_alert_one_resolution_by_email_and_slack(
    make_replica: Any,
    standin: tuple[Any, str],
    sandbox: Any,
    producer: Any,
    smtp: tuple[Mailbox, int],
) -> None:
    box, port = smtp
    servicer, address = standin
    tenant = str(uuid.uuid4())
    replica = make_replica(
        connectors_addr=address,
        POSTD_SMTP_HOST="127.0.0.1",
        POSTD_SMTP_PORT=str(port),
        POSTD_SMTP_FROM="POSTD <alerts@postd.test>",
    )
    svc = replica.service
    secret = uuid.uuid4().hex
    hook = f"services/T0SBX/B0SBX/{secret}"
    await svc.store.set_routes(
        NotificationRoutes(
            tenant,
            emails=("ops@acme.test",),
            slack_webhook_url=f"{sandbox.url}/slack/hooks/{hook}",
            min_severity=Severity.INFO,
        )
    )
    await replica.start_consumers(producer, "alerts")
    conn = await servicer.connect_tiktok(tenant)
    await svc.monitor.track(await svc.monitor._connectors.get_connection(tenant, conn.id))

    await sandbox.fault(
        platform="tiktok", kind="server_error", times=10, path_contains="oauth/token"
    )
    for _ in range(10):
        result = await svc.monitor.run_check_now(tenant, conn.id, refresh=True, requested_by="t")
        assert not result.refreshed
    assert servicer.refresh_outcomes == ["failed:500"] * 10
    recovered = await svc.monitor.run_check_now(tenant, conn.id, refresh=True, requested_by="t")
    assert recovered.refreshed

    # FIRING once (at the second failure in a row), RESOLVED once.
    assert await svc.relay_once() == 2

    async def told() -> bool:
        await svc.deliveries.run_once()
        slack = await sandbox.slack_messages(secret)
        return len(box.messages) >= 2 and len(slack) >= 2

    await until(told, "two emails and two Slack messages")
    await asyncio.sleep(1.0)  # anything extra would have arrived by now
    await svc.deliveries.run_once()

    subjects = [m["Subject"] for _, m in box.messages]
    assert len(subjects) == 2
    assert subjects[0].startswith("[POSTD] TikTok token refresh failing")
    assert subjects[1].startswith("[POSTD] Resolved: TikTok token refresh failing")
    assert all(rcpt == ["ops@acme.test"] for rcpt, _ in box.messages)
    body = str(box.messages[0][1].get_payload())
    assert "POSTD keeps retrying" in body
    assert conn.refresh_token not in body
    assert conn.access_token not in body

    slack = await sandbox.slack_messages(secret)
    assert len(slack) == 2
    assert "TikTok token refresh failing" in slack[0]["body"]["text"]
    assert slack[1]["body"]["text"].startswith(":white_check_mark:")

    notes, unread = await svc.store.list_notifications(tenant, False, 10, None)
    assert unread == 2
    assert [n.alert_state for n in notes] == [AlertState.RESOLVED, AlertState.FIRING]
    assert {n.kind for n in notes} == {AlertKind.TOKEN_REFRESH_FAILED}
    assert len({n.alert_id for n in notes}) == 1


async def test_another_tenant_hears_nothing(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, producer: Any
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    svc = replica.service
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    await replica.start_consumers(producer, "alerts")
    conn = await servicer.connect_tiktok(mine)
    await svc.monitor.track(await svc.monitor._connectors.get_connection(mine, conn.id))
    await sandbox.control(
        "POST",
        "/_sandbox/tokens/revoke",
        json={"platform": "tiktok", "access_token": conn.access_token},
    )
    await sandbox.fault(platform="tiktok", kind="token_revoked", times=1, path_contains="oauth")
    await svc.monitor.run_check_now(mine, conn.id, refresh=True, requested_by="t")
    assert await svc.relay_once() >= 1

    async def mine_told() -> bool:
        notes, _ = await svc.store.list_notifications(mine, False, 10, None)
        return bool(notes)

    await until(mine_told, "the tenant's notification")
    notes, unread = await svc.store.list_notifications(other, False, 10, None)
    assert notes == []
    assert unread == 0
    mine_notes, _ = await svc.store.list_notifications(mine, False, 10, None)
    with pytest.raises(LookupError):
        await svc.store.mark_read(other, [mine_notes[0].id], False, "x", svc.monitor._clock())
