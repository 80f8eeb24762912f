"""The real peers, in-process, for health's end-to-end tests: the connectors service
(behind it the real vault, in front of it the platform sandbox over real HTTP) and the
publisher (its gRPC API and its ``connection.events`` consumer), each on real gRPC with
service identities, on the session's PostgreSQL and broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import grpc
import pytest

from postd.connectors.v1 import connectors_pb2 as cpb
from postd.connectors.v1.connectors_pb2_grpc import ConnectorsServiceStub
from postd.publisher.v1.publisher_pb2_grpc import PublisherServiceStub
from postd_common import db
from postd_common.bootstrap import Runtime
from postd_common.devinfra import free_port
from postd_common.grpcutil import create_server, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer
from postd_common.testing import TestInfra, unique
from postd_health.app import TopicNames

REDIRECT_URI = "https://app.postd.test/oauth/callback"


def schema_name(prefix: str) -> str:
    return unique(prefix).replace("-", "_")


@pytest.fixture(scope="session")
async def vault_address(
    infra: TestInfra,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    verifier_for: Callable[[str], IdentityVerifier],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """The real vault servicer in-process (own schema, a fresh local keyring)."""
    from postd_vault.testing import running_vault

    async with running_vault(
        dsn=infra.dsn,
        pool=pg_pool,
        identity_dir=identity_dir,
        verifier=verifier_for("vault"),
        keyring=tmp_path_factory.mktemp("vault") / "keyring.json",
        schema=schema_name("vault_for_health"),
    ) as address:
        yield address


@pytest.fixture(scope="session")
async def connectors_schema(infra: TestInfra) -> str:
    from postd_connectors.app import PACKAGE

    await db.migrate_dsn(infra.dsn, "connectors", PACKAGE / "migrations")
    return "connectors"


@dataclass
class Connectors:
    """The real connectors service as a test (the gateway's role) drives it."""

    address: str
    sandbox_url: str
    http: aiohttp.ClientSession
    gateway: ConnectorsServiceStub
    relay: Any

    async def consent(self, **directive: Any) -> None:
        async with self.http.post(f"{self.sandbox_url}/_sandbox/consent", json=directive) as resp:
            assert resp.status == 201, await resp.text()

    async def connect(
        self, tenant_id: str, platform: str = "facebook", reconnect: str = ""
    ) -> dict[str, cpb.Connection]:
        """OAuth through connectors and the sandbox, as the gateway runs it; returns
        the connections by external id."""
        await self.consent(platform="meta" if platform in ("facebook", "instagram") else platform)
        start = await self.gateway.StartAuth(
            cpb.StartAuthRequest(
                tenant_id=tenant_id,
                user_id="u_1",
                platform=platform,
                capabilities=["publish"],
                redirect_uri=REDIRECT_URI,
                reconnect_connection_id=reconnect,
            )
        )
        async with self.http.get(start.authorize_url, allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            location = resp.headers["Location"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        done = await self.gateway.CompleteAuth(
            cpb.CompleteAuthRequest(
                tenant_id=tenant_id,
                platform=platform,
                state=params.get("state", ""),
                code=params.get("code", ""),
                params=params,
            )
        )
        return {c.connection.external_id: c.connection for c in done.connections}

    async def status(self, tenant_id: str, connection_id: str) -> int:
        reply = await self.gateway.GetConnection(
            cpb.GetConnectionRequest(tenant_id=tenant_id, connection_id=connection_id)
        )
        return int(reply.connection.status)


@pytest.fixture
async def connectors(
    infra: TestInfra,
    connectors_schema: str,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    vault_address: str,
    sandbox: Any,
    topic_names: TopicNames,
) -> AsyncIterator[Connectors]:
    from postd_connectors import convert
    from postd_connectors.adapters.postgres import OutboxRelay, PostgresConnections
    from postd_connectors.adapters.vault import VaultTokenStore
    from postd_connectors.app import build_service
    from postd_connectors.config import load_settings as connectors_settings
    from postd_connectors.servicer import POLICY, SERVICE, ConnectorsServicer, register

    events = topic_names.connection_events
    settings = connectors_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_SANDBOX_URL": sandbox.url,
            "POSTD_CONNECTORS_HTTP_TIMEOUT": "2",
            "POSTD_CONNECTION_EVENTS_TOPIC": events,
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "connectors.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        }
    )
    await pg_pool.execute("DELETE FROM connectors.platform_usage")
    producer = EventProducer(infra.kafka("connectors"))
    relay = OutboxRelay(
        pg_pool, lambda t, v, k, h: producer.produce(t, v, key=k, headers=h), idle_seconds=0.05
    )
    repo = PostgresConnections(pg_pool, convert.event_encoder(events), relay.wake.set)
    vault_channel = open_channel(vault_address, signer=signer_for("connectors"), audience="vault")
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.http_timeout))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    service = build_service(
        settings, repo=repo, tokens=VaultTokenStore(vault_channel), session=session
    )
    server = create_server(
        service="connectors",
        address="127.0.0.1:0",
        register=[register(ConnectorsServicer(service))],
        service_names=[SERVICE],
        verifier=verifier_for("connectors"),
        policy=POLICY,
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    gateway = open_channel(address, signer=signer_for("gateway"), audience="connectors")
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    try:
        yield Connectors(address, sandbox.url, http, ConnectorsServiceStub(gateway), relay)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay_task, 5)
        await gateway.close()
        await vault_channel.close()
        await server.stop(0)
        await session.close()
        await http.close()
        await producer.close()


