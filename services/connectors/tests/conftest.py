"""Fixtures: the connectors service on real PostgreSQL, the real broker, the platform
sandbox over real HTTP, and its gRPC servicer on a real port with service identities.

The vault: when ``postd_vault`` is importable its real servicer runs in-process (on
its own schema, a fresh local keyring, real gRPC with service identities) and
connectors reach it through its contract; otherwise an in-memory TokenStore with the
vault's semantics stands in (``postd_connectors.testing``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import grpc
import pytest
from aiohttp import web

from postd.connectors.v1 import connectors_pb2 as pb
from postd.connectors.v1 import connectors_pb2_grpc
from postd_common import db
from postd_common.devinfra import free_port
from postd_common.grpcutil import create_server, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer, KafkaSettings, TopicSpec, ensure_topics
from postd_common.testing import TestInfra, unique
from postd_connectors import convert
from postd_connectors.adapters.postgres import OutboxRelay, PostgresConnections
from postd_connectors.adapters.vault import VaultTokenStore
from postd_connectors.app import PACKAGE, SPEC, build_service
from postd_connectors.config import Settings, load_settings
from postd_connectors.domain.service import ConnectorsService
from postd_connectors.servicer import POLICY, SERVICE, ConnectorsServicer, register
from postd_connectors.testing import InMemoryTokenStore, RunningSandbox, start_sandbox

REDIRECT_URI = "https://app.postd.test/oauth/callback"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real media files made with ffmpeg: the pre-flight measures these."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed (make test installs Debian's ffmpeg)")
    out = tmp_path_factory.mktemp("media")
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=red:s=1080x1080", "-frames:v", "1", str(out / "square.jpg")
    )
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=blue:s=1080x1350", "-frames:v", "1", str(out / "portrait.jpg")
    )
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=green:s=1080x1080", "-frames:v", "1", str(out / "square.png")
    )
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=green:s=1080x1080", "-frames:v", "1", "-c:v", "libwebp",
        str(out / "photo.webp"),
    )  # fmt: skip
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=320x568:rate=10", "-t", "4", "-c:v", "libx264",
        "-pix_fmt", "yuv420p", str(out / "clip.mp4"),
    )  # fmt: skip
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-t", "70", "-c:v", "libx264",
        "-pix_fmt", "yuv420p", str(out / "long.mp4"),
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
async def media_server(media_dir: Path) -> AsyncIterator[str]:
    """Serves media_dir on a loopback port (allowed in tests as a development origin)."""
    app = web.Application()
    app.router.add_static("/media/", media_dir)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(scope="session")
async def migrated(infra: TestInfra) -> str:
    await db.migrate_dsn(infra.dsn, "connectors", PACKAGE / "migrations")
    return infra.dsn


@pytest.fixture(scope="session")
async def connectors_pool(migrated: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool configured as the service's own (SPEC): no session reset on release."""
    pool = await db.create_pool(
        migrated, min_size=1, max_size=10, reset_session=SPEC.pool_session_reset
    )
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def events_topic(kafka_settings: KafkaSettings) -> str:
    name = unique("connection.events")
    ensure_topics(kafka_settings, [TopicSpec(name, 3)])
    return name


@pytest.fixture(scope="session")
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[EventProducer]:
    made = EventProducer(kafka_settings)
    yield made
    await made.close()


@dataclass
class VaultHandle:
    """The real vault servicer, in-process, on its own schema."""

    address: str
    schema: str
    server: Any

    async def live_bundles(self, pool: asyncpg.Pool, tenant_id: str) -> int:
        return int(
            await pool.fetchval(
                f"SELECT count(*) FROM {self.schema}.secrets "
                "WHERE tenant_id = $1 AND scope = 'token_bundle' AND state = 'live'",
                tenant_id,
            )
        )


