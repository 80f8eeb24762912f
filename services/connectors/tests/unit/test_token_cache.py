"""Tokens remembered from the vault: one vault read serves a connection's publishes
while its row is unchanged; a refresh, a reconnect, a disconnect, a status change, a
token the platform refuses or the time limit ends that, and no other tenant or
connection is ever served from it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postd_common.config import ConfigError
from postd_common.errors import NotFound
from postd_common.secrets import Secret
from postd_connectors.app import load_platform_data
from postd_connectors.config import load_settings
from postd_connectors.domain.model import (
    Connection,
    ConnectionStatus,
    ErrorAction,
    ErrorCategory,
    PlatformError,
    PlatformFailure,
    PostContent,
    StoredBundle,
    TokenBundle,
)
from postd_connectors.domain.service import ConnectorsService
from postd_connectors.domain.token_cache import TokenCache
from postd_connectors.platforms.base import (
    AccountContext,
    PublishOutcome,
    PublishRequest,
    PublishState,
)
from postd_connectors.ports import PublishRecord, PublishView
from postd_connectors.testing import InMemoryTokenStore

CAPS = load_platform_data().capabilities["facebook"]


# --------------------------------------------------------------------------- the cache


def _connection(tenant: str = "t1", cid: str = "c1", at: float = 0.0) -> Connection:
    return Connection(
        id=cid,
        tenant_id=tenant,
        platform="facebook",
        external_id="page",
        status=ConnectionStatus.HEALTHY,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=at),
    )


def _stored(token: str) -> StoredBundle:
    return StoredBundle(TokenBundle(access_token=Secret(token)), 1, "", False)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_serves_the_same_tenant_connection_and_row_only() -> None:
    cache = TokenCache(30)
    cache.put(_connection(), _stored("a"))
    found = cache.get(_connection())
    assert found is not None
    assert found.bundle.access_token.reveal() == "a"
    # Another tenant holding the same connection id, another connection: nothing.
    assert cache.get(_connection(tenant="t2")) is None
    assert cache.get(_connection(cid="c2")) is None
    # The row changed since (any replica refreshed, reconnected, changed its status).
    assert cache.get(_connection(at=1)) is None
    assert cache.get(_connection()) is None  # and the entry is gone


def test_an_entry_ends_with_its_time_limit() -> None:
    clock = Clock()
    cache = TokenCache(30, clock=clock)
    cache.put(_connection(), _stored("a"))
    clock.now += 29.9
    assert cache.get(_connection()) is not None
    clock.now += 0.1
    assert cache.get(_connection()) is None
    assert len(cache) == 0


def test_nothing_is_kept_when_disabled_or_uncheckable() -> None:
    off = TokenCache(0)
    off.put(_connection(), _stored("a"))
    assert off.get(_connection()) is None
    cache = TokenCache(30)
    cache.put(replace(_connection(), updated_at=None), _stored("a"))
    assert len(cache) == 0


def test_bounded_least_recently_used_first() -> None:
    cache = TokenCache(30, max_entries=2)
    cache.put(_connection(cid="c1"), _stored("1"))
    cache.put(_connection(cid="c2"), _stored("2"))
    assert cache.get(_connection(cid="c1")) is not None
    cache.put(_connection(cid="c3"), _stored("3"))
    assert cache.get(_connection(cid="c2")) is None
    assert cache.get(_connection(cid="c1")) is not None
    assert cache.get(_connection(cid="c3")) is not None


def test_forget() -> None:
    cache = TokenCache(30)
    cache.put(_connection(), _stored("a"))
    cache.put(_connection(tenant="t2"), _stored("b"))
    cache.forget("t1", "c1")
    assert cache.get(_connection()) is None
    assert cache.get(_connection(tenant="t2")) is not None


# --------------------------------------------------------------------------- the service


@dataclass
class CountingStore(InMemoryTokenStore):
    """The vault's contract, counting reads."""

    reads: int = 0

    async def get(self, tenant_id: str, connection_id: str) -> StoredBundle:
        self.reads += 1
        return await super().get(tenant_id, connection_id)