@dataclass
class RunningPublisher:
    address: str
    gateway: PublisherServiceStub
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)


@pytest.fixture
async def publisher(
    infra: TestInfra,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    connectors: Connectors,
    topic_names: TopicNames,
    make_topics: Callable[..., list[str]],
) -> AsyncIterator[RunningPublisher]:
    """The real publisher: its API and its connection-events consumer (no dispatcher
    or worker: scheduled posts stay scheduled, so a pause keeps them as missed)."""
    from postd_publisher.app import MIGRATIONS, assemble
    from postd_publisher.config import load_settings as publisher_settings
    from postd_publisher.servicer import SERVICE, access_policy, register

    schema = schema_name("publisher_for_health")
    await db.migrate_dsn(infra.dsn, schema, MIGRATIONS)
    jobs, dlq = make_topics("publish.jobs", "publish.dlq")
    group = unique("publisher")
    settings = publisher_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_CONNECTORS_ADDR": connectors.address,
            "POSTD_PUBLISHER_SCHEMA": schema,
            "POSTD_PUBLISHER_ROLES": "api,dispatcher",
            "POSTD_PUBLISH_JOBS_TOPIC": jobs,
            "POSTD_PUBLISH_RESULTS_TOPIC": topic_names.publish_results,
            "POSTD_PUBLISH_DLQ_TOPIC": dlq,
            "POSTD_CONNECTION_EVENTS_TOPIC": topic_names.connection_events,
            "POSTD_PUBLISHER_WORKER_GROUP": f"{group}-workers",
            "POSTD_PUBLISHER_EVENTS_GROUP": f"{group}-events",
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "publisher.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
            "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "POSTD_KAFKA_HEARTBEAT_MS": "300",
            "POSTD_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        }
    )
    producer = EventProducer(settings.common.kafka)
    runtime = Runtime(
        settings=settings.common,
        pool=pg_pool,
        producer=producer,
        signer=signer_for("publisher"),
        verifier=None,
    )
    app = assemble(runtime, settings)
    server = create_server(
        service="publisher",
        address="127.0.0.1:0",
        register=[register(app.servicer)],
        service_names=[SERVICE],
        verifier=verifier_for("publisher"),
        policy=access_policy(),
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in app.consumers]
    await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in app.consumers)), 30)
    gateway = open_channel(address, signer=signer_for("gateway"), audience="publisher")
    running = RunningPublisher(address, PublisherServiceStub(gateway), stop, tasks, [gateway])
    try:
        yield running
    finally:
        stop.set()
        await server.stop(0)
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await gateway.close()
        for channel in runtime.channels.values():
            await channel.close()
        await app.outlet.close()
        await producer.close()
