"""The publisher on real parts: PostgreSQL, the Kafka-protocol broker, the real
connectors service (in-process, real gRPC with service identities) talking to the
platform sandbox over real HTTP, and the real vault behind connectors.

Each test gets its own publisher schema, topics, consumer groups, tenant and
sandbox, so tests do not see each other's jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as cpb
from postd.connectors.v1.connectors_pb2_grpc import ConnectorsServiceStub
from postd.publisher.v1 import publisher_pb2 as pb
from postd.publisher.v1.analytics_pb2_grpc import AnalyticsServiceStub
from postd.publisher.v1.publisher_pb2_grpc import PublisherServiceStub
from postd_common import db
from postd_common.bootstrap import Runtime
from postd_common.devinfra import free_port
from postd_common.grpcutil import GrpcServer, create_server, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer
from postd_common.testing import TestInfra, unique
from postd_connectors import convert
from postd_connectors.adapters.postgres import OutboxRelay as ConnectorsOutbox
from postd_connectors.adapters.postgres import PostgresConnections
from postd_connectors.adapters.vault import VaultTokenStore
from postd_connectors.app import PACKAGE as CONNECTORS_PACKAGE
from postd_connectors.app import build_service
from postd_connectors.config import load_settings as connectors_settings
from postd_connectors.servicer import POLICY as CONNECTORS_POLICY
from postd_connectors.servicer import SERVICE as CONNECTORS_SERVICE
from postd_connectors.servicer import ConnectorsServicer
from postd_connectors.servicer import register as register_connectors
from postd_connectors.testing import RunningSandbox, start_sandbox
from postd_publisher.analytics_servicer import ANALYTICS_SERVICE, register_analytics
from postd_publisher.app import MIGRATIONS, Publisher, assemble
from postd_publisher.config import Settings, load_settings
from postd_publisher.servicer import SERVICE, access_policy, register

REDIRECT_URI = "https://app.postd.test/oauth/callback"
COFFEE_PAGE = "200000000000001"
TEA_PAGE = "200000000000002"
ROOT = Path(__file__).resolve().parents[4]

TERMINAL: set[Any] = {pb.JOB_STATE_PUBLISHED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def schema_name(prefix: str) -> str:
    return unique(prefix).replace("-", "_")


@dataclass
class Topics:
    jobs: str
    results: str
    dlq: str
    events: str
    analytics: str


@pytest.fixture
def topics(make_topics: Callable[..., list[str]]) -> Topics:
    jobs, results, dlq, events, analytics = make_topics(
        "publish.jobs",
        "publish.results",
        "publish.dlq",
        "connection.events",
        "analytics.jobs",
        partitions=3,
    )
    return Topics(jobs, results, dlq, events, analytics)


# --------------------------------------------------------------------------- connectors


@pytest.fixture(scope="session")
async def connectors_schema(infra: TestInfra) -> str:
    await db.migrate_dsn(infra.dsn, "connectors", CONNECTORS_PACKAGE / "migrations")
    return "connectors"


@dataclass
class VaultHandle:
    address: str


@pytest.fixture(scope="session")
async def vault(
    infra: TestInfra,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    verifier_for: Callable[[str], IdentityVerifier],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[VaultHandle]:
    """The real vault servicer in-process (own schema, local keyring)."""
    from postd_vault.testing import running_vault

    async with running_vault(
        dsn=infra.dsn,
        pool=pg_pool,
        identity_dir=identity_dir,
        verifier=verifier_for("vault"),
        keyring=tmp_path_factory.mktemp("vault") / "keyring.json",
        schema=schema_name("vault_for_publisher"),
    ) as address:
        yield VaultHandle(address)


@dataclass
class Platforms:
    """The connectors service and the sandbox behind it, as a test drives them."""

    address: str
    sandbox: RunningSandbox
    http: aiohttp.ClientSession
    stub: ConnectorsServiceStub
    health: ConnectorsServiceStub

    async def control(self, method: str, path: str, **kw: Any) -> Any:
        async with self.http.request(method, self.sandbox.url + path, **kw) as resp:
            body = await resp.json()
            assert resp.status < 300, body
            return body

    async def fault(self, **fault: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("POST", "/_sandbox/faults", json=fault)
        return result

    async def clear_faults(self) -> None:
        await self.control("DELETE", "/_sandbox/faults")

    async def posts(self, **filters: str) -> list[dict[str, Any]]:
        body = await self.control("GET", "/_sandbox/posts", params=filters)
        found: list[dict[str, Any]] = body["posts"]
        return found

    async def connect(
        self,
        tenant_id: str,
        platform: str = "facebook",
        capabilities: tuple[str, ...] = ("publish",),
    ) -> dict[str, str]:
        """OAuth through connectors and the sandbox; returns external id → connection id."""
        app = {"facebook": "meta", "instagram": "meta"}.get(platform, platform)
        await self.control("POST", "/_sandbox/consent", json={"platform": app})
        start = await self.stub.StartAuth(
            cpb.StartAuthRequest(
                tenant_id=tenant_id,
                user_id="u_1",
                platform=platform,
                capabilities=list(capabilities),
                redirect_uri=REDIRECT_URI,
            )
        )
        async with self.http.get(start.authorize_url, allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            location = resp.headers["Location"]
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        done = await self.stub.CompleteAuth(
            cpb.CompleteAuthRequest(
                tenant_id=tenant_id,
                platform=platform,
                state=params.get("state", ""),
                code=params.get("code", ""),
                params=params,
            )
        )
        return {c.connection.external_id: c.connection.id for c in done.connections}


@pytest.fixture
def connectors_env() -> dict[str, str]:
    """Connectors settings a test module may add (override this fixture there)."""
    return {}


@pytest.fixture
async def platforms(
    connectors_env: dict[str, str],
    infra: TestInfra,
    connectors_schema: str,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    vault: VaultHandle,
    topics: Topics,
) -> AsyncIterator[Platforms]:
    sandbox = await start_sandbox()
    events_topic = topics.events
    settings = connectors_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_SANDBOX_URL": sandbox.url,
            "POSTD_CONNECTORS_HTTP_TIMEOUT": "2",
            "POSTD_CONNECTORS_POLL_INTERVAL": "0.05",
            "POSTD_CONNECTORS_POLL_BUDGET": "5",
            "POSTD_CONNECTION_EVENTS_TOPIC": events_topic,
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "connectors.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
            **connectors_env,
        }
    )
    # Usage blocks are per platform app: one test's must not hold up the next.
    await pg_pool.execute("DELETE FROM connectors.platform_usage")
    producer = EventProducer(infra.kafka("connectors"))
    relay = ConnectorsOutbox(
        pg_pool, lambda t, v, k, h: producer.produce(t, v, key=k, headers=h), idle_seconds=0.05
    )
    repo = PostgresConnections(pg_pool, convert.event_encoder(events_topic), relay.wake.set)
    vault_channel = open_channel(vault.address, signer=signer_for("connectors"), audience="vault")
    tokens = VaultTokenStore(vault_channel)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.http_timeout))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    service = build_service(settings, repo=repo, tokens=tokens, session=session)
    server = create_server(
        service="connectors",
        address="127.0.0.1:0",
        register=[register_connectors(ConnectorsServicer(service))],
        service_names=[CONNECTORS_SERVICE],
        verifier=verifier_for("connectors"),
        policy=CONNECTORS_POLICY,
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    gateway = open_channel(address, signer=signer_for("gateway"), audience="connectors")
    health = open_channel(address, signer=signer_for("health"), audience="connectors")
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    try:
        yield Platforms(
            address, sandbox, http, ConnectorsServiceStub(gateway), ConnectorsServiceStub(health)
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay_task, 5)
        await gateway.close()
        await health.close()
        await vault_channel.close()
        await server.stop(0)
        await session.close()
        await http.close()
        await producer.close()
        await sandbox.close()


# --------------------------------------------------------------------------- publisher


@pytest.fixture
async def schema(infra: TestInfra) -> str:
    name = schema_name("publisher_t")
    await db.migrate_dsn(infra.dsn, name, MIGRATIONS)
    return name


def publisher_env(
    infra_dsn: str,
    bootstrap: str,
    connectors: str,
    schema: str,
    topics: Topics,
    identity_dir: Path,
    group: str,
    **extra: str,
) -> dict[str, str]:
    return {
        "POSTD_ENV": "test",
        "DATABASE_URL": infra_dsn,
        "KAFKA_BOOTSTRAP": bootstrap,
        "POSTD_CONNECTORS_ADDR": connectors,
        "POSTD_PUBLISHER_SCHEMA": schema,
        "POSTD_PUBLISH_JOBS_TOPIC": topics.jobs,
        "POSTD_PUBLISH_RESULTS_TOPIC": topics.results,
        "POSTD_PUBLISH_DLQ_TOPIC": topics.dlq,
        "POSTD_CONNECTION_EVENTS_TOPIC": topics.events,
        "POSTD_ANALYTICS_JOBS_TOPIC": topics.analytics,
        "POSTD_PUBLISHER_WORKER_GROUP": f"{group}-workers",
        "POSTD_PUBLISHER_EVENTS_GROUP": f"{group}-events",
        "POSTD_PUBLISHER_ANALYTICS_GROUP": f"{group}-analytics",
        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "publisher.key"),
        "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "POSTD_KAFKA_HEARTBEAT_MS": "300",
        "POSTD_KAFKA_METADATA_REFRESH_MS": "500",
        "POSTD_KAFKA_SEND_TIMEOUT_SECONDS": "3",
        "POSTD_PUBLISH_RETRY_BASE_SECONDS": "0.3",
        "POSTD_PUBLISH_RETRY_MAX_SECONDS": "3",
        "POSTD_PUBLISH_TIMEOUT_SECONDS": "4",
        "POSTD_PUBLISH_LEASE_SECONDS": "6",
        "POSTD_DISPATCH_LEASE_SECONDS": "4",
        "POSTD_DISPATCH_POLL_SECONDS": "0.05",
        "POSTD_RECONCILE_SECONDS": "0.2",
        "POSTD_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        **extra,
    }


@dataclass
class Running:
    """One publisher assembled in-process, serving gRPC, its loops running."""

    settings: Settings
    app: Publisher
    server: GrpcServer
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]
    channels: list[grpc.aio.Channel]
    producer: EventProducer

    async def close(self) -> None:
        self.stop.set()
        await self.server.stop(0)
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        for channel in self.channels:
            await channel.close()
        await self.app.outlet.close()
        await self.producer.close()


@dataclass
class Harness:
    """A test's view: stubs as gateway and health, the sandbox, the database."""

    tenant: str
    platforms: Platforms
    pool: asyncpg.Pool
    schema: str
    topics: Topics
    env: dict[str, str]
    start: Callable[..., Awaitable[Running]]
    running: list[Running] = field(default_factory=list)
    gateway: PublisherServiceStub | None = None
    health: PublisherServiceStub | None = None
    analytics: AnalyticsServiceStub | None = None

    @property
    def api(self) -> PublisherServiceStub:
        assert self.gateway is not None, "start a publisher with api role first"
        return self.gateway

    async def create(
        self,
        key: str,
        targets: list[str],
        text: str,
        *,
        tenant: str | None = None,
        **kw: Any,
    ) -> pb.CreatePostResponse:
        request = pb.CreatePostRequest(
            tenant_id=tenant or self.tenant,
            idempotency_key=key,
            content=common_pb2.PostContent(text=text),
            targets=[pb.PostTarget(connection_id=c) for c in targets],
            created_by="user:u_1",
            **kw,
        )
        reply: pb.CreatePostResponse = await self.api.CreatePost(request)
        return reply

    async def job(self, job_id: str, tenant: str | None = None) -> pb.Job:
        reply = await self.api.GetJob(
            pb.GetJobRequest(tenant_id=tenant or self.tenant, job_id=job_id)
        )
        job: pb.Job = reply.job
        return job

    async def post(self, post_id: str, tenant: str | None = None) -> pb.Post:
        reply = await self.api.GetPost(
            pb.GetPostRequest(tenant_id=tenant or self.tenant, post_id=post_id)
        )
        post: pb.Post = reply.post
        return post

    async def wait_job(
        self,
        job_id: str,
        states: set[Any] | None = None,
        *,
        tenant: str | None = None,
        within: float = 45.0,
    ) -> pb.Job:
        """Poll until the job is in one of ``states`` (default: terminal)."""
        wanted: set[Any] = states or TERMINAL
        deadline = time.monotonic() + within
        job = await self.job(job_id, tenant)
        while job.state not in wanted:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job still {pb.JobState.Name(job.state)} ({job.state_reason}); "
                    f"wanted {[pb.JobState.Name(s) for s in wanted]}"
                )
            await asyncio.sleep(0.1)
            job = await self.job(job_id, tenant)
        return job

    async def wait_for(
        self, check: Callable[[], Awaitable[bool]], what: str, within: float = 45.0
    ) -> None:
        deadline = time.monotonic() + within
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            query.replace("publisher.", f"{self.schema}."), *args
        )
        return rows


