"""The ports the connectors domain needs. Adapters implement them; unit tests fake them.

Every method is a coroutine doing I/O. Besides what each lists, every method may
raise :class:`postd_common.errors.Unavailable` when its backend (PostgreSQL, the
vault) cannot be reached; nothing was changed then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from postd_common.errors import Conflict, NotFound
from postd_connectors.domain.model import (
    AuditEntry,
    Connection,
    ConnectionStatus,
    MediaItem,
    PlatformError,
    StatusChange,
    StoredBundle,
    TokenBundle,
)
from postd_connectors.domain.oauth import AuthState
from postd_connectors.domain.validation import Violation
from postd_connectors.platforms.base import RateUsage


class MediaInspector(Protocol):
    """Learns what can be known of a media item locally (type, size, dimensions,
    duration) by fetching it through the SSRF guard with size and time caps.
    Returns the item completed, or a violation (refused URL, unreachable, unreadable)
    with a message a person understands. Blocks for the download and the probe."""

    async def inspect(self, item: MediaItem, where: str) -> MediaItem | Violation: ...


class TokenNotFound(NotFound):
    """The vault holds no bundle for this tenant and connection."""


class TokenConflict(Conflict):
    """A compare-and-swap lost: someone else replaced the bundle first."""


class TokenStore(Protocol):
    """Token bundles, kept by the vault (envelope-encrypted)."""

    async def store(self, tenant_id: str, connection_id: str, bundle: TokenBundle) -> StoredBundle:
        """Create or overwrite; an empty refresh token keeps the stored one."""
        ...

    async def get(self, tenant_id: str, connection_id: str) -> StoredBundle:
        """Raises TokenNotFound."""
        ...

    async def replace(
        self,
        tenant_id: str,
        connection_id: str,
        bundle: TokenBundle,
        *,
        expected_version: int = 0,
        expected_fingerprint: str = "",
    ) -> StoredBundle:
        """Compare-and-swap after a refresh. Raises TokenNotFound, TokenConflict."""
        ...

    async def delete(self, tenant_id: str, connection_id: str, reason: str) -> int:
        """Crypto-shred a connection's secrets; returns how many. Idempotent."""
        ...


class ConnectionTx(Protocol):
    """Writes that commit together: the connection, its audit and its events."""

    async def lock(self, tenant_id: str, connection_id: str) -> Connection | None: ...

    async def lock_account(
        self, tenant_id: str, platform: str, external_id: str
    ) -> Connection | None: ...

    async def save(self, connection: Connection, *, insert: bool) -> Connection:
        """Insert (AlreadyExists on a duplicate account) or update by id."""
        ...

    async def audit(
        self,
        connection: Connection,
        *,
        action: str,
        actor: str,
        reason: str,
        previous: ConnectionStatus | None,
        details: Mapping[str, str] | None = None,
    ) -> None: ...

    async def announce(self, connection: Connection, change: StatusChange) -> None:
        """Queue a ConnectionEvent in the outbox (sent to Kafka after commit)."""
        ...


@dataclass(frozen=True)
class PublishRecord:
    tenant_id: str
    connection_id: str
    idempotency_key: str
    status: str  # pending | unknown | processing | published | failed
    fingerprint: str
    platform_post_id: str = ""
    url: str = ""
    progress: Mapping[str, str] = field(default_factory=dict)
    error: PlatformError | None = None
    attempts: int = 0
    published_at: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class PublishView:
    """What a publish reads before calling the platform, from one snapshot: the
    connection, its record for the idempotency key, and the latest usage block (by
    the platform's app, or the account) still in force."""

    connection: Connection
    record: PublishRecord | None
    blocked_until: datetime | None


@dataclass(frozen=True)
class UsageSeen:
    """Platform usage to record beside an outcome, keyed as ``record_usage`` keys it
    (``app``: the platform app; ``account``: the connection's external id)."""

    app: str
    account: str
    readings: Sequence[RateUsage]


class RefreshLock(Protocol):
    @property
    def waited(self) -> bool:
        """True when another holder had the lock and this one waited for it."""
        ...


class ConnectionRepository(Protocol):
    """The connectors schema in PostgreSQL."""

    def transaction(self) -> AbstractAsyncContextManager[ConnectionTx]: ...

    def refresh_lock(self, connection_id: str) -> AbstractAsyncContextManager[RefreshLock]:
        """Single-flight per connection across replicas (held until exit)."""
        ...

    async def get(self, tenant_id: str, connection_id: str) -> Connection | None: ...

    async def list_connections(
        self,
        tenant_id: str,
        *,
        platforms: Sequence[str],
        statuses: Sequence[ConnectionStatus],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Connection]: ...

    async def list_expiring(
        self,
        tenant_id: str | None,
        *,
        before: datetime,
        platforms: Sequence[str],
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Connection]: ...

    async def resolve_account(
        self, platform: str, external_id: str, *, include_disconnected: bool
    ) -> list[Connection]: ...

    async def list_audit(
        self, tenant_id: str, connection_id: str | None, *, limit: int, before_seq: int | None
    ) -> list[tuple[int, AuditEntry]]: ...

    async def set_last_error(
        self, tenant_id: str, connection_id: str, error: PlatformError | None
    ) -> None: ...

    # OAuth states
    async def insert_state(self, digest: bytes, state: AuthState) -> None: ...

    async def consume_state(self, digest: bytes) -> AuthState | None:
        """Mark a state used and return it; None when unknown or already used."""
        ...

    async def purge_states(self, before: datetime) -> int: ...

    # Publish records
    async def get_record(
        self, tenant_id: str, connection_id: str, key: str
    ) -> PublishRecord | None: ...

    async def save_record(self, record: PublishRecord, *, job_id: str = "") -> None: ...

    async def save_progress(
        self, tenant_id: str, connection_id: str, key: str, progress: Mapping[str, str]
    ) -> None: ...

    async def publish_view(
        self, tenant_id: str, connection_id: str, key: str, *, apps: Mapping[str, str]
    ) -> PublishView | None:
        """``get``, ``get_record`` and ``blocked_until`` (scopes ``app`` and
        ``account:<external id>`` of the connection's app, ``apps`` mapping platform to
        app) in one read; None when the tenant has no such connection."""
        ...

    async def save_outcome(
        self,
        record: PublishRecord,
        *,
        usage: UsageSeen | None = None,
        set_last_error: bool = False,
        last_error: PlatformError | None = None,
    ) -> None:
        """``save_record``, then ``record_usage`` of ``usage`` and, when
        ``set_last_error``, ``set_last_error(last_error)`` on the record's connection:
        all or nothing."""
        ...

    async def find_record_by_fingerprint(
        self, tenant_id: str, connection_id: str, fingerprint: str, since: datetime
    ) -> PublishRecord | None: ...

    # Platform usage
    async def record_usage(
        self, platform: str, scope_key: str, usage: Sequence[RateUsage]
    ) -> None: ...

    async def blocked_until(self, platform: str, scope_keys: Sequence[str]) -> datetime | None: ...
