"""The one way a service process starts, runs and stops.

A service's ``__main__`` loads its settings and calls :func:`run_service` with a
``build`` function. ``run_service`` opens what the settings ask for (logging,
tracing, metrics, the PostgreSQL pool after migrating the service's schema, the
Kafka producer and topics, the service identity), hands them to ``build`` as a
:class:`Runtime`, then serves the returned :class:`ServiceParts` — gRPC servicers,
consumer loops, background tasks — until SIGTERM, and closes everything in
reverse order. Tests call ``build`` directly with their own runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from postd_common import db
from postd_common.grpcutil import (
    AccessPolicy,
    GrpcServer,
    RefusalHook,
    create_server,
    open_channel,
)
from postd_common.identity import IdentitySigner, IdentityVerifier, load_identity
from postd_common.kafka import ConsumerLoop, EventProducer, TopicSpec, ensure_topics
from postd_common.logging import configure_logging, get_logger
from postd_common.metrics import serve_metrics
from postd_common.service import StartupError
from postd_common.settings import CommonSettings
from postd_common.telemetry import setup_tracing, shutdown_tracing

log = get_logger(__name__)

BackgroundTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """What a service's ``build`` receives: opened clients, nothing global."""

    settings: CommonSettings
    pool: asyncpg.Pool | None
    producer: EventProducer | None
    signer: IdentitySigner | None
    verifier: IdentityVerifier | None
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str, target: str) -> grpc.aio.Channel:
        """A channel to ``service`` (cached), presenting this service's identity."""
        if service not in self.channels:
            self.channels[service] = open_channel(target, signer=self.signer, audience=service)
        return self.channels[service]

    def require_pool(self) -> asyncpg.Pool:
        assert self.pool is not None, "this service was started without a database"
        return self.pool

    def require_producer(self) -> EventProducer:
        assert self.producer is not None, "this service was started without Kafka"
        return self.producer


@dataclass
class ServiceParts:
    """What a service runs. Every field is optional."""

    register: Sequence[Callable[[grpc.aio.Server], None]] = ()
    service_names: Sequence[str] = ()
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    consumers: Sequence[ConsumerLoop[Any]] = ()
    tasks: Sequence[BackgroundTask] = ()
    on_close: Sequence[Callable[[], Awaitable[None]]] = ()
    # Told of verified callers the policy refuses (grpcutil.RefusalHook), e.g. to audit.
    on_refused: RefusalHook | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """Static facts about a service: its schema, migrations and topics."""

    name: str
    schema: str | None = None
    migrations: Path | None = None
    topics: Sequence[TopicSpec] = ()
    grpc: bool = True
    drain_seconds: float = 10.0
    # False skips the per-release session reset query (see db.create_pool): only for
    # services that keep no session state on pooled connections.
    pool_session_reset: bool = True


