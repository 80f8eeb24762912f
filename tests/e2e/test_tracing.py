"""One trace from ``POST /v1/posts`` to the published result, across every hop.

The whole system runs in this test process, each service built by its own ``build`` /
``create_app`` and served by the shared bootstrap (real gRPC with service identities,
real consumers and background loops) on the session's PostgreSQL and broker, with the
platform sandbox over real HTTP. One TracerProvider is shared by all of them, with an
in-memory exporter. A tenant connects a Facebook Page through the gateway (OAuth), then
posts to it; the test follows the trace:

    gateway HTTP server span (POST /v1/posts)
      └ publisher CreatePost (gRPC server)         the job row keeps this context
          └ publish.jobs process (Kafka consumer)  sent later by the dispatcher
              └ publisher.publish_attempt          the worker: tenant, job, platform
                  └ connectors PublishPost (gRPC server)
                      └ connectors.publish         tenant, job, platform
                          └ POST facebook          the platform call to the sandbox
                  └ publish.results process        health's consumer of the result

and checks that no span, in this trace or any other the flow made (OAuth, vault,
refreshes), holds the API key, a platform token, the OAuth code or state, the app's
client secret or an Authorization value.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from postd_common import db
from postd_common.bootstrap import Runtime, ServiceParts, ServiceSpec, serve
from postd_common.devinfra import free_port
from postd_common.grpcutil import check_health
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer
from postd_common.settings import CommonSettings
from postd_common.telemetry import setup_tracing
from postd_common.testing import TestInfra, unique
from postd_connectors.testing import RunningSandbox, start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PUBLIC_URL = "http://gateway.test"
POST_TEXT = "Fresh beans today: come and taste them"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The process's one TracerProvider (setup_tracing installs it once), with an
    in-memory exporter added: every in-process service's spans end up here. Shut down
    after the module, so later tests' spans are not kept."""
    spans = InMemorySpanExporter()
    setup_tracing("e2e", None, extra_processors=[SimpleSpanProcessor(spans)])
    yield spans
    spans.shutdown()


# --------------------------------------------------------------------------- the system


@dataclass
class Served:
    """One service built by its ``build`` and served by ``bootstrap.serve``."""

    name: str
    address: str
    runtime: Runtime
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 30)
        for channel in self.runtime.channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        if self.runtime.producer is not None:
            await self.runtime.producer.close()


@dataclass
class System:
    infra: TestInfra
    pool: asyncpg.Pool
    identity_dir: Path
    signer_for: Callable[[str], IdentitySigner]
    verifier_for: Callable[[str], IdentityVerifier]
    served: list[Served] = field(default_factory=list)

    def env(self, service: str, **extra: str) -> dict[str, str]:
        return {
            "POSTD_ENV": "test",
            "DATABASE_URL": self.infra.dsn,
            "KAFKA_BOOTSTRAP": self.infra.bootstrap,
            "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "POSTD_KAFKA_HEARTBEAT_MS": "300",
            "POSTD_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTD_IDENTITY_KEY_FILE": str(self.identity_dir / f"{service}.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(self.identity_dir),
            **extra,
        }

    async def serve(
        self,
        spec: ServiceSpec,
        common: CommonSettings,
        build: Callable[[Runtime], Any],
        *,
        kafka: bool = True,
    ) -> Served:
        """Build the service on a runtime as ``run_service`` opens it (own producer,
        identity signer and verifier) and serve it until the module's tests end."""
        runtime = Runtime(
            settings=common,
            pool=self.pool,
            producer=EventProducer(common.kafka) if kafka else None,
            signer=self.signer_for(spec.name),
            verifier=self.verifier_for(spec.name),
        )
        parts: ServiceParts = await build(runtime)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(runtime, spec, parts, stop))
        served = Served(spec.name, common.grpc_listen, runtime, stop, task)
        self.served.append(served)
        for _ in range(200):
            if task.done():
                task.result()
            if await check_health(served.address, timeout=0.5):
                break
            await asyncio.sleep(0.05)
        for consumer in parts.consumers:
            await asyncio.wait_for(consumer.assigned.wait(), 30)
        return served


