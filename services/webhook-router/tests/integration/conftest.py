"""The webhook router as it runs: real PostgreSQL, the real broker, the real vault over
gRPC, the sandbox as the platforms, and an aiohttp front using the passthrough
handler — everything over real sockets.

Connectors is stood in for by a small real gRPC server implementing only
ResolveAccount (from a table the tests fill), until the connectors service lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from confluent_kafka import Consumer

from postd.connectors.v1 import connectors_pb2, connectors_pb2_grpc
from postd.webhook_router.v1 import webhook_router_pb2_grpc
from postd_common import db
from postd_common.bootstrap import Runtime, serve
from postd_common.devinfra import free_port
from postd_common.grpcutil import AccessPolicy, create_server, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer, KafkaSettings
from postd_common.testing import TestInfra, unique
from postd_sandbox.app import create_app as sandbox_app
from postd_sandbox.config import load_settings as sandbox_settings
from postd_webhook_router.app import SPEC, Overrides, TopicNames, build
from postd_webhook_router.config import load_settings
from postd_webhook_router.http_passthrough import WebhookIngest, webhook_passthrough

ROUTER_MIGRATIONS = Path(SPEC.migrations or "")


class FakeConnectors(connectors_pb2_grpc.ConnectorsServiceServicer):
    """ResolveAccount only, from ``accounts`` (until the connectors service lands)."""

    def __init__(self) -> None:
        self.accounts: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.calls = 0

    async def ResolveAccount(
        self, request: connectors_pb2.ResolveAccountRequest, context: grpc.aio.ServicerContext
    ) -> connectors_pb2.ResolveAccountResponse:
        self.calls += 1
        matches = self.accounts.get((request.platform, request.external_account_id), [])
        return connectors_pb2.ResolveAccountResponse(
            matches=[connectors_pb2.AccountMatch(tenant_id=t, connection_id=c) for t, c in matches]
        )


@dataclasses.dataclass
class Stack:
    front_url: str
    sandbox: TestServer
    sandbox_url: str
    stub: webhook_router_pb2_grpc.WebhookRouterServiceStub
    connectors: FakeConnectors
    topics: TopicNames
    kafka: KafkaSettings
    settings: Any
    pool: Any
    producer: EventProducer

    def url(self, platform: str, key: str = "") -> str:
        return f"{self.front_url}/webhooks/{platform}" + (f"/{key}" if key else "")


async def _start_vault(
    infra: TestInfra,
    identity_dir: Path,
    verifier: IdentityVerifier,
    tmp: Path,
) -> tuple[str, Callable[[], Any]]:
    from postd_vault.testing import running_vault

    pool = await db.create_pool(infra.dsn, max_size=5)
    stack = contextlib.AsyncExitStack()
    addr = await stack.enter_async_context(
        running_vault(
            dsn=infra.dsn,
            pool=pool,
            identity_dir=identity_dir,
            verifier=verifier,
            keyring=tmp / "keyring.json",
            schema=unique("vault_wr").replace("-", "_"),
        )
    )

    async def close() -> None:
        await stack.aclose()
        await pool.close()

    return addr, close


@pytest.fixture(scope="module")
async def stack(
    infra: TestInfra,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    from postd_common.kafka import TopicSpec, ensure_topics

    tmp = tmp_path_factory.mktemp("router")
    kafka = infra.kafka("webhook-router-tests")
    names = TopicNames(
        webhook_events=unique("webhook.events"),
        webhook_dlq=unique("webhook.dlq"),
        alerts=unique("alerts"),
        publish_results=unique("publish.results"),
        connection_events=unique("connection.events"),
    )
    await asyncio.to_thread(
        ensure_topics, kafka, [TopicSpec(n, 3) for n in dataclasses.astuple(names)]
    )
    await db.migrate_dsn(infra.dsn, "webhooks", ROUTER_MIGRATIONS)

    # The sandbox: the platforms' side.
    sandbox = TestServer(sandbox_app(sandbox_settings({})))
    await sandbox.start_server()
    sandbox_url = str(sandbox.make_url("")).rstrip("/")

    # Connectors' ResolveAccount.
    fake = FakeConnectors()  # type: ignore[abstract]
    connectors_addr = f"127.0.0.1:{free_port()}"
    connectors_server = create_server(
        service="connectors",
        address=connectors_addr,
        register=[lambda s: connectors_pb2_grpc.add_ConnectorsServiceServicer_to_server(fake, s)],
        service_names=[],
        verifier=verifier_for("connectors"),
        policy=AccessPolicy(default=frozenset({"webhook-router"})),
    )
    await connectors_server.start()

    vault_addr, close_vault = await _start_vault(infra, identity_dir, verifier_for("vault"), tmp)

    router_addr = f"127.0.0.1:{free_port()}"
    settings = load_settings(
        {
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_ENV": "test",
            "POSTD_GRPC_LISTEN": router_addr,
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "webhook-router.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
            "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "POSTD_KAFKA_HEARTBEAT_MS": "300",
            "POSTD_CONNECTORS_ADDR": connectors_addr,
            "POSTD_VAULT_ADDR": vault_addr,
            "POSTD_GOOGLE_JWKS_URL": f"{sandbox_url}/google/oauth2/v3/certs",
            "POSTD_GOOGLE_PUBSUB_AUDIENCE": "https://hooks.postd.test/webhooks/google",
            "POSTD_WEBHOOKS_ALLOW_LOOPBACK": "1",
            "POSTD_WEBHOOKS_POLL_SECONDS": "0.2",
            "POSTD_WEBHOOKS_PROCESS_RETRY_SECONDS": "0.05",
            "POSTD_WEBHOOKS_PROCESS_MAX_ATTEMPTS": "3",
            "POSTD_WEBHOOKS_RESOLVE_CACHE_SECONDS": "0",
            "POSTD_OUTBOUND_RETRY_BASE_SECONDS": "0.5",
            "POSTD_OUTBOUND_POLL_SECONDS": "0.1",
            "POSTD_OUTBOUND_TIMEOUT_SECONDS": "3",
            "POSTD_WEBHOOKS_CONSUMER_GROUP": unique("webhook-router"),
        }
    )
    pool = await db.create_pool(infra.dsn, max_size=10, application_name="webhook-router-tests")
    producer = EventProducer(settings.common.kafka)
    runtime = Runtime(
        settings.common,
        pool,
        producer,
        signer_for("webhook-router"),
        verifier_for("webhook-router"),
    )
    parts = await build(runtime, settings, Overrides(topics=names))
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(runtime, SPEC, parts, stop))

    channel = open_channel(router_addr, signer=signer_for("gateway"), audience="webhook-router")
    stub = webhook_router_pb2_grpc.WebhookRouterServiceStub(channel)
    ingest = WebhookIngest(stub)
    front_app = web.Application()
    handler = webhook_passthrough(ingest, max_body_bytes=settings.inbound.max_body_bytes)
    front_app.router.add_route("*", "/webhooks/{platform}", handler)
    front_app.router.add_route("*", "/webhooks/{platform}/{key}", handler)
    front = TestServer(front_app)
    await front.start_server()
    try:
        yield Stack(
            front_url=str(front.make_url("")).rstrip("/"),
            sandbox=sandbox,
            sandbox_url=sandbox_url,
            stub=stub,
            connectors=fake,
            topics=names,
            kafka=kafka,
            settings=settings,
            pool=pool,
            producer=producer,
        )
    finally:
        await front.close()
        await ingest.close()
        await channel.close()
        stop.set()
        await serving
        for channel_ in runtime.channels.values():
            await channel_.close()
        await producer.close()
        await pool.close()
        await close_vault()
        await connectors_server.stop(1)
        await sandbox.close()


class TopicReader:
    """Reads a topic from the beginning in a thread (a consumer of the router's output)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._consumer = Consumer(
            {
                **kafka.base(),
                "group.id": unique("reader"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": kafka.session_timeout_ms,
                "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
            }
        )
        self._consumer.subscribe([topic])
        self.messages: list[Any] = []
        self._lock = threading.Lock()

    def _poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self._consumer.consume(100, 0.2)
            good = [m for m in batch if m.error() is None]
            with self._lock:
                self.messages.extend(good)

    async def until(
        self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.to_thread(self._poll, 0.5)
            if predicate(self.messages):
                return self.messages
        return self.messages

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


@pytest.fixture
async def reader_factory(stack: Stack) -> AsyncIterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        reader = TopicReader(stack.kafka, topic)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        await asyncio.to_thread(reader.close)


@contextlib.asynccontextmanager
async def dedupe_key_held(dsn: str, dedupe_key: str) -> AsyncIterator[asyncpg.Connection]:
    """Another transaction that inserted a row with ``dedupe_key`` and stays open, so a
    batch storing the same key waits on its lock. Yields that transaction's connection
    (to end the waiting batch's backend with ``pg_terminate_backend``); closing it on
    leaving rolls the transaction back."""
    blocker = await asyncpg.connect(dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute(
            "INSERT INTO webhooks.inbound_events (id, platform, http_method, verdict, "
            "dedupe_key, body_sha256, body_size, received_at, state) "
            "VALUES ($1, 'tiktok', 'POST', 'accepted', $2, 'x', 0, now(), 'skipped')",
            uuid.uuid4(),
            dedupe_key,
        )
        yield blocker
    finally:
        await blocker.close()


async def waiting_inserts(pool: asyncpg.Pool, count: int = 1) -> list[int]:
    """PIDs of the backends blocked on a lock while storing deliveries (at least
    ``count`` of them, waited for up to 5 s)."""
    for _ in range(250):
        pids = [
            r["pid"]
            for r in await pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%INSERT INTO webhooks.inbound_events%'"
            )
        ]
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError("no insert is waiting on the lock")
