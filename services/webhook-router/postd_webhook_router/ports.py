"""The ports the webhook router's domain needs. Adapters implement them.

Every method may block on I/O (they are coroutines). Unless a method says otherwise,
a PostgreSQL failure surfaces as :class:`StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from postd_common.errors import Unavailable
from postd_common.secrets import Secret
from postd_webhook_router.domain.model import (
    InboundSource,
    PendingInbound,
    Route,
    StoredInbound,
)


class StoreUnavailable(Unavailable):
    """PostgreSQL could not be reached or refused; nothing was written."""


class ResolverUnavailable(Exception):
    """The connectors service could not answer ResolveAccount; retry later."""


class KeySourceUnavailable(Exception):
    """The JWKS could not be fetched and no cached copy is fresh enough."""


class VaultUnavailable(Unavailable):
    """The vault could not store or serve a secret; retry later."""


class KeySource(Protocol):
    async def key(self, kid: str) -> Mapping[str, Any] | None:
        """The JWK with id ``kid``, or None if the key set has no such key.
        Raises KeySourceUnavailable."""
        ...


class AccountResolver(Protocol):
    async def resolve(self, platform: str, external_account_id: str) -> list[Route]:
        """Connections holding the account (empty: unrouted). Raises ResolverUnavailable."""
        ...


class SecretVault(Protocol):
    async def store(
        self, tenant_id: str, name: str, kind: str, value: Secret, connection_id: str = ""
    ) -> None:
        """Create or overwrite a named secret. Raises VaultUnavailable."""
        ...

    async def get(self, tenant_id: str, name: str) -> Secret | None:
        """The secret, or None when there is none. Raises VaultUnavailable."""
        ...

    async def delete(self, tenant_id: str, name: str) -> None:
        """Destroy a named secret (idempotent). Raises VaultUnavailable."""
        ...


class AddressResolver(Protocol):
    async def addresses(self, host: str) -> list[str]:
        """Every IP address ``host`` resolves to; empty when it does not resolve."""
        ...


@dataclass(frozen=True)
class SendResult:
    status: int  # 0 when no response arrived
    error: str  # plain words, empty on a 2xx
    latency_seconds: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class DeliverySender(Protocol):
    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendResult:
        """POST once; never raises for network or HTTP failures (they are results).
        Refuses private/loopback/link-local targets at connect time."""
        ...


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: str
    value: bytes
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class ProcessedInbound:
    """The result of normalising and routing one stored delivery."""

    raw_id: str
    types: Sequence[str]
    external_account_id: str
    routes: Sequence[Route]
    normalized: Sequence[Mapping[str, Any]]
    messages: Sequence[OutboxMessage]


class WebhookStore(Protocol):
    """Inbound deliveries, sources, normalised events and the outbox."""

    async def find_source(self, platform: str, key_hash: bytes) -> InboundSource | None: ...

    async def create_source(
        self, source: InboundSource, key_hash: bytes, key_hint: str
    ) -> None: ...

    async def store_inbound(self, event: StoredInbound) -> tuple[str, bool]:
        """Store a delivery; returns (id, inserted). A delivery whose dedupe key (or
        previous-window key) is already stored is not stored again: the stored id is
        returned with inserted False and its duplicate count grows."""
        ...

    async def claim_pending(
        self, limit: int, now: datetime, lease_seconds: float
    ) -> list[PendingInbound]:
        """Due pending/retrying deliveries, leased so no other worker takes them."""
        ...

    async def release_pending(self, ids: Sequence[str], now: datetime) -> None:
        """Make these pending deliveries (leased to this process) due at ``now``."""
        ...

    async def complete(self, results: Sequence[ProcessedInbound]) -> None:
        """Record normalised events and their outbox messages, in one transaction."""
        ...

    async def fail(
        self,
        raw_id: str,
        error: str,
        next_attempt_at: datetime | None,
        dead_letter: OutboxMessage | None,
    ) -> None:
        """Record a processing failure: retry at ``next_attempt_at``, or dead-letter."""
        ...

    async def relay_outbox(
        self, limit: int, publish: Callable[[Sequence[OutboxMessage]], Awaitable[None]]
    ) -> int:
        """Hand up to ``limit`` outbox messages to ``publish``; delete them once it
        returns, in the same transaction. Returns how many were relayed."""
        ...