async def start_vault(system: System, keyring: Path) -> Served:
    from postd_vault.app import MIGRATIONS, SPEC, build
    from postd_vault.config import load_settings

    schema = unique("vault_e2e").replace("-", "_")
    await db.migrate_dsn(system.infra.dsn, schema, MIGRATIONS)
    settings = load_settings(system.env("vault", POSTD_VAULT_KEYRING_FILE=str(keyring)))
    return await system.serve(
        SPEC, settings.common, lambda rt: build(rt, settings, schema=schema), kafka=False
    )


async def start_connectors(
    system: System, sandbox: RunningSandbox, vault: str, events_topic: str
) -> Any:
    from postd_connectors.app import SPEC, build
    from postd_connectors.config import load_settings

    await db.migrate_dsn(system.infra.dsn, "connectors", SPEC.migrations or Path())
    # Usage blocks are per platform app: another test's must not hold this one up.
    await system.pool.execute("DELETE FROM connectors.platform_usage")
    settings = load_settings(
        system.env(
            "connectors",
            POSTD_SANDBOX_URL=sandbox.url,
            POSTD_VAULT_ADDR=vault,
            POSTD_CONNECTION_EVENTS_TOPIC=events_topic,
            POSTD_CONNECTORS_HTTP_TIMEOUT="5",
            POSTD_CONNECTORS_POLL_INTERVAL="0.05",
        )
    )
    await system.serve(SPEC, settings.common, lambda rt: build(rt, settings))
    return settings


async def start_publisher(system: System, connectors: str, topics: dict[str, str]) -> Served:
    from postd_publisher.app import MIGRATIONS, build, service_spec
    from postd_publisher.config import load_settings

    schema = unique("publisher_e2e").replace("-", "_")
    await db.migrate_dsn(system.infra.dsn, schema, MIGRATIONS)
    group = unique("publisher-e2e")
    settings = load_settings(
        system.env(
            "publisher",
            POSTD_CONNECTORS_ADDR=connectors,
            POSTD_PUBLISHER_SCHEMA=schema,
            POSTD_PUBLISH_JOBS_TOPIC=topics["jobs"],
            POSTD_PUBLISH_RESULTS_TOPIC=topics["results"],
            POSTD_PUBLISH_DLQ_TOPIC=topics["dlq"],
            POSTD_CONNECTION_EVENTS_TOPIC=topics["events"],
            POSTD_ANALYTICS_JOBS_TOPIC=topics["analytics"],
            POSTD_PUBLISHER_WORKER_GROUP=f"{group}-workers",
            POSTD_PUBLISHER_EVENTS_GROUP=f"{group}-events",
            POSTD_PUBLISHER_ANALYTICS_GROUP=f"{group}-analytics",
            POSTD_DISPATCH_POLL_SECONDS="0.05",
        )
    )
    return await system.serve(
        service_spec(settings), settings.common, lambda rt: build(rt, settings)
    )


async def start_health(
    system: System, connectors: str, publisher: str, topics: dict[str, str]
) -> Served:
    from postd_health.app import MIGRATIONS, SPEC, Overrides, TopicNames, build
    from postd_health.config import load_settings

    schema = unique("health_e2e").replace("-", "_")
    await db.migrate_dsn(system.infra.dsn, schema, MIGRATIONS)
    settings = load_settings(
        system.env(
            "health",
            POSTD_CONNECTORS_ADDR=connectors,
            POSTD_PUBLISHER_ADDR=publisher,
            POSTD_PUBLIC_URL=PUBLIC_URL,
            POSTD_HEALTH_CONSUMER_GROUP=unique("health-e2e"),
        )
    )
    names = TopicNames(
        alerts=topics["alerts"],
        publish_results=topics["results"],
        webhook_events=topics["webhooks"],
        connection_events=topics["events"],
    )
    over = Overrides(schema=schema, topics=names)
    return await system.serve(SPEC, settings.common, lambda rt: build(rt, settings, over))


@dataclass
class Gateway:
    url: str
    runner: web.AppRunner


