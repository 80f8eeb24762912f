"""Fixtures for the vault's tests: a fresh schema per test, KMS providers, a real server.

Each test gets its own PostgreSQL schema (key versions are schema-wide, so tests that
rotate must not see each other), its own keyring file and its own tenants.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from postd.vault.v1 import vault_pb2_grpc
from postd_common import db
from postd_common.grpcutil import GrpcServer, create_server, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.testing import unique
from postd_vault.adapters.postgres import PostgresSecretStore
from postd_vault.app import MIGRATIONS
from postd_vault.domain.cache import DataKeyCache
from postd_vault.domain.vault import Vault
from postd_vault.kms import Kms, KmsUnavailable
from postd_vault.kms.gcp import GcpKms
from postd_vault.kms.local import LocalKeyring
from postd_vault.servicer import POLICY, SERVICE_NAME, VaultServicer, refusal_auditor

SUPPORT = Path(__file__).parent / "support"
GCP_KEY = "projects/postd-test/locations/global/keyRings/vault/cryptoKeys/kek"


def load_support(name: str) -> ModuleType:
    """Import ``tests/support/<name>.py`` under a name no other service's tests use."""
    module_name = f"postd_vault_test_support_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SUPPORT / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


standin_module = load_support("gcp_kms_standin")


class CountingKms:
    """A KMS proxy that counts calls and can be switched off (KmsUnavailable),
    for tests of caching and of a KMS outage. Delegates everything else."""

    def __init__(self, inner: Kms) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.down = False

    @property
    def provider(self) -> str:
        return self.inner.provider

    def _enter(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.down:
            raise KmsUnavailable("the test switched the KMS off", retry_after=3.0)

    async def wrap(self, data_key: bytes, aad: bytes, key_version: str) -> bytes:
        self._enter("wrap")
        return await self.inner.wrap(data_key, aad, key_version)

    async def unwrap(self, wrapped: bytes, aad: bytes, key_version: str) -> bytes:
        self._enter("unwrap")
        return await self.inner.unwrap(wrapped, aad, key_version)

    async def create_version(self) -> Any:
        self._enter("create_version")
        return await self.inner.create_version()

    async def list_versions(self) -> Any:
        self._enter("list_versions")
        return await self.inner.list_versions()

    async def disable(self, key_version: str) -> Any:
        self._enter("disable")
        return await self.inner.disable(key_version)

    async def destroy(self, key_version: str) -> Any:
        self._enter("destroy")
        return await self.inner.destroy(key_version)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def schema(pg_dsn: str) -> str:
    name = unique("vault").replace("-", "_")
    await db.migrate_dsn(pg_dsn, name, MIGRATIONS)
    return name


@pytest.fixture
def store(pg_pool: asyncpg.Pool, schema: str) -> PostgresSecretStore:
    return PostgresSecretStore(pg_pool, schema=schema)


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "vault-keyring.json"


@pytest.fixture
def local_kms(keyring_path: Path) -> CountingKms:
    return CountingKms(LocalKeyring.open_file(keyring_path, create_if_missing=True))


@pytest.fixture
def make_vault(
    store: PostgresSecretStore,
) -> Callable[..., Awaitable[Vault]]:
    async def make(kms: Kms, *, cache_seconds: float = 0.0, **options: Any) -> Vault:
        vault = Vault(store, kms, DataKeyCache(cache_seconds, 1000), **options)
        await vault.start()
        return vault

    return make


@pytest.fixture
async def vault(make_vault: Callable[..., Awaitable[Vault]], local_kms: CountingKms) -> Vault:
    """A vault on the local keyring with the data-key cache off."""
    return await make_vault(local_kms)


@pytest.fixture
def tenant() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def gcp_standin() -> AsyncIterator[tuple[Any, str]]:
    """The Cloud KMS stand-in with one key (version 1 primary) and its endpoint."""
    async with standin_module.KmsStandIn.serve() as (standin, endpoint):
        standin.create_key(GCP_KEY)
        yield standin, endpoint


@pytest.fixture
async def gcp_kms(gcp_standin: tuple[Any, str]) -> AsyncIterator[GcpKms]:
    kms = GcpKms.connect(GCP_KEY, gcp_standin[1], timeout=1.5)
    yield kms
    await kms.close()


@pytest.fixture
async def grpc_vault(
    vault: Vault, verifier_for: Callable[[str], IdentityVerifier]
) -> AsyncIterator[GrpcServer]:
    """The vault servicer on a real gRPC server with identity checks and the policy."""
    servicer = VaultServicer(vault)
    server = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=[lambda s: vault_pb2_grpc.add_VaultServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        verifier=verifier_for("vault"),
        policy=POLICY,
        on_refused=refusal_auditor(vault),
    )
    await server.start()
    yield server
    await server.stop(0.5)


@pytest.fixture
async def stub_for(
    grpc_vault: GrpcServer, signer_for: Callable[[str], IdentitySigner]
) -> AsyncIterator[Callable[[str], vault_pb2_grpc.VaultServiceStub]]:
    """``stub_for("connectors")``: a client presenting that service's identity."""
    channels: list[Any] = []

    def make(caller: str) -> vault_pb2_grpc.VaultServiceStub:
        channel = open_channel(
            f"127.0.0.1:{grpc_vault.port}", signer=signer_for(caller), audience="vault"
        )
        channels.append(channel)
        return vault_pb2_grpc.VaultServiceStub(channel)

    yield make
    for channel in channels:
        await channel.close()