@pytest.fixture(scope="session")
async def vault(
    infra: TestInfra,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    verifier_for: Callable[[str], IdentityVerifier],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[VaultHandle | None]:
    try:
        from postd_vault.app import MIGRATIONS, build
        from postd_vault.config import load_settings as vault_settings
    except ImportError:
        yield None
        return
    from postd_common.bootstrap import Runtime

    schema = unique("vault_for_connectors").replace("-", "_")
    await db.migrate_dsn(infra.dsn, schema, MIGRATIONS)
    keyring = tmp_path_factory.mktemp("vault") / "keyring.json"
    settings = vault_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "POSTD_VAULT_KEYRING_FILE": str(keyring),
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "vault.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        }
    )
    runtime = Runtime(
        settings=settings.common, pool=pg_pool, producer=None, signer=None, verifier=None
    )
    parts = await build(runtime, settings, schema=schema)
    server = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=parts.register,
        service_names=parts.service_names,
        verifier=verifier_for("vault"),
        policy=parts.policy,
    )
    await server.start()
    yield VaultHandle(f"127.0.0.1:{server.port}", schema, server)
    await server.stop(0)
    for close in parts.on_close:
        await close()


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Sandbox settings for a test module (override the fixture to change them)."""
    return {}


@pytest.fixture
async def sandbox(sandbox_overrides: dict[str, Any]) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox(**sandbox_overrides)
    yield running
    await running.close()


@dataclass
class Harness:
    service: ConnectorsService
    settings: Settings
    sandbox: RunningSandbox
    http: aiohttp.ClientSession
    tokens: Any
    repo: PostgresConnections
    relay: OutboxRelay
    pool: asyncpg.Pool
    vault: VaultHandle | None
    stubs: dict[str, connectors_pb2_grpc.ConnectorsServiceStub] = field(default_factory=dict)

    async def stored_bundles(self, tenant_id: str) -> int:
        """Token bundles the vault holds for a tenant."""
        if self.vault is not None:
            return await self.vault.live_bundles(self.pool, tenant_id)
        return sum(1 for (t, _) in self.tokens.bundles if t == tenant_id)

    def stub(self, caller: str = "gateway") -> connectors_pb2_grpc.ConnectorsServiceStub:
        return self.stubs[caller]

    # -- sandbox control ----------------------------------------------------------

    async def control(self, method: str, path: str, **kw: Any) -> Any:
        async with self.http.request(method, self.sandbox.url + path, **kw) as resp:
            body = await resp.json()
            assert resp.status < 300, body
            return body

    async def fault(self, **fault: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("POST", "/_sandbox/faults", json=fault)
        return result

    async def posts(self, **filters: str) -> list[dict[str, Any]]:
        body = await self.control("GET", "/_sandbox/posts", params=filters)
        found: list[dict[str, Any]] = body["posts"]
        return found

    async def consent(self, **directive: Any) -> None:
        await self.control("POST", "/_sandbox/consent", json=directive)

    # -- the OAuth dance over HTTP ------------------------------------------------

    async def authorize(self, authorize_url: str) -> dict[str, str]:
        """Follow the authorize URL as a browser would (a consent directive decides)."""
        async with self.http.get(authorize_url, allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            location = resp.headers["Location"]
        assert location.startswith(REDIRECT_URI), location
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    async def connect(
        self,
        tenant_id: str,
        platform: str,
        *,
        capabilities: tuple[str, ...] = (),
        user_id: str = "u_1",
        **consent: Any,
    ) -> pb.CompleteAuthResponse:
        app = {"facebook": "meta", "instagram": "meta", "google_business": "google"}.get(
            platform, platform
        )
        await self.consent(platform=app, **consent)
        start = await self.stub().StartAuth(
            pb.StartAuthRequest(
                tenant_id=tenant_id,
                user_id=user_id,
                platform=platform,
                capabilities=list(capabilities),
                redirect_uri=REDIRECT_URI,
            )
        )
        params = await self.authorize(start.authorize_url)
        result: pb.CompleteAuthResponse = await self.stub().CompleteAuth(
            pb.CompleteAuthRequest(
                tenant_id=tenant_id,
                platform=platform,
                state=params.get("state", ""),
                code=params.get("code", ""),
                error=params.get("error", ""),
                error_description=params.get("error_description", ""),
                params=params,
            )
        )
        return result


def make_settings(
    infra: TestInfra, sandbox: RunningSandbox, media: str, topic: str, identity: Path, **env: str
) -> Settings:
    return load_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_SANDBOX_URL": sandbox.url,
            "POSTD_MEDIA_DEV_ALLOWED_ORIGINS": media,
            "POSTD_CONNECTORS_HTTP_TIMEOUT": "2",
            "POSTD_CONNECTORS_POLL_INTERVAL": "0.05",
            "POSTD_CONNECTORS_POLL_BUDGET": "5",
            "POSTD_CONNECTION_EVENTS_TOPIC": topic,
            "POSTD_IDENTITY_KEY_FILE": str(identity / "connectors.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity),
            **env,
        }
    )


@pytest.fixture
def harness_env() -> dict[str, str]:
    """Extra environment for the harness (override in a test module)."""
    return {}


@pytest.fixture
async def harness(
    infra: TestInfra,
    migrated: str,
    pg_pool: asyncpg.Pool,
    sandbox: RunningSandbox,
    media_server: str,
    events_topic: str,
    producer: EventProducer,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    harness_env: dict[str, str],
    vault: VaultHandle | None,
    connectors_pool: asyncpg.Pool,
) -> AsyncIterator[Harness]:
    settings = make_settings(
        infra, sandbox, media_server, events_topic, identity_dir, **harness_env
    )
    # Usage blocks (X-App-Usage) are per platform app: one test's must not pause the next.
    await pg_pool.execute("DELETE FROM connectors.platform_usage")
    relay = OutboxRelay(
        connectors_pool,
        lambda t, v, k, h: producer.produce(t, v, key=k, headers=h),
        idle_seconds=0.05,
    )
    repo = PostgresConnections(connectors_pool, convert.event_encoder(events_topic), relay.wake.set)
    vault_channel = None
    tokens: Any
    if vault is not None:
        vault_channel = open_channel(
            vault.address, signer=signer_for("connectors"), audience="vault"
        )
        tokens = VaultTokenStore(vault_channel)
    else:
        tokens = InMemoryTokenStore()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.http_timeout))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    service = build_service(settings, repo=repo, tokens=tokens, session=session)
    server = create_server(
        service="connectors",
        address="127.0.0.1:0",
        register=[register(ConnectorsServicer(service))],
        service_names=[SERVICE],
        verifier=verifier_for("connectors"),
        policy=POLICY,
    )
    await server.start()
    channels = {
        caller: open_channel(
            f"127.0.0.1:{server.port}", signer=signer_for(caller), audience="connectors"
        )
        for caller in ("gateway", "publisher", "health", "webhook-router", "tests")
    }
    harness = Harness(
        service=service,
        settings=settings,
        sandbox=sandbox,
        http=http,
        tokens=tokens,
        repo=repo,
        relay=relay,
        pool=pg_pool,
        vault=vault,
        stubs={k: connectors_pb2_grpc.ConnectorsServiceStub(c) for k, c in channels.items()},
    )
    try:
        yield harness
    finally:
        for channel in channels.values():
            await channel.close()
        if vault_channel is not None:
            await vault_channel.close()
        await server.stop(0)
        await session.close()
        await http.close()


@pytest.fixture
def rpc_error() -> Callable[..., Any]:
    """``await rpc_error(call)`` -> the AioRpcError it raised (fails if it did not)."""

    async def catch(awaitable: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await awaitable
        return info.value

    return catch


@pytest.fixture
def tenant() -> str:
    return unique("tenant")
