"""Fixtures for health's tests: a fresh schema per test on the session's PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from postd_common import db
from postd_common.bootstrap import Runtime
from postd_common.devinfra import free_port
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import ConsumerLoop, EventProducer, KafkaSettings
from postd_common.testing import TestInfra, unique
from postd_health.adapters.postgres import PostgresStore
from postd_health.app import (
    MIGRATIONS,
    HealthService,
    Overrides,
    TopicNames,
    assemble,
    consumer_loops,
)
from postd_health.config import Settings, load_settings

SUPPORT = Path(__file__).parent / "support"


def load_support(name: str) -> ModuleType:
    """Import ``tests/support/<name>.py`` under a name no other service's tests use."""
    module_name = f"postd_health_test_support_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SUPPORT / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def schema(pg_dsn: str) -> str:
    name = unique("health").replace("-", "_")
    await db.migrate_dsn(pg_dsn, name, MIGRATIONS)
    return name


@pytest.fixture
def store(pg_pool: asyncpg.Pool, schema: str) -> PostgresStore:
    return PostgresStore(pg_pool, schema=schema)


# --------------------------------------------------------------------------- harness


class MutableClock:
    """Health's clock in a test: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@dataclass
class Sandbox:
    url: str
    http: aiohttp.ClientSession

    async def control(self, method: str, path: str, **kw: Any) -> Any:
        async with self.http.request(method, self.url + path, **kw) as resp:
            body = await resp.json()
            assert resp.status < 300, body
            return body

    async def fault(self, **fault: Any) -> Any:
        return await self.control("POST", "/_sandbox/faults", json=fault)

    async def advance(self, delta: timedelta) -> None:
        await self.control(
            "POST", "/_sandbox/clock", json={"advance_seconds": delta.total_seconds()}
        )

    async def tokens(self, platform: str) -> list[dict[str, Any]]:
        body = await self.control("GET", "/_sandbox/tokens", params={"platform": platform})
        found: list[dict[str, Any]] = body["tokens"]
        return found

    async def slack_messages(self, hook: str = "") -> list[dict[str, Any]]:
        body = await self.control(
            "GET", "/_sandbox/slack/messages", params={"hook": hook} if hook else {}
        )
        found: list[dict[str, Any]] = body["messages"]
        return found


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sandbox(http: aiohttp.ClientSession) -> AsyncIterator[Sandbox]:
    from postd_sandbox.app import create_app
    from postd_sandbox.config import load_settings as sandbox_settings

    port = free_port()
    settings = dataclasses.replace(
        sandbox_settings({}),
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        timeout_hang_seconds=3.0,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Sandbox(f"http://127.0.0.1:{port}", http)
    await runner.cleanup()


@pytest.fixture
def topic_names(make_topics: Callable[..., list[str]]) -> TopicNames:
    events, results, webhooks, alerts = make_topics(
        "connection.events", "publish.results", "webhook.events", "alerts"
    )
    return TopicNames(
        alerts=alerts, publish_results=results, webhook_events=webhooks, connection_events=events
    )


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[EventProducer]:
    made = EventProducer(kafka_settings)
    yield made
    await made.close()


def health_env(infra: TestInfra, identity_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "POSTD_ENV": "test",
        "DATABASE_URL": infra.dsn,
        "KAFKA_BOOTSTRAP": infra.bootstrap,
        "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "POSTD_KAFKA_HEARTBEAT_MS": "300",
        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "health.key"),
        "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        "POSTD_PUBLIC_URL": "https://app.postd.test",
        "POSTD_HEALTH_CONSUMER_GROUP": unique("health"),
        **extra,
    }


@dataclass
class Replica:
    """One health replica: its own runtime (channels), the same schema and clock."""

    service: HealthService
    runtime: Runtime
    settings: Settings
    overrides: Overrides
    loops: list[ConsumerLoop[Any]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_consumers(self, producer: EventProducer, *names: str) -> None:
        """Run some of the consumers (by topic attribute name) until the test ends."""
        loops = consumer_loops(self.service, self.settings, self.overrides, producer)
        wanted = {getattr(self.overrides.topics, n) for n in names}
        for loop_ in loops:
            if set(loop_._topics) & wanted:
                self.loops.append(loop_)
                self.tasks.append(asyncio.create_task(loop_.run(self.stop)))
        await asyncio.wait_for(asyncio.gather(*(loop_.assigned.wait() for loop_ in self.loops)), 30)

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        for channel in self.runtime.channels.values():
            await channel.close()


@pytest.fixture
async def make_replica(
    infra: TestInfra,
    identity_dir: Path,
    pg_pool: asyncpg.Pool,
    schema: str,
    clock: MutableClock,
    topic_names: TopicNames,
    producer: EventProducer,
    signer_for: Callable[[str], IdentitySigner],
    http: aiohttp.ClientSession,
) -> AsyncIterator[Callable[..., Replica]]:
    made: list[Replica] = []

    def make(
        connectors_addr: str = "127.0.0.1:1", publisher_addr: str = "127.0.0.1:1", **env: str
    ) -> Replica:
        settings = load_settings(
            health_env(
                infra,
                identity_dir,
                POSTD_CONNECTORS_ADDR=connectors_addr,
                POSTD_PUBLISHER_ADDR=publisher_addr,
                **env,
            )
        )
        runtime = Runtime(
            settings=settings.common,
            pool=pg_pool,
            producer=producer,
            signer=signer_for("health"),
            verifier=None,
        )
        over = Overrides(
            clock=clock,
            topics=topic_names,
            schema=schema,
            worker_id=unique("replica"),
            allow_http_slack=True,
        )
        replica = Replica(assemble(runtime, settings, over, http), runtime, settings, over)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.close()


@pytest.fixture
async def standin(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    clock: MutableClock,
    producer: EventProducer,
    topic_names: TopicNames,
    verifier_for: Callable[[str], IdentityVerifier],
) -> AsyncIterator[tuple[Any, str]]:
    """The TikTok connectors stand-in on a real gRPC port: (servicer, address)."""
    module = load_support("connectors_standin")
    servicer = module.ConnectorsStandIn(
        sandbox.url,
        http,
        clock=clock,
        producer=producer,
        events_topic=topic_names.connection_events,
    )
    server = await module.serve(servicer, verifier_for("connectors"))
    yield servicer, f"127.0.0.1:{server.port}"
    await server.stop(0)
