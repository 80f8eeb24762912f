"""The watch table on real PostgreSQL: claims shared by replicas, mutations that
respect a claim, alerts deduplicated by key, rollups counted once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from postd_health.adapters.postgres import PostgresStore
from postd_health.domain.model import (
    AlertKind,
    AlertSpec,
    AlertState,
    Category,
    Failure,
    Severity,
    Status,
    Watch,
)
from postd_health.ports import CallSample, PublishObservation

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
LEASE = timedelta(minutes=2)


def new_watch(tenant: str, due: datetime | None) -> Watch:
    w = Watch(str(uuid.uuid4()), tenant, "tiktok", Status.HEALTHY, account_name="Acme")
    w.due_at = due
    return w


async def put(store: PostgresStore, w: Watch) -> Watch:
    stored = await store.mutate_watch(w.connection_id, lambda current: w)
    assert stored is not None
    return stored


async def test_two_workers_claiming_at_once_never_share_a_row(store: PostgresStore) -> None:
    tenant = str(uuid.uuid4())
    rows = [await put(store, new_watch(tenant, NOW - timedelta(seconds=i))) for i in range(40)]
    await put(store, new_watch(tenant, NOW + timedelta(hours=1)))  # not due
    a, b = await asyncio.gather(
        store.claim_due(NOW, 25, LEASE, "a"), store.claim_due(NOW, 25, LEASE, "b")
    )
    ids_a = {w.connection_id for w in a}
    ids_b = {w.connection_id for w in b}
    assert not ids_a & ids_b
    assert ids_a | ids_b == {w.connection_id for w in rows}
    # Claimed rows are not due again until their lease ends.
    assert await store.claim_due(NOW, 100, LEASE, "c") == []
    again = await store.claim_due(NOW + LEASE + timedelta(seconds=1), 100, LEASE, "c")
    assert len(again) == 40


async def test_a_mutation_by_someone_else_keeps_the_claim(store: PostgresStore) -> None:
    tenant = str(uuid.uuid4())
    w = await put(store, new_watch(tenant, NOW))
    [claimed] = await store.claim_due(NOW, 10, LEASE, "a")
    assert claimed.claim_id

    def bump(current: Watch | None) -> Watch | None:
        assert current is not None
        current.consecutive_failures += 1
        current.due_at = NOW  # would make it due again, but the claim holds
        return current

    other = await store.mutate_watch(w.connection_id, bump)
    assert other is not None
    assert other.consecutive_failures == 1
    assert other.claim_id == claimed.claim_id
    assert other.due_at == NOW + LEASE

    def release(current: Watch | None) -> Watch | None:
        assert current is not None
        current.due_at = NOW + timedelta(hours=1)
        return current

    released = await store.mutate_watch(w.connection_id, release, claim_id=claimed.claim_id)
    assert released is not None
    assert released.claim_id is None
    assert released.due_at == NOW + timedelta(hours=1)
    assert released.consecutive_failures == 1


async def test_claim_one_waits_for_no_one_and_hides_other_tenants(store: PostgresStore) -> None:
    tenant = str(uuid.uuid4())
    w = await put(store, new_watch(tenant, NOW + timedelta(days=1)))
    first = await store.claim_one(w.connection_id, tenant, NOW, LEASE, "a")
    assert first is not None
    assert await store.claim_one(w.connection_id, tenant, NOW, LEASE, "b") is None
    with pytest.raises(LookupError):
        await store.claim_one(w.connection_id, str(uuid.uuid4()), NOW, LEASE, "b")
    assert await store.get_watch(w.connection_id, str(uuid.uuid4())) is None


async def test_one_incident_one_firing_then_one_resolution(store: PostgresStore) -> None:
    spec = AlertSpec(
        dedupe_key=f"token_refresh_failed:{uuid.uuid4()}",
        tenant_id=str(uuid.uuid4()),
        kind=AlertKind.TOKEN_REFRESH_FAILED,
        severity=Severity.WARNING,
        title="Refresh failing",
        message="It fails.",
    )
    fired = [await store.open_alert(spec, NOW, "alerts") for _ in range(10)]
    assert sum(a is not None for a in fired) == 1
    escalated = await store.open_alert(
        AlertSpec(**{**spec.__dict__, "severity": Severity.CRITICAL}), NOW, "alerts"
    )
    assert escalated is not None
    first = fired[0]
    assert first is not None
    assert escalated.alert_id == first.alert_id
    resolved = await store.resolve_alert(spec.dedupe_key, "Fine again.", NOW, "alerts")
    assert resolved is not None
    assert resolved.state is AlertState.RESOLVED
    assert await store.resolve_alert(spec.dedupe_key, "Fine again.", NOW, "alerts") is None
    relayed: list = []

    async def publish(messages):
        relayed.extend(messages)

    assert await store.relay_outbox(100, publish) == 3  # firing, escalation, resolution
    assert {m.key for m in relayed} == {spec.dedupe_key}
    assert await store.relay_outbox(100, publish) == 0


async def test_a_publish_result_counts_once(store: PostgresStore) -> None:
    tenant = str(uuid.uuid4())
    sample = CallSample(
        NOW,
        tenant,
        "tiktok",
        "publish",
        False,
        Failure(Category.TRANSIENT, http_status=503),
        timedelta(milliseconds=120),
    )
    obs = PublishObservation("job-1", 1, "retry_scheduled", sample, "conn-1")
    assert await store.record_publish(obs) is True
    assert await store.record_publish(obs) is False
    totals = await store.call_totals(NOW - timedelta(minutes=1))
    mine = [t for t in totals if t.tenant_id == tenant]
    assert [(t.requests, t.failures, t.passing) for t in mine] == [(1, 1, 1)]
    figures = await store.queue_figures(tenant)
    assert figures == {"pending": 1.0, "dlq_size": 0.0}
