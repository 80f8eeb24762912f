"""The connectors domain on fakes of its ports: a reconnect never loses the refresh
token, statuses change by compare-and-swap, platform failures are results."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postd_common.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from postd_common.secrets import Secret
from postd_connectors.app import load_platform_data
from postd_connectors.domain.model import (
    Connection,
    ConnectionStatus,
    StatusChange,
    TokenBundle,
)
from postd_connectors.domain.oauth import AuthState
from postd_connectors.domain.service import ConnectorsService
from postd_connectors.platforms.base import (
    CodeGrant,
    OAuthRequest,
    PlatformAccount,
    TokenGrant,
)
from postd_connectors.ports import PublishRecord
from postd_connectors.testing import InMemoryTokenStore

CAPS = load_platform_data().capabilities["linkedin"]


@dataclass
class FakeRepo:
    connections: dict[str, Connection] = field(default_factory=dict)
    states: dict[bytes, AuthState] = field(default_factory=dict)
    events: list[StatusChange] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    records: dict[tuple[str, str, str], PublishRecord] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeRepo]:
        yield self

    @contextlib.asynccontextmanager
    async def refresh_lock(self, connection_id: str) -> AsyncIterator[Any]:
        yield type("Lock", (), {"waited": False})()

    async def lock(self, tenant_id: str, connection_id: str) -> Connection | None:
        return await self.get(tenant_id, connection_id)

    async def lock_account(
        self, tenant_id: str, platform: str, external_id: str
    ) -> Connection | None:
        for c in self.connections.values():
            if (c.tenant_id, c.platform, c.external_id) == (tenant_id, platform, external_id):
                return c
        return None

    async def save(self, connection: Connection, *, insert: bool) -> Connection:
        stamped = replace(
            connection,
            created_at=connection.created_at or datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        self.connections[connection.id] = stamped
        return stamped

    async def audit(self, connection: Connection, *, action: str, **kw: Any) -> None:
        self.actions.append(action)

    async def announce(self, connection: Connection, change: StatusChange) -> None:
        self.events.append(change)

    async def get(self, tenant_id: str, connection_id: str) -> Connection | None:
        found = self.connections.get(connection_id)
        return found if found and found.tenant_id == tenant_id else None

    async def insert_state(self, digest: bytes, state: AuthState) -> None:
        self.states[digest] = state

    async def consume_state(self, digest: bytes) -> AuthState | None:
        state = self.states.get(digest)
        if state is None or state.consumed:
            return None
        self.states[digest] = replace(state, consumed=True)
        return state

    async def set_last_error(self, tenant_id: str, connection_id: str, error: Any) -> None:
        self.connections[connection_id] = replace(self.connections[connection_id], last_error=error)


@dataclass
class FakeLinkedIn:
    """A connector whose token answers the test decides."""

    refresh: str = "refresh-1"
    platform: str = "linkedin"
    app: str = "linkedin"
    supports_pkce: bool = False
    capabilities: Any = CAPS
    catalogue: Any = None

    def authorize_url(self, request: OAuthRequest) -> str:
        return f"https://li.example/auth?state={request.state}"

    def denial_message(self, error: str, description: str) -> str:
        return "You cancelled."

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        bundle = TokenBundle(
            access_token=Secret("access-" + grant.code),
            refresh_token=Secret(self.refresh),
            expires_at=datetime.now(UTC) + timedelta(days=60),
            refresh_expires_at=datetime.now(UTC) + timedelta(days=365) if self.refresh else None,
        )
        return TokenGrant(bundle, CAPS.scopes_for(["publish"]))

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        return [PlatformAccount("linkedin", "urn:li:person:1", "member", "Pat", grant.bundle)]


async def _connect(service: ConnectorsService, tenant: str) -> Connection:
    start = await service.start_auth(
        tenant_id=tenant,
        user_id="u",
        platform="linkedin",
        capabilities=[],
        redirect_uri="https://app.test/cb",
    )
    result = await service.complete_auth(
        tenant_id="", platform="linkedin", state=start.state, code="c"
    )
    return result.connections[0].connection


@pytest.fixture
def parts() -> tuple[ConnectorsService, FakeRepo, InMemoryTokenStore, FakeLinkedIn]:
    repo, tokens, connector = FakeRepo(), InMemoryTokenStore(), FakeLinkedIn()
    service = ConnectorsService(repo=repo, tokens=tokens, connectors={"linkedin": connector})  # type: ignore[arg-type,dict-item]
    return service, repo, tokens, connector


async def test_reconnect_without_a_refresh_token_keeps_the_stored_one(parts: Any) -> None:
    service, repo, tokens, connector = parts
    first = await _connect(service, "t1")
    assert first.has_refresh_token
    refresh_expiry = first.refresh_expires_at
    connector.refresh = ""  # the platform gives none on this consent
    second = await _connect(service, "t1")
    assert second.id == first.id
    assert second.has_refresh_token
    assert second.refresh_expires_at == refresh_expiry
    stored = await tokens.get("t1", first.id)
    assert stored.bundle.refresh_token.reveal() == "refresh-1"
    assert stored.bundle.access_token.reveal() == "access-c"
    assert repo.actions == ["connected", "reconnected"]
    # Reconnecting a healthy connection is not a status change.
    assert [e.source for e in repo.events] == ["connect"]


async def test_a_state_is_single_use_and_bound_to_its_tenant(parts: Any) -> None:
    service, repo, tokens, _ = parts
    start = await service.start_auth(
        tenant_id="t1",
        user_id="u",
        platform="linkedin",
        capabilities=[],
        redirect_uri="https://app.test/cb",
    )
    with pytest.raises(InvalidArgument):
        await service.complete_auth(
            tenant_id="t2", platform="linkedin", state=start.state, code="c"
        )
    with pytest.raises(InvalidArgument):  # spent by the refused attempt
        await service.complete_auth(
            tenant_id="t1", platform="linkedin", state=start.state, code="c"
        )
    assert repo.connections == {}
    assert tokens.bundles == {}


async def test_expired_state_is_refused(parts: Any) -> None:
    service, repo, _, _ = parts
    start = await service.start_auth(
        tenant_id="t1",
        user_id="u",
        platform="linkedin",
        capabilities=[],
        redirect_uri="https://app.test/cb",
    )
    (digest,) = repo.states
    repo.states[digest] = replace(
        repo.states[digest], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    with pytest.raises(InvalidArgument):
        await service.complete_auth(tenant_id="", platform="linkedin", state=start.state, code="c")


@pytest.mark.parametrize(
    ("redirect", "ok"),
    [
        ("https://app.test/cb", True),
        ("http://127.0.0.1:8080/cb", True),
        ("http://app.test/cb", False),
        ("https://app.test/cb#frag", False),
        ("javascript:alert(1)", False),
    ],
)
async def test_redirect_uris(parts: Any, redirect: str, ok: bool) -> None:
    service, *_ = parts
    call = service.start_auth(
        tenant_id="t", user_id="u", platform="linkedin", capabilities=[], redirect_uri=redirect
    )
    if ok:
        assert (await call).authorize_url
    else:
        with pytest.raises(InvalidArgument):
            await call


async def test_unknown_capability_is_refused_with_the_known_ones(parts: Any) -> None:
    service, *_ = parts
    with pytest.raises(InvalidArgument) as info:
        await service.start_auth(
            tenant_id="t",
            user_id="u",
            platform="linkedin",
            capabilities=["reviews"],
            redirect_uri="https://a.test/cb",
        )
    assert "offers analytics, publish, webhooks" in info.value.message


async def test_status_compare_and_swap(parts: Any) -> None:
    service, repo, _, _ = parts
    connection = await _connect(service, "t1")
    kwargs: Mapping[str, Any] = {
        "tenant_id": "t1",
        "connection_id": connection.id,
        "reason": "r",
        "source": "health_check",
        "actor": "service:health",
    }
    with pytest.raises(Conflict):
        await service.update_status(
            status=ConnectionStatus.ATTENTION, expected_status=ConnectionStatus.REVOKED, **kwargs
        )
    done = await service.update_status(
        status=ConnectionStatus.ATTENTION, expected_status=ConnectionStatus.HEALTHY, **kwargs
    )
    assert done.changed
    assert done.previous is ConnectionStatus.HEALTHY
    with pytest.raises(InvalidArgument):
        await service.update_status(status=ConnectionStatus.DISCONNECTED, **kwargs)
    await service.disconnect(
        tenant_id="t1",
        connection_id=connection.id,
        revoke_at_platform=False,
        reason="bye",
        actor="user:u",
    )
    with pytest.raises(FailedPrecondition):
        await service.update_status(status=ConnectionStatus.HEALTHY, **kwargs)
    again = await service.disconnect(
        tenant_id="t1",
        connection_id=connection.id,
        revoke_at_platform=False,
        reason="bye",
        actor="user:u",
    )
    assert again.shredded == 0  # idempotent
    with pytest.raises(NotFound):
        await service.get_connection("t2", connection.id)
    assert [e.status for e in repo.events] == [
        ConnectionStatus.HEALTHY,
        ConnectionStatus.ATTENTION,
        ConnectionStatus.DISCONNECTED,
    ]