async def start_gateway(system: System, addresses: dict[str, str]) -> Gateway:
    from postd_gateway.app import SERVER_LIMITS, create_app
    from postd_gateway.config import load_settings

    port = free_port()
    env = system.env(
        "gateway",
        POSTD_GATEWAY_PORT=str(port),
        POSTD_PUBLIC_URL=PUBLIC_URL,
        POSTD_GATEWAY_DASHBOARD_PATH="/app",
    )
    for name, address in addresses.items():
        env[f"POSTD_{name.upper().replace('-', '_')}_ADDR"] = address
    runner = web.AppRunner(
        create_app(load_settings(env)),
        access_log=None,
        max_line_size=SERVER_LIMITS["max_line_size"],
        max_field_size=SERVER_LIMITS["max_field_size"],
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Gateway(f"http://127.0.0.1:{port}", runner)


async def make_tenant(pool: asyncpg.Pool) -> tuple[str, str]:
    """A fresh tenant with an owner API key: (tenant id, key)."""
    from postd_gateway.adapters.postgres import TenantStore
    from postd_gateway.domain import issue_key

    store = TenantStore(pool)
    tenant_id = await store.ensure_tenant(unique("t-e2e"), "Trace test tenant")
    issued = issue_key("test")
    await store.add_key(tenant_id, issued.key_id, issued.digest, name="e2e", role="owner")
    return tenant_id, issued.secret


# --------------------------------------------------------------------------- the flow


@dataclass(frozen=True)
class Flow:
    spans: Sequence[ReadableSpan]
    tenant_id: str
    post_id: str
    job_id: str
    connection_id: str
    sandbox_port: int
    # Values that must never appear in a span.
    secrets: dict[str, str]


@pytest.fixture(scope="module")
async def flow(
    exporter: InMemorySpanExporter,
    infra: TestInfra,
    pg_pool: asyncpg.Pool,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Flow]:
    from postd_common.kafka import TopicSpec, ensure_topics
    from postd_gateway.app import SPEC as GATEWAY_SPEC
    from postd_sandbox.keys import STATE_KEY

    topics = {
        name: unique(f"e2e.{name}")
        for name in ("jobs", "results", "dlq", "events", "alerts", "webhooks", "analytics")
    }
    await asyncio.to_thread(
        ensure_topics, infra.kafka(), [TopicSpec(t, 3) for t in topics.values()]
    )
    await db.migrate_dsn(infra.dsn, "gateway", GATEWAY_SPEC.migrations or Path())
    system = System(infra, pg_pool, identity_dir, signer_for, verifier_for)
    sandbox = await start_sandbox()
    gateway: Gateway | None = None
    http = aiohttp.ClientSession()
    try:
        vault = await start_vault(system, tmp_path_factory.mktemp("vault") / "keyring.json")
        connectors_settings = await start_connectors(
            system, sandbox, vault.address, topics["events"]
        )
        connectors = system.served[-1].address
        publisher = await start_publisher(system, connectors, topics)
        health = await start_health(system, connectors, publisher.address, topics)
        gateway = await start_gateway(
            system,
            {
                "vault": vault.address,
                "connectors": connectors,
                "publisher": publisher.address,
                "health": health.address,
                "webhook-router": "127.0.0.1:1",  # not on this path
            },
        )
        tenant_id, api_key = await make_tenant(pg_pool)
        auth = {"Authorization": f"Bearer {api_key}"}

        # Connect a Facebook Page through the gateway, as a browser would.
        async with http.post(f"{sandbox.url}/_sandbox/consent", json={"platform": "meta"}) as resp:
            assert resp.status < 300, await resp.text()
        async with http.post(
            f"{gateway.url}/v1/connect/facebook", json={"capabilities": ["publish"]}, headers=auth
        ) as resp:
            assert resp.status == 200, await resp.text()
            started = await resp.json()
        async with http.get(started["authorize_url"], allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            callback = urlsplit(resp.headers["Location"])
        assert f"{callback.scheme}://{callback.netloc}" == PUBLIC_URL
        params = {k: v[0] for k, v in parse_qs(callback.query).items()}
        async with http.get(
            f"{gateway.url}{callback.path}?{callback.query}", allow_redirects=False
        ) as resp:
            assert resp.status == 302, await resp.text()
            assert "connect=ok" in resp.headers["Location"], resp.headers["Location"]
        async with http.get(f"{gateway.url}/v1/connections", headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            connections = (await resp.json())["items"]
        page = next(c for c in connections if c["platform"] == "facebook")

        # The post, through the gateway; then wait for health to have the result.
        async with http.post(
            f"{gateway.url}/v1/posts",
            json={"content": {"text": POST_TEXT}, "targets": [{"connection_id": page["id"]}]},
            headers={**auth, "Idempotency-Key": unique("trace")},
        ) as resp:
            assert resp.status == 201, await resp.text()
            post = await resp.json()
        post_id = post["post"]["id"]
        job_id = post["post"]["jobs"][0]["id"]
        results_span = f"{topics['results']} process"
        for _ in range(600):
            names = {s.name for s in exporter.get_finished_spans()}
            if results_span in names:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no result consumed by health; spans: {sorted(names)}")

        state = sandbox.app[STATE_KEY]
        tokens = [r.value for r in state.tokens.all()]
        assert tokens, "the sandbox issued no token"
        secrets = {
            "api key": api_key,
            "authorization": auth["Authorization"],
            "oauth code": params["code"],
            "oauth state": params["state"],
            "client secret": connectors_settings.apps["meta"].client_secret.reveal(),
            **{f"platform token {i}": token for i, token in enumerate(tokens)},
        }
        yield Flow(
            spans=exporter.get_finished_spans(),
            tenant_id=tenant_id,
            post_id=post_id,
            job_id=job_id,
            connection_id=page["id"],
            sandbox_port=int(urlsplit(sandbox.url).port or 0),
            secrets=secrets,
        )
    finally:
        if gateway is not None:
            await gateway.runner.cleanup()
        for served in reversed(system.served):
            await served.close()
        await http.close()
        await sandbox.close()


# --------------------------------------------------------------------------- helpers


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def one(
    spans: Sequence[ReadableSpan], what: str, match: Callable[[ReadableSpan], bool]
) -> ReadableSpan:
    found = [s for s in spans if match(s)]
    assert found, f"no {what}; spans: {sorted({s.name for s in spans})}"
    return found[0]


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The span's parent, grandparent, ... as far as they were recorded."""
    chain: list[ReadableSpan] = []
    current = span
    while current.parent is not None and current.parent.span_id in by_id:
        current = by_id[current.parent.span_id]
        chain.append(current)
    return chain


@dataclass(frozen=True)
class Hops:
    gateway: ReadableSpan
    create_post: ReadableSpan
    job_consumed: ReadableSpan
    worker: ReadableSpan
    publish_rpc: ReadableSpan
    connectors_publish: ReadableSpan
    platform_call: ReadableSpan
    result_consumed: ReadableSpan


def hops(flow: Flow) -> Hops:
    spans = flow.spans
    gateway = one(
        spans,
        "gateway server span for POST /v1/posts",
        lambda s: (
            s.kind is SpanKind.SERVER
            and attrs(s).get("http.route") == "/v1/posts"
            and attrs(s).get("http.method", attrs(s).get("http.request.method")) == "POST"
        ),
    )
    in_trace = [s for s in spans if s.context.trace_id == gateway.context.trace_id]

    def rpc(method: str) -> Callable[[ReadableSpan], bool]:
        return lambda s: s.kind is SpanKind.SERVER and s.name.endswith(f"/{method}")

    return Hops(
        gateway=gateway,
        create_post=one(in_trace, "publisher CreatePost server span", rpc("CreatePost")),
        job_consumed=one(
            in_trace,
            "publish.jobs consumer span",
            lambda s: s.kind is SpanKind.CONSUMER and ".jobs-" in s.name,
        ),
        worker=one(in_trace, "worker span", lambda s: s.name == "publisher.publish_attempt"),
        publish_rpc=one(in_trace, "connectors PublishPost server span", rpc("PublishPost")),
        connectors_publish=one(
            in_trace, "connectors.publish span", lambda s: s.name == "connectors.publish"
        ),
        platform_call=one(
            in_trace,
            "platform call to the sandbox",
            lambda s: s.kind is SpanKind.CLIENT and attrs(s).get("postd.platform") == "facebook",
        ),
        result_consumed=one(
            in_trace,
            "publish.results consumer span",
            lambda s: s.kind is SpanKind.CONSUMER and ".results-" in s.name,
        ),
    )


# --------------------------------------------------------------------------- tests


def test_one_trace_from_the_request_to_the_result(flow: Flow) -> None:
    h = hops(flow)
    by_id = {s.context.span_id: s for s in flow.spans}
    trace_id = h.gateway.context.trace_id
    chain = [
        h.gateway,
        h.create_post,
        h.job_consumed,
        h.worker,
        h.publish_rpc,
        h.connectors_publish,
        h.platform_call,
    ]
    for span in (*chain, h.result_consumed):
        assert span.context.trace_id == trace_id, span.name
    # Each hop descends from the one before it (directly or through spans between,
    # such as gRPC client spans), down to the platform call.
    for parent, child in itertools.pairwise(chain):
        assert parent in ancestors(child, by_id), f"{child.name} is not under {parent.name}"
    # The result comes back under the worker that published it.
    assert h.worker in ancestors(h.result_consumed, by_id)
    # The gateway's request span is the root of it all.
    assert h.gateway.parent is None or h.gateway.parent.span_id not in by_id
    # The Kafka hops are consumer spans of the messages' topics.
    assert attrs(h.job_consumed)["messaging.system"] == "kafka"
    for consumer in (h.job_consumed, h.result_consumed):
        destination = attrs(consumer)["messaging.destination.name"]
        assert consumer.name == f"{destination} process"


def test_spans_carry_the_tenant_platform_and_job(flow: Flow) -> None:
    h = hops(flow)
    assert attrs(h.gateway)["postd.tenant_id"] == flow.tenant_id
    for consumer in (h.job_consumed, h.result_consumed):
        assert attrs(consumer)["postd.tenant_id"] == flow.tenant_id
    worker = attrs(h.worker)
    assert worker["postd.tenant_id"] == flow.tenant_id
    assert worker["postd.job_id"] == flow.job_id
    assert worker["postd.platform"] == "facebook"
    assert worker["postd.connection_id"] == flow.connection_id
    assert worker["postd.post_id"] == flow.post_id
    assert worker["postd.outcome"] == "published"
    publish = attrs(h.connectors_publish)
    assert publish["postd.tenant_id"] == flow.tenant_id
    assert publish["postd.job_id"] == flow.job_id
    assert publish["postd.platform"] == "facebook"
    assert publish["postd.outcome"] == "published"
    call = attrs(h.platform_call)
    assert call["http.request.method"] == "POST"
    assert call["postd.outcome"] == "ok"
    assert call["http.response.status_code"] == 200
    assert "?" not in call["url.path"]


def texts_of(span: ReadableSpan) -> list[tuple[str, str]]:
    """Everything a span says, as (where, text): its name, status, attribute keys and
    values, events with theirs, and links' attributes."""
    found = [("name", span.name), ("status", span.status.description or "")]
    for key, value in attrs(span).items():
        found += [("attribute key", key), (f"attribute {key}", str(value))]
    for event in span.events:
        found.append(("event", event.name))
        for key, value in (event.attributes or {}).items():
            found += [("event attribute key", key), (f"event attribute {key}", str(value))]
    for link in span.links:
        for key, value in (link.attributes or {}).items():
            found.append((f"link attribute {key}", str(value)))
    return found


def test_no_span_holds_a_secret(flow: Flow) -> None:
    # Every span the flow recorded (OAuth connect, vault, publish, result), not only
    # the publish trace. The sandbox stands in for the platforms and is not ours: its
    # server spans (there when aiohttp servers were instrumented before it started)
    # are left out.
    ours = [s for s in flow.spans if str(attrs(s).get("net.host.port")) != str(flow.sandbox_port)]
    routes = {attrs(s).get("http.route") for s in ours}
    assert {"/v1/connect/{platform}", "/oauth/callback/{platform}", "/v1/posts"} <= routes
    assert any(s.name.endswith("/CompleteAuth") for s in ours)
    assert any(s.name.startswith("/postd.vault.v1.VaultService/") for s in ours)
    leaks = [
        (span.name, where, label)
        for span in ours
        for where, text in texts_of(span)
        for label, secret in flow.secrets.items()
        if secret and secret in text
    ]
    assert not leaks, leaks
    for span in ours:
        for where, text in texts_of(span):
            assert "authorization" not in text.lower() or where == "name", (span.name, where)
            assert not text.startswith("Bearer "), (span.name, where)


def test_the_secrets_checked_are_real(flow: Flow) -> None:
    """The leak check above looks for values this flow really used."""
    assert flow.secrets["api key"].startswith("postd_")
    assert len(flow.secrets["oauth code"]) >= 8
    assert any(k.startswith("platform token") for k in flow.secrets)
    assert uuid.UUID(flow.job_id)