async def open_runtime(settings: CommonSettings, spec: ServiceSpec) -> Runtime:
    """Open clients for a service; raises StartupError / OSError / KafkaException."""
    pool: asyncpg.Pool | None = None
    producer: EventProducer | None = None
    signer, verifier = load_identity(settings.identity)
    if spec.schema and spec.migrations:
        try:
            await asyncio.wait_for(
                db.migrate_dsn(settings.database_url, spec.schema, spec.migrations), 60
            )
            pool = await asyncio.wait_for(
                db.create_pool(
                    settings.database_url,
                    application_name=f"postd-{spec.name}",
                    max_size=20,
                    reset_session=spec.pool_session_reset,
                ),
                30,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StartupError(
                f"database unreachable at {_where(settings.database_url)}: {exc}"
            ) from exc
    if spec.topics:
        try:
            await asyncio.to_thread(ensure_topics, settings.kafka, spec.topics, timeout=15.0)
        except Exception as exc:  # librdkafka raises several exception types here
            raise StartupError(
                f"Kafka broker unavailable at {settings.kafka.bootstrap}: {exc}"
            ) from exc
        producer = EventProducer(settings.kafka)
    return Runtime(
        settings=settings, pool=pool, producer=producer, signer=signer, verifier=verifier
    )


def _where(dsn: str) -> str:
    """host:port/db of a DSN, without credentials."""
    tail = dsn.split("@", 1)[-1]
    return tail.split("?", 1)[0]


async def close_runtime(runtime: Runtime) -> None:
    for channel in runtime.channels.values():
        await channel.close()
    if runtime.producer is not None:
        await runtime.producer.close()
    if runtime.pool is not None:
        await runtime.pool.close()


async def serve(
    runtime: Runtime, spec: ServiceSpec, parts: ServiceParts, stop: asyncio.Event
) -> None:
    """Run ``parts`` until ``stop``; then drain gRPC, stop loops and tasks, close."""
    server: GrpcServer | None = None
    if spec.grpc and parts.register:
        try:
            server = create_server(
                service=spec.name,
                address=runtime.settings.grpc_listen,
                register=parts.register,
                service_names=parts.service_names,
                verifier=runtime.verifier,
                policy=parts.policy,
                on_refused=parts.on_refused,
            )
        except RuntimeError as exc:
            raise StartupError(str(exc)) from exc
        await server.start()
        log.info("grpc listening", address=runtime.settings.grpc_listen)
    inner_stop = asyncio.Event()
    workers = [
        asyncio.create_task(c.run(inner_stop), name=f"consumer-{i}")
        for i, c in enumerate(parts.consumers)
    ]
    workers += [
        asyncio.create_task(t(inner_stop), name=f"task-{i}") for i, t in enumerate(parts.tasks)
    ]
    log.info("service started", service=spec.name)
    stop_wait = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stop_wait, *workers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error(
                    "a worker failed; stopping",
                    worker=task.get_name(),
                    error=repr(task.exception()),
                )
    finally:
        log.info("service stopping", service=spec.name)
        if server is not None:
            await server.stop(spec.drain_seconds)
        inner_stop.set()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, spec.drain_seconds)
        stop_wait.cancel()
        for close in parts.on_close:
            await close()
    for task in workers:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} failed") from task.exception()


async def migrate_only(settings: CommonSettings, spec: ServiceSpec) -> None:
    """Apply the service's migrations and return (the ``migrate`` subcommand, run by
    the Kubernetes migration Job; safe beside starting pods: advisory lock)."""
    configure_logging(spec.name, settings.log_level)
    if spec.schema and spec.migrations:
        applied = await db.migrate_dsn(settings.database_url, spec.schema, spec.migrations)
        log.info("migrations applied", schema=spec.schema, applied=applied)


def main(
    spec: ServiceSpec,
    load: Callable[[], Any],
    build: Callable[[Runtime, Any], Awaitable[ServiceParts]],
    common: Callable[[Any], CommonSettings] = lambda s: s.common,
) -> None:
    """A service's whole ``__main__``: ``python -m postd_<svc> [serve|migrate]``.

    ``load`` reads the settings (raising ConfigError), ``build(runtime, settings)``
    wires the service. Start-up failures become one line and exit status 2.
    """
    import sys

    from postd_common.service import run

    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command not in ("serve", "migrate"):
        print(
            f"usage: python -m postd_{spec.name.replace('-', '_')} [serve|migrate]", file=sys.stderr
        )
        raise SystemExit(2)

    async def go(stop: asyncio.Event) -> None:
        settings = load()
        if command == "migrate":
            await migrate_only(common(settings), spec)
            return
        await run_service(common(settings), spec, lambda rt: build(rt, settings), stop)

    run(spec.name, go)


async def run_service(
    settings: CommonSettings,
    spec: ServiceSpec,
    build: Callable[[Runtime], Awaitable[ServiceParts]],
    stop: asyncio.Event,
) -> None:
    """The whole life of a service process (called from ``__main__`` via service.run)."""
    configure_logging(spec.name, settings.log_level)
    setup_tracing(spec.name, settings.otlp_endpoint)
    try:
        serve_metrics(settings.metrics_listen)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {settings.metrics_listen}: {exc}") from exc
    runtime = await open_runtime(settings, spec)
    try:
        parts = await build(runtime)
        await serve(runtime, spec, parts, stop)
    finally:
        await close_runtime(runtime)
        shutdown_tracing()