@dataclass
class FakeRepo:
    connections: dict[str, Connection] = field(default_factory=dict)
    records: dict[tuple[str, str, str], PublishRecord] = field(default_factory=dict)

    def touch(self, connection_id: str, **changes: Any) -> None:
        """A row change as any replica makes it (updated_at moves)."""
        current = self.connections[connection_id]
        self.connections[connection_id] = replace(
            current, **changes, updated_at=datetime.now(UTC) + timedelta(microseconds=1)
        )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeRepo]:
        yield self

    @contextlib.asynccontextmanager
    async def refresh_lock(self, connection_id: str) -> AsyncIterator[Any]:
        yield type("Lock", (), {"waited": False})()

    async def lock(self, tenant_id: str, connection_id: str) -> Connection | None:
        return await self.get(tenant_id, connection_id)

    async def save(self, connection: Connection, *, insert: bool) -> Connection:
        self.connections[connection.id] = connection
        self.touch(connection.id)
        return self.connections[connection.id]

    async def audit(self, connection: Connection, **kw: Any) -> None:
        pass

    async def announce(self, connection: Connection, change: Any) -> None:
        pass

    async def get(self, tenant_id: str, connection_id: str) -> Connection | None:
        found = self.connections.get(connection_id)
        return found if found and found.tenant_id == tenant_id else None

    async def set_last_error(self, tenant_id: str, connection_id: str, error: Any) -> None:
        self.touch(connection_id, last_error=error)

    async def publish_view(
        self, tenant_id: str, connection_id: str, key: str, *, apps: Mapping[str, str]
    ) -> PublishView | None:
        found = await self.get(tenant_id, connection_id)
        if found is None:
            return None
        return PublishView(found, self.records.get((tenant_id, connection_id, key)), None)

    async def save_record(self, record: PublishRecord, *, job_id: str = "") -> None:
        self.records[(record.tenant_id, record.connection_id, record.idempotency_key)] = record

    async def save_outcome(
        self,
        record: PublishRecord,
        *,
        usage: Any = None,
        set_last_error: bool = False,
        last_error: PlatformError | None = None,
    ) -> None:
        await self.save_record(record)
        if set_last_error:
            await self.set_last_error(record.tenant_id, record.connection_id, last_error)


@dataclass
class FakePage:
    """A Page whose API accepts only the token it issued last."""

    platform: str = "facebook"
    app: str = "meta"
    capabilities: Any = CAPS
    valid: str = "page-1"
    issued: int = 1
    used: list[str] = field(default_factory=list)

    def can_refresh(self, bundle: TokenBundle) -> bool:
        return True

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        self.issued += 1
        self.valid = f"page-{self.issued}"
        return replace(ctx.bundle, access_token=Secret(self.valid))

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        token = ctx.bundle.access_token.reveal()
        self.used.append(token)
        if token != self.valid:
            raise PlatformFailure(
                PlatformError(
                    category=ErrorCategory.AUTH_EXPIRED,
                    platform="facebook",
                    message="The token expired.",
                    action=ErrorAction.REFRESH_TOKEN,
                    retryable=True,
                )
            )
        return PublishOutcome(state=PublishState.PUBLISHED, platform_post_id=f"p{len(self.used)}")


@dataclass
class Parts:
    service: ConnectorsService
    repo: FakeRepo
    tokens: CountingStore
    page: FakePage
    connection: Connection


@pytest.fixture
async def parts() -> Parts:
    repo, tokens, page = FakeRepo(), CountingStore(), FakePage()
    connection = Connection(
        id=str(uuid.uuid4()),
        tenant_id="t1",
        platform="facebook",
        external_id="page",
        status=ConnectionStatus.HEALTHY,
        updated_at=datetime.now(UTC),
    )
    repo.connections[connection.id] = connection
    await tokens.store("t1", connection.id, TokenBundle(access_token=Secret("page-1")))
    service = ConnectorsService(
        repo=repo,  # type: ignore[arg-type]
        tokens=tokens,
        connectors={"facebook": page},  # type: ignore[dict-item]
        token_cache=TokenCache(30),
    )
    return Parts(service, repo, tokens, page, connection)


