"""Fixtures: the real gateway app (real PostgreSQL, real gRPC to in-process fakes of the
backends' contracts), tenants with API keys, and helpers to call it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from postd_common import db
from postd_common.testing import TestInfra
from postd_gateway.adapters.postgres import TenantStore
from postd_gateway.app import SPEC, create_app
from postd_gateway.config import Settings, load_settings
from postd_gateway.domain import issue_key
from postd_gateway.testing import FakeBackends, FakeWorld, start_fake_backends


@dataclasses.dataclass(frozen=True)
class Tenant:
    id: str
    key: str  # an API key of ``role``
    key_id: str
    role: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def gateway_env(infra: TestInfra, identity_dir: Path, addresses: dict[str, str]) -> dict[str, str]:
    env = {
        "POSTD_ENV": "test",
        "DATABASE_URL": infra.dsn,
        "KAFKA_BOOTSTRAP": infra.bootstrap,
        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "gateway.key"),
        "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        "POSTD_PUBLIC_URL": "http://gateway.test",
        "POSTD_GATEWAY_DASHBOARD_PATH": "/app",
    }
    for name, address in addresses.items():
        env[f"POSTD_{name.upper().replace('-', '_')}_ADDR"] = address
    return env


@pytest.fixture(scope="session")
async def fake_backends(verifier_for: Callable[[str], Any]) -> AsyncIterator[FakeBackends]:
    backends = await start_fake_backends(FakeWorld(), verifier_for)
    yield backends
    await backends.stop()


@pytest.fixture
def world(fake_backends: FakeBackends) -> FakeWorld:
    return fake_backends.world


@pytest.fixture(scope="session")
def base_env(infra: TestInfra, identity_dir: Path, fake_backends: FakeBackends) -> dict[str, str]:
    return gateway_env(infra, identity_dir, fake_backends.addresses)


@pytest.fixture(scope="session")
def settings(base_env: dict[str, str]) -> Settings:
    return load_settings(base_env)


@pytest.fixture(scope="session")
async def gateway_schema(infra: TestInfra) -> None:
    await db.migrate_dsn(infra.dsn, "gateway", SPEC.migrations or Path())


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, gateway_schema: None) -> Any:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def make_client(
    aiohttp_client: Any, settings: Settings, gateway_schema: None
) -> Callable[..., Awaitable[Any]]:
    """A client on a gateway with other settings: ``await make_client(auth_cache_seconds=0)``."""

    async def make(**overrides: Any) -> Any:
        return await aiohttp_client(create_app(dataclasses.replace(settings, **overrides)))

    return make


@pytest.fixture
def make_tenant(pg_pool: asyncpg.Pool, gateway_schema: None) -> Callable[..., Awaitable[Tenant]]:
    """A fresh tenant with one API key of the given role."""

    async def make(role: str = "owner", scopes: tuple[str, ...] = ()) -> Tenant:
        store = TenantStore(pg_pool)
        import uuid

        tenant_id = await store.ensure_tenant(f"t-{uuid.uuid4().hex[:12]}", "Test tenant")
        issued = issue_key("test")
        await store.add_key(
            tenant_id, issued.key_id, issued.digest, name="test", role=role, scopes=scopes
        )
        return Tenant(tenant_id, issued.secret, issued.key_id, role)

    return make


@pytest.fixture
def add_key(pg_pool: asyncpg.Pool) -> Callable[..., Awaitable[Tenant]]:
    """Another key for an existing tenant."""

    async def make(tenant: Tenant, role: str, scopes: tuple[str, ...] = ()) -> Tenant:
        issued = issue_key("test")
        await TenantStore(pg_pool).add_key(
            tenant.id, issued.key_id, issued.digest, name=role, role=role, scopes=scopes
        )
        return Tenant(tenant.id, issued.secret, issued.key_id, role)

    return make
