"""Outbound: tenants' endpoints, signed deliveries, retries for a day, then giving up.

Deliveries are signed in the Standard Webhooks scheme with the endpoint's secret (and
the previous one during a rotation's overlap: both signatures are sent). A failed
attempt is retried with exponential backoff (with jitter, capped) until at least
``retry_window`` after the delivery was created; the schedule lives in PostgreSQL,
so a restart loses nothing. An endpoint failing for ``disable_after`` with at least
``disable_min_failures`` failed attempts in a row is disabled, its pending
deliveries given up, and the tenant told through an alert.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from postd.events.v1 import alert_pb2
from postd_common.errors import InvalidArgument, NotFound
from postd_common.kafka import message_headers
from postd_common.logging import get_logger
from postd_common.secrets import Secret
from postd_webhook_router import metrics
from postd_webhook_router.domain.ssrf import check_url
from postd_webhook_router.domain.verifiers.standard_webhooks import (
    new_secret,
    secret_key,
    signature_header,
)
from postd_webhook_router.ports import (
    AddressResolver,
    DeliverySender,
    OutboxMessage,
    SecretVault,
    SendResult,
)

log = get_logger(__name__)

KNOWN_EVENT_TYPES = frozenset(
    {"post.published", "post.failed", "post.cancelled", "connection.status_changed"}
)
SECRET_KIND = "webhook_signing_secret"  # noqa: S105 - a kind, not a secret


def secret_name(endpoint_id: str, *, previous: bool = False) -> str:
    suffix = ".previous" if previous else ""
    return f"webhook_endpoint.{endpoint_id}.signing_secret{suffix}"


@dataclass(frozen=True)
class OutboundPolicy:
    allow_http: bool
    allow_loopback: bool
    retry_base_seconds: float
    retry_max_delay_seconds: float
    retry_window_seconds: float
    disable_after_seconds: float
    disable_min_failures: int
    alert_after_failures: int
    secret_overlap_seconds: float
    batch_size: int = 50
    lease_seconds: float = 120.0
    alerts_topic: str = "alerts"


def retry_delay(attempt: int, policy: OutboundPolicy, jitter: float | None = None) -> float:
    """Seconds before the attempt after failed attempt number ``attempt`` (1-based):
    base * 2^(attempt-1), capped, ±10 % jitter."""
    delay = min(policy.retry_max_delay_seconds, policy.retry_base_seconds * 2 ** (attempt - 1))
    factor = jitter if jitter is not None else random.uniform(0.9, 1.1)
    return float(delay * factor)


@dataclass(frozen=True)
class DueDelivery:
    id: str
    tenant_id: str
    endpoint_id: str
    url: str
    message_id: str
    event_type: str
    payload: bytes
    attempt_count: int
    created_at: datetime
    secret_generation: int
    previous_secret_expires_at: datetime | None


@dataclass(frozen=True)
class EndpointHealth:
    """The endpoint after an attempt was recorded."""

    state: str
    consecutive_failures: int
    failing_since: datetime | None
    alert_id: str | None
    url: str


class OutboundStore(Protocol):
    """Endpoints and deliveries (PostgreSQL). Raises StoreUnavailable."""

    async def insert_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]: ...
    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> dict[str, Any] | None: ...
    async def list_endpoints(
        self, tenant_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[dict[str, Any]]: ...
    async def update_endpoint(
        self, tenant_id: str, endpoint_id: str, changes: dict[str, Any]
    ) -> dict[str, Any] | None: ...
    async def delete_endpoint(self, tenant_id: str, endpoint_id: str) -> bool: ...
    async def create_deliveries(
        self, tenant_id: str, event_type: str, source_event_id: str, payload: bytes
    ) -> int: ...
    async def claim_deliveries(
        self, limit: int, now: datetime, lease_seconds: float
    ) -> list[DueDelivery]: ...
    async def record_attempt(
        self,
        delivery: DueDelivery,
        result: SendResult,
        now: datetime,
        next_attempt_at: datetime | None,
    ) -> EndpointHealth: ...
    async def fire_alert(self, endpoint_id: str, alert_id: str, message: OutboxMessage) -> bool: ...
    async def resolve_alert(
        self, endpoint_id: str, alert_id: str, message: OutboxMessage
    ) -> bool: ...
    async def disable_failing(
        self, endpoint_id: str, reason: str, message: OutboxMessage
    ) -> bool: ...
    async def list_deliveries(
        self,
        tenant_id: str,
        endpoint_id: str,
        states: Sequence[str],
        event_type: str,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[dict[str, Any]]: ...


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _alert(
    *,
    alert_id: str,
    tenant_id: str,
    state: alert_pb2.AlertState.ValueType,
    severity: alert_pb2.AlertSeverity.ValueType,
    title: str,
    message: str,
    endpoint_id: str,
    started_at: datetime,
    resolved_at: datetime | None,
    topic: str,
) -> OutboxMessage:
    alert = alert_pb2.Alert(
        alert_id=alert_id,
        tenant_id=tenant_id,
        kind=alert_pb2.ALERT_KIND_WEBHOOK_DELIVERY_FAILURES,
        severity=severity,
        state=state,
        title=title,
        message=message,
        started_at=_ts(started_at),
        resolved_at=_ts(resolved_at) if resolved_at else None,
        dedupe_key=f"webhook_delivery_failures:{endpoint_id}",
    )
    key = alert.dedupe_key
    return OutboxMessage(
        topic, key, alert.SerializeToString(), message_headers(alert, tenant_id=tenant_id)
    )


class SigningKeys:
    """Endpoint signing keys from the vault, cached per secret generation (a rotation
    bumps the generation, so a stale key is never used after it)."""

    def __init__(self, vault: SecretVault) -> None:
        self._vault = vault
        self._cache: dict[tuple[str, int], tuple[bytes, bytes | None]] = {}

    async def keys(self, delivery: DueDelivery, now: datetime) -> list[bytes]:
        cache_key = (delivery.endpoint_id, delivery.secret_generation)
        cached = self._cache.get(cache_key)
        if cached is None:
            current = await self._vault.get(delivery.tenant_id, secret_name(delivery.endpoint_id))
            if current is None:
                raise NotFound(f"endpoint {delivery.endpoint_id} has no signing secret")
            previous = await self._vault.get(
                delivery.tenant_id, secret_name(delivery.endpoint_id, previous=True)
            )
            cached = (
                secret_key(current.reveal()),
                secret_key(previous.reveal()) if previous else None,
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = cached
        keys = [cached[0]]
        expires = delivery.previous_secret_expires_at
        if cached[1] is not None and expires is not None and now < expires:
            keys.append(cached[1])
        return keys


class EndpointService:
    """Registering, changing and rotating tenants' endpoints."""

    def __init__(
        self,
        store: OutboundStore,
        vault: SecretVault,
        resolver: AddressResolver,
        policy: OutboundPolicy,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._vault = vault
        self._resolver = resolver
        self._policy = policy
        self._clock = clock

    async def _checked(self, url: str, event_types: Sequence[str]) -> tuple[str, list[str]]:
        unknown = sorted(set(event_types) - KNOWN_EVENT_TYPES)
        if unknown:
            raise InvalidArgument(
                f"unknown event types {unknown}; known: {sorted(KNOWN_EVENT_TYPES)}",
                field="event_types",
            )
        checked = await check_url(
            url,
            self._resolver,
            allow_http=self._policy.allow_http,
            allow_loopback=self._policy.allow_loopback,
        )
        return checked, sorted(set(event_types))

    async def create(
        self,
        tenant_id: str,
        url: str,
        description: str,
        event_types: Sequence[str],
        created_by: str,
    ) -> tuple[dict[str, Any], Secret]:
        checked, types = await self._checked(url, event_types)
        endpoint_id = str(uuid.uuid4())
        secret = Secret(new_secret())
        # The vault first: an endpoint row never exists without its secret.
        await self._vault.store(tenant_id, secret_name(endpoint_id), SECRET_KIND, secret)
        endpoint = await self._store.insert_endpoint(
            {
                "id": endpoint_id,
                "tenant_id": tenant_id,
                "url": checked,
                "description": description,
                "event_types": types,
                "secret_hint": secret.reveal()[:10],
                "created_by": created_by,
            }
        )
        return endpoint, secret

    async def update(
        self, tenant_id: str, endpoint_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "url" in fields or "event_types" in fields:
            current = await self._get(tenant_id, endpoint_id)
            url, types = await self._checked(
                fields.get("url", current["url"]), fields.get("event_types", current["event_types"])
            )
            if "url" in fields:
                changes["url"] = url
            if "event_types" in fields:
                changes["event_types"] = types
        if "description" in fields:
            changes["description"] = fields["description"]
        if "enabled" in fields:
            if fields["enabled"]:
                changes.update(
                    state="enabled", disabled_reason="", consecutive_failures=0, failing_since=None
                )
            else:
                changes.update(state="disabled", disabled_reason="disabled by the tenant")
        updated = await self._store.update_endpoint(tenant_id, endpoint_id, changes)
        if updated is None:
            raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
        return updated

    async def _get(self, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
        endpoint = await self._store.get_endpoint(tenant_id, endpoint_id)
        if endpoint is None:
            raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
        return endpoint

    async def delete(self, tenant_id: str, endpoint_id: str) -> None:
        if not await self._store.delete_endpoint(tenant_id, endpoint_id):
            raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
        for previous in (False, True):
            await self._vault.delete(tenant_id, secret_name(endpoint_id, previous=previous))

    async def rotate(
        self, tenant_id: str, endpoint_id: str, overlap_seconds: float | None
    ) -> tuple[dict[str, Any], Secret]:
        endpoint = await self._get(tenant_id, endpoint_id)
        overlap = (
            self._policy.secret_overlap_seconds if overlap_seconds is None else overlap_seconds
        )
        current = await self._vault.get(tenant_id, secret_name(endpoint_id))
        if current is not None and overlap > 0:
            await self._vault.store(
                tenant_id, secret_name(endpoint_id, previous=True), SECRET_KIND, current
            )
        fresh = Secret(new_secret())
        await self._vault.store(tenant_id, secret_name(endpoint_id), SECRET_KIND, fresh)
        expires = self._clock() + timedelta(seconds=overlap) if overlap > 0 else None
        updated = await self._store.update_endpoint(
            tenant_id,
            endpoint_id,
            {
                "secret_hint": fresh.reveal()[:10],
                "secret_generation": endpoint["secret_generation"] + 1,
                "previous_secret_expires_at": expires,
            },
        )
        assert updated is not None
        return updated, fresh


class OutboundEvents:
    """Turns POSTD events into deliveries for every matching endpoint of the tenant."""

    def __init__(
        self,
        store: OutboundStore,
        *,
        clock: Callable[[], datetime],
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_enqueued = on_enqueued

    async def publish(
        self,
        tenant_id: str,
        event_type: str,
        source_event_id: str,
        data: Mapping[str, Any],
        occurred_at: datetime | None = None,
    ) -> int:
        """Idempotent on (endpoint, source_event_id). Returns deliveries created."""
        if not tenant_id:
            return 0
        body = json.dumps(
            {
                "type": event_type,
                "timestamp": (occurred_at or self._clock()).isoformat(),
                "data": dict(data),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        created = await self._store.create_deliveries(tenant_id, event_type, source_event_id, body)
        if created:
            self._on_enqueued()
        return created


class DeliveryWorker:
    def __init__(
        self,
        store: OutboundStore,
        keys: SigningKeys,
        sender: DeliverySender,
        policy: OutboundPolicy,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._keys = keys
        self._sender = sender
        self._policy = policy
        self._clock = clock

    async def run_once(self) -> int:
        now = self._clock()
        due = await self._store.claim_deliveries(
            self._policy.batch_size, now, self._policy.lease_seconds
        )
        for delivery in due:
            await self._attempt(delivery)
        return len(due)

    async def _attempt(self, delivery: DueDelivery) -> None:
        now = self._clock()
        try:
            keys = await self._keys.keys(delivery, now)
        except NotFound as exc:
            result = SendResult(0, exc.message, 0.0)
        else:
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "POSTD-Webhooks/1",
                "webhook-id": delivery.message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(
                    keys, delivery.message_id, timestamp, delivery.payload
                ),
            }
            result = await self._sender.send(delivery.url, headers, delivery.payload)
        now = self._clock()
        next_at: datetime | None = None
        if not result.ok:
            deadline = delivery.created_at + timedelta(seconds=self._policy.retry_window_seconds)
            if now < deadline:
                delay = retry_delay(delivery.attempt_count + 1, self._policy)
                next_at = min(now + timedelta(seconds=delay), deadline)
        metrics.DELIVERIES.labels("ok" if result.ok else ("retry" if next_at else "failed")).inc()
        health = await self._store.record_attempt(delivery, result, now, next_at)
        await self._after(delivery, health, result, now)

    async def _after(
        self, delivery: DueDelivery, health: EndpointHealth, result: SendResult, now: datetime
    ) -> None:
        policy = self._policy
        if result.ok:
            if health.alert_id:
                message = _alert(
                    alert_id=health.alert_id,
                    tenant_id=delivery.tenant_id,
                    state=alert_pb2.ALERT_STATE_RESOLVED,
                    severity=alert_pb2.ALERT_SEVERITY_INFO,
                    title="Webhook endpoint recovered",
                    message=f"Deliveries to {health.url} succeed again.",
                    endpoint_id=delivery.endpoint_id,
                    started_at=now,
                    resolved_at=now,
                    topic=policy.alerts_topic,
                )
                await self._store.resolve_alert(delivery.endpoint_id, health.alert_id, message)
            return
        if health.state != "enabled":
            return
        since = health.failing_since or now
        if (
            health.consecutive_failures >= policy.disable_min_failures
            and (now - since).total_seconds() >= policy.disable_after_seconds
        ):
            reason = (
                f"disabled after {health.consecutive_failures} failed deliveries in a row "
                f"since {since.isoformat(timespec='seconds')}"
            )
            message = _alert(
                alert_id=health.alert_id or str(uuid.uuid4()),
                tenant_id=delivery.tenant_id,
                state=alert_pb2.ALERT_STATE_FIRING,
                severity=alert_pb2.ALERT_SEVERITY_CRITICAL,
                title="Webhook endpoint disabled",
                message=f"POSTD stopped delivering to {health.url}: {reason}. "
                "Fix the endpoint, then enable it again.",
                endpoint_id=delivery.endpoint_id,
                started_at=since,
                resolved_at=None,
                topic=policy.alerts_topic,
            )
            if await self._store.disable_failing(delivery.endpoint_id, reason, message):
                metrics.ENDPOINTS_DISABLED.inc()
                log.warning(
                    "endpoint disabled",
                    endpoint_id=delivery.endpoint_id,
                    tenant_id=delivery.tenant_id,
                )
            return
        if health.consecutive_failures >= policy.alert_after_failures and not health.alert_id:
            alert_id = str(uuid.uuid4())
            message = _alert(
                alert_id=alert_id,
                tenant_id=delivery.tenant_id,
                state=alert_pb2.ALERT_STATE_FIRING,
                severity=alert_pb2.ALERT_SEVERITY_WARNING,
                title="Webhook deliveries failing",
                message=f"{health.consecutive_failures} deliveries in a row to {health.url} "
                f"failed (last: {result.error or result.status}). POSTD keeps retrying.",
                endpoint_id=delivery.endpoint_id,
                started_at=since,
                resolved_at=None,
                topic=policy.alerts_topic,
            )
            if await self._store.fire_alert(delivery.endpoint_id, alert_id, message):
                metrics.FAILURE_STREAKS.inc()