async def _publish(parts: Parts, tenant: str = "t1") -> str:
    result = await parts.service.publish(
        tenant_id=tenant,
        connection_id=parts.connection.id,
        idempotency_key=str(uuid.uuid4()),
        content=PostContent(text="hello"),
    )
    return result.status


async def test_one_vault_read_serves_the_next_publishes(parts: Parts) -> None:
    for _ in range(3):
        assert await _publish(parts) == "published"
    assert parts.tokens.reads == 1


async def test_a_row_changed_by_another_replica_means_a_fresh_read(parts: Parts) -> None:
    await _publish(parts)
    # Another replica refreshed: new tokens in the vault, then the row updated.
    stored = await parts.tokens.get("t1", parts.connection.id)
    parts.page.valid = "page-9"
    await parts.tokens.replace(
        "t1",
        parts.connection.id,
        replace(stored.bundle, access_token=Secret("page-9")),
        expected_version=stored.version,
    )
    parts.repo.touch(parts.connection.id)
    reads = parts.tokens.reads
    assert await _publish(parts) == "published"
    assert parts.page.used[-1] == "page-9"
    assert parts.tokens.reads == reads + 1


async def test_a_token_refused_by_the_platform_is_not_used_again(parts: Parts) -> None:
    await _publish(parts)
    # The vault's tokens changed and the row did not say so yet: the remembered token
    # is refused, the refresh reads the vault itself, and the retry uses the new one.
    stored = await parts.tokens.get("t1", parts.connection.id)
    await parts.tokens.replace(
        "t1",
        parts.connection.id,
        replace(stored.bundle, access_token=Secret("elsewhere")),
        expected_version=stored.version,
    )
    parts.page.valid = "elsewhere"
    assert await _publish(parts) == "published"
    assert parts.page.used[-2:] == ["page-1", "page-2"]
    stored = await parts.tokens.get("t1", parts.connection.id)
    assert stored.bundle.access_token.reveal() == "page-2"
    assert await _publish(parts) == "published"
    assert parts.page.used[-1] == "page-2"


async def test_a_refresh_here_forgets_what_it_replaced(parts: Parts) -> None:
    await _publish(parts)
    result = await parts.service.refresh(
        tenant_id="t1", connection_id=parts.connection.id, force=True, reason="", actor="t"
    )
    assert result.outcome == "refreshed"
    assert await _publish(parts) == "published"
    assert parts.page.used[-1] == "page-2"


async def test_disconnect_and_revocation_forget_and_refuse(parts: Parts) -> None:
    await _publish(parts)
    await parts.service.update_status(
        tenant_id="t1",
        connection_id=parts.connection.id,
        status=ConnectionStatus.REVOKED,
        reason="revoked at the platform",
        source="health",
        actor="service:health",
    )
    assert len(parts.service.token_cache) == 0
    assert await _publish(parts) == "failed"
    await parts.service.disconnect(
        tenant_id="t1",
        connection_id=parts.connection.id,
        revoke_at_platform=False,
        reason="",
        actor="t",
    )
    assert len(parts.service.token_cache) == 0
    assert await _publish(parts) == "failed"
    assert parts.page.used == ["page-1"]


async def test_another_tenant_is_never_served(parts: Parts) -> None:
    await _publish(parts)
    with pytest.raises(NotFound):
        await _publish(parts, tenant="t2")
    assert parts.page.used == ["page-1"]


# --------------------------------------------------------------------------- settings

ENV = {"POSTD_ENV": "test", "DATABASE_URL": "postgresql://db/x", "KAFKA_BOOTSTRAP": "k:9092"}


def test_the_time_limit_is_a_setting_of_at_most_five_minutes() -> None:
    assert load_settings(ENV).token_cache_seconds == 30
    off = load_settings({**ENV, "POSTD_CONNECTORS_TOKEN_CACHE_SECONDS": "0"})
    assert off.token_cache_seconds == 0
    with pytest.raises(ConfigError, match="at most 300"):
        load_settings({**ENV, "POSTD_CONNECTORS_TOKEN_CACHE_SECONDS": "301"})