@pytest.fixture
async def harness(
    infra: TestInfra,
    platforms: Platforms,
    pg_pool: asyncpg.Pool,
    schema: str,
    topics: Topics,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    tenant_id: str,
) -> AsyncIterator[Harness]:
    group = unique("pub")
    env = publisher_env(
        infra.dsn, infra.bootstrap, platforms.address, schema, topics, identity_dir, group
    )

    async def start(roles: str = "api,dispatcher,worker", **extra: str) -> Running:
        settings = load_settings({**env, "POSTD_PUBLISHER_ROLES": roles, **extra})
        producer = EventProducer(settings.common.kafka)
        runtime = Runtime(
            settings=settings.common,
            pool=pg_pool,
            producer=producer,
            signer=signer_for("publisher"),
            verifier=verifier_for("publisher"),
        )
        app = assemble(runtime, settings)
        server = create_server(
            service="publisher",
            address="127.0.0.1:0",
            register=[register(app.servicer), register_analytics(app.analytics)],
            service_names=[SERVICE, ANALYTICS_SERVICE],
            verifier=verifier_for("publisher"),
            policy=access_policy(),
        )
        await server.start()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in app.consumers]
        tasks += [asyncio.create_task(t(stop)) for t in app.tasks]
        for consumer in app.consumers:
            await asyncio.wait_for(consumer.assigned.wait(), 30)
        address = f"127.0.0.1:{server.port}"
        gateway = open_channel(address, signer=signer_for("gateway"), audience="publisher")
        health = open_channel(address, signer=signer_for("health"), audience="publisher")
        running = Running(
            settings,
            app,
            server,
            stop,
            tasks,
            [gateway, health, *runtime.channels.values()],
            producer,
        )
        handle.running.append(running)
        if handle.gateway is None:
            handle.gateway = PublisherServiceStub(gateway)
            handle.health = PublisherServiceStub(health)
            handle.analytics = AnalyticsServiceStub(gateway)
        return running

    handle = Harness(tenant_id, platforms, pg_pool, schema, topics, env, start)
    try:
        yield handle
    finally:
        for running in handle.running:
            await running.close()


@pytest.fixture
async def pages(harness: Harness) -> dict[str, str]:
    """The tenant's two Facebook Pages, connected through connectors."""
    return await harness.platforms.connect(harness.tenant)


def read_topic(
    bootstrap: str, topic: str, *, until: Callable[[list[Any]], bool], within: float = 30.0
) -> list[Any]:
    """Every message on ``topic`` from the start, read until ``until(messages)`` holds
    (blocks; run it in a thread)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 300,
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while not until(found) and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.2):
                if message.error() is None:
                    found.append(message)
    finally:
        consumer.close()
    return found


# --------------------------------------------------------------------------- subprocess


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``python -m postd_publisher`` as a child process with a given environment."""
    started: list[WorkerProcess] = []

    def spawn(env: dict[str, str]) -> WorkerProcess:
        log = tmp_path / f"publisher-{len(started)}.log"
        full = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "postd_publisher"],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        handle = WorkerProcess(process, log)
        started.append(handle)
        return handle

    yield spawn
    for handle in started:
        handle.kill()
