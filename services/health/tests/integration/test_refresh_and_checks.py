"""The expiry watch and the status machine against the sandbox's TikTok, through a
connectors stand-in over real gRPC (connectors has no TikTok connector yet):
proactive refresh before expiry, two replicas racing on one rotating refresh token,
passing 5xx against a revoked token."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from postd.common.v1 import common_pb2
from postd_health.domain.model import AlertKind, CheckKind, Status
from postd_health.ports import CheckQuery, PeerUnavailable

pytestmark = pytest.mark.integration


async def connected(replica: Any, standin: Any, tenant: str) -> Any:
    """A TikTok connection the replica watches (as the connect event would make it)."""
    conn = await standin.connect_tiktok(tenant)
    info = await replica.service.monitor._connectors.get_connection(tenant, conn.id)
    await replica.service.monitor.track(info)
    return conn


async def test_the_token_is_refreshed_ahead_of_expiry_by_the_rule(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, clock: Any, tenant_id: str
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await connected(replica, servicer, tenant_id)
    store = replica.service.store
    watch = await store.get_watch(conn.id, tenant_id)
    assert watch is not None
    # TikTok access tokens live 2 hours; the rule refreshes 30 minutes before expiry.
    assert watch.next_refresh_at == conn.expires_at - timedelta(minutes=30)
    assert await replica.service.monitor.run_once() == 0
    assert servicer.refresh_calls == 0

    old_access, old_expiry = conn.access_token, conn.expires_at
    step = timedelta(minutes=91)
    clock.advance(step)
    await sandbox.advance(step)  # the platform's time moves with ours
    assert await replica.service.monitor.run_once() == 1
    assert servicer.refresh_outcomes == ["refreshed"]

    tokens = {t["token_hint"]: t for t in await sandbox.tokens("tiktok")}
    old = tokens[old_access[:6] + "…"]
    assert old["status"] == "valid"  # refreshed before it expired
    assert conn.access_token != old_access
    after = await store.get_watch(conn.id, tenant_id)
    assert after is not None
    assert after.expires_at is not None
    assert after.expires_at > old_expiry + timedelta(minutes=80)
    assert after.status is Status.HEALTHY
    assert after.next_refresh_at == after.expires_at - timedelta(minutes=30)
    [check] = await store.list_checks(CheckQuery(tenant_id, connection_id=conn.id), 10, None)
    assert check.kind is CheckKind.REFRESH
    assert check.ok


async def test_two_replicas_racing_spend_a_rotating_refresh_token_once(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, clock: Any, tenant_id: str
) -> None:
    servicer, address = standin
    servicer.refresh_delay = 0.3  # a slow platform widens the window for a double spend
    first = make_replica(connectors_addr=address)
    second = make_replica(connectors_addr=address)
    conns = [await connected(first, servicer, tenant_id) for _ in range(1)]
    step = timedelta(minutes=95)
    clock.advance(step)
    await sandbox.advance(step)
    claimed = await asyncio.gather(
        first.service.monitor.run_once(),
        second.service.monitor.run_once(),
        first.service.monitor.run_once(),
        second.service.monitor.run_once(),
    )
    assert sum(claimed) == len(conns)
    # The stand-in has no single flight: health's claim alone kept it to one refresh.
    assert servicer.refresh_calls == 1
    assert servicer.refresh_outcomes == ["refreshed"]
    refresh_tokens = [t for t in await sandbox.tokens("tiktok") if t["kind"] == "refresh"]
    assert sum(t["rotated"] for t in refresh_tokens) == 1
    # And the rotated-in token works: a later refresh succeeds.
    step = timedelta(minutes=95)
    clock.advance(step)
    await sandbox.advance(step)
    await asyncio.gather(first.service.monitor.run_once(), second.service.monitor.run_once())
    assert servicer.refresh_outcomes == ["refreshed", "refreshed"]


async def test_refresh_now_from_both_replicas_waits_instead_of_spending_twice(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, tenant_id: str
) -> None:
    servicer, address = standin
    servicer.refresh_delay = 0.3
    first = make_replica(connectors_addr=address)
    second = make_replica(connectors_addr=address)
    conn = await connected(first, servicer, tenant_id)
    a, b = await asyncio.gather(
        first.service.monitor.run_check_now(tenant_id, conn.id, refresh=True, requested_by="u1"),
        second.service.monitor.run_check_now(tenant_id, conn.id, refresh=True, requested_by="u2"),
    )
    assert a.refreshed
    assert b.refreshed
    # One after the other, each with the token the previous one rotated in.
    assert servicer.refresh_outcomes == ["refreshed", "refreshed"]
    assert a.status is Status.HEALTHY
    assert b.status is Status.HEALTHY


async def test_a_burst_of_5xx_leaves_the_connection_healthy(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, clock: Any, tenant_id: str
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await connected(replica, servicer, tenant_id)
    await sandbox.fault(platform="tiktok", kind="server_error", times=8, path_contains="user/info")
    for _ in range(8):
        result = await replica.service.monitor.run_check_now(
            tenant_id, conn.id, refresh=False, requested_by="test"
        )
        assert not result.check.ok
        assert result.check.failure is not None
        assert result.check.failure.http_status == 500
        assert result.status is Status.HEALTHY
    watch = await replica.service.store.get_watch(conn.id, tenant_id)
    assert watch is not None
    assert watch.consecutive_failures == 8
    assert servicer.status_updates == []
    ok = await replica.service.monitor.run_check_now(
        tenant_id, conn.id, refresh=False, requested_by="test"
    )
    assert ok.check.ok
    watch = await replica.service.store.get_watch(conn.id, tenant_id)
    assert watch is not None
    assert watch.consecutive_failures == 0


async def test_failures_spanning_the_budget_move_to_attention_and_heal(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, clock: Any, tenant_id: str
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await connected(replica, servicer, tenant_id)
    await sandbox.fault(platform="tiktok", kind="outage", times=6, path_contains="user/info")
    statuses = []
    for _ in range(6):
        result = await replica.service.monitor.run_check_now(
            tenant_id, conn.id, refresh=False, requested_by="test"
        )
        statuses.append(result.status)
        clock.advance(timedelta(minutes=4))
    # Five failures over 16 minutes exhaust the budget (5 in a row over >= 15 min).
    assert statuses[:4] == [Status.HEALTHY] * 4
    assert statuses[4] is Status.ATTENTION
    [update] = servicer.status_updates
    assert update.status == common_pb2.CONNECTION_STATUS_ATTENTION
    assert update.expected_status == common_pb2.CONNECTION_STATUS_HEALTHY
    assert update.category == common_pb2.ERROR_CATEGORY_TRANSIENT
    assert "in a row failed over 16 minutes" in update.reason
    healed = await replica.service.monitor.run_check_now(
        tenant_id, conn.id, refresh=False, requested_by="test"
    )
    assert healed.status is Status.HEALTHY
    assert servicer.connections[conn.id].status == common_pb2.CONNECTION_STATUS_HEALTHY


async def test_a_revoked_token_moves_to_revoked_at_once(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, tenant_id: str
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await connected(replica, servicer, tenant_id)
    await sandbox.control(
        "POST",
        "/_sandbox/tokens/revoke",
        json={"platform": "tiktok", "access_token": conn.access_token},
    )
    result = await replica.service.monitor.run_check_now(
        tenant_id, conn.id, refresh=False, requested_by="test"
    )
    assert not result.check.ok
    assert result.status is Status.REVOKED
    assert "revoked" in result.status_reason
    [update] = servicer.status_updates
    assert update.status == common_pb2.CONNECTION_STATUS_REVOKED
    assert update.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
    watch = await replica.service.store.get_watch(conn.id, tenant_id)
    assert watch is not None
    assert watch.status is Status.REVOKED
    assert watch.next_refresh_at is None  # nothing to refresh until a person reconnects


async def test_a_spent_refresh_token_revokes_and_alerts(
    make_replica: Any, standin: tuple[Any, str], sandbox: Any, clock: Any, tenant_id: str
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await connected(replica, servicer, tenant_id)
    # Someone else spent the refresh token (a copy of it outside POSTD).
    spent = await servicer._token(
        {"grant_type": "refresh_token", "refresh_token": conn.refresh_token}
    )
    assert spent["_status"] == 200
    result = await replica.service.monitor.run_check_now(
        tenant_id, conn.id, refresh=True, requested_by="test"
    )
    assert result.status is Status.REVOKED
    assert not result.refreshed
    alerts = await replica.service.store.open_alerts(
        AlertKind.TOKEN_REFRESH_FAILED, f"token_refresh_failed:{conn.id}"
    )
    assert len(alerts) == 1
    assert alerts[0].tenant_id == tenant_id
    assert "reconnect" in alerts[0].message


@pytest.fixture
def tenant_id() -> str:
    return str(uuid.uuid4())


async def test_connectors_down_during_a_refresh_is_retried_when_it_is_back(
    make_replica: Any,
    standin: tuple[Any, str],
    sandbox: Any,
    clock: Any,
    tenant_id: str,
    verifier_for: Any,
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await connected(replica, servicer, tenant_id)
    module = __import__("postd_health_test_support_connectors_standin")
    # Connectors goes away (the fixture's server stops; a new one comes back on the same
    # address later).
    await servicer.server.stop(0)
    step = timedelta(minutes=91)
    clock.advance(step)
    await sandbox.advance(step)
    assert await replica.service.monitor.run_once() == 1
    assert servicer.refresh_calls == 0
    watch = await replica.service.store.get_watch(conn.id, tenant_id)
    assert watch is not None
    assert watch.claim_id is None  # let go, to be tried again
    assert watch.status is Status.HEALTHY  # an outage of ours says nothing about the token
    assert watch.consecutive_failures == 0
    assert watch.due_at is not None
    assert watch.due_at <= clock() + timedelta(seconds=61)
    assert await replica.service.monitor.run_once() == 0  # not before the retry time

    port = int(address.rsplit(":", 1)[1])
    back = await module.serve(servicer, verifier_for("connectors"), port=port)
    try:
        # The channel reconnects after its backoff; until then calls fail fast.
        for _ in range(100):
            try:
                await replica.service.monitor._connectors.get_connection(tenant_id, conn.id)
                break
            except PeerUnavailable:
                await asyncio.sleep(0.1)
        clock.advance(timedelta(seconds=61))
        await sandbox.advance(timedelta(seconds=61))
        assert await replica.service.monitor.run_once() == 1
        assert servicer.refresh_outcomes == ["refreshed"]
        after = await replica.service.store.get_watch(conn.id, tenant_id)
        assert after is not None
        assert after.last_refreshed_at is not None
    finally:
        await back.stop(0)


async def test_the_sync_adopts_expiring_connections_no_event_told_of(
    make_replica: Any, standin: tuple[Any, str], tenant_id: str
) -> None:
    servicer, address = standin
    replica = make_replica(connectors_addr=address)
    conn = await servicer.connect_tiktok(tenant_id)
    assert await replica.service.store.get_watch(conn.id, tenant_id) is None
    assert await replica.service.sync_once() >= 1
    watch = await replica.service.store.get_watch(conn.id, tenant_id)
    assert watch is not None
    assert watch.next_refresh_at == conn.expires_at - timedelta(minutes=30)
    assert await replica.service.sync_once() == 0  # already watched
