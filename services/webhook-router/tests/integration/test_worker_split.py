"""The router split in two processes' worth of parts: an API part that only verifies
and stores (``POSTD_WEBHOOKS_WORKERS=separate``) and a worker part
(``python -m postd_webhook_router worker``) that processes and relays what the API
stored — each served as production serves it, on the real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd.webhook_router.v1 import webhook_router_pb2_grpc
from postd_common import db
from postd_common.bootstrap import Runtime, serve
from postd_common.devinfra import free_port
from postd_common.grpcutil import open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer, TopicSpec, ensure_topics
from postd_common.testing import TestInfra, unique
from postd_sandbox import signing
from postd_webhook_router.__main__ import main
from postd_webhook_router.app import SPEC, Overrides, TopicNames, build
from postd_webhook_router.config import load_settings
from postd_webhook_router.domain.model import Route

pytestmark = pytest.mark.integration


class Unrouted:
    async def resolve(self, platform: str, external_account_id: str) -> list[Route]:
        return []


def test_unknown_command_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["replay-everything"])
    assert exited.value.code == 2
    assert "serve|worker|migrate" in capsys.readouterr().err


def test_a_bad_workers_value_is_named() -> None:
    with pytest.raises(Exception, match="POSTD_WEBHOOKS_WORKERS"):
        load_settings(
            {
                "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
                "KAFKA_BOOTSTRAP": "127.0.0.1:9",
                "POSTD_ENV": "test",
                "POSTD_WEBHOOKS_WORKERS": "elsewhere",
            }
        )


async def test_api_stores_and_answers_while_a_separate_worker_emits(
    infra: TestInfra,
    identity_dir: Path,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
) -> None:
    kafka = infra.kafka("webhook-router-split")
    names = TopicNames(
        webhook_events=unique("webhook.events"),
        webhook_dlq=unique("webhook.dlq"),
        alerts=unique("alerts"),
        publish_results=unique("publish.results"),
        connection_events=unique("connection.events"),
    )
    await asyncio.to_thread(
        ensure_topics, kafka, [TopicSpec(n, 1) for n in dataclasses.astuple(names)]
    )
    await db.migrate_dsn(infra.dsn, "webhooks", SPEC.migrations)  # type: ignore[arg-type]
    router_addr = f"127.0.0.1:{free_port()}"
    environ = {
        "DATABASE_URL": infra.dsn,
        "KAFKA_BOOTSTRAP": infra.bootstrap,
        "POSTD_ENV": "test",
        "POSTD_GRPC_LISTEN": router_addr,
        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "webhook-router.key"),
        "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "POSTD_KAFKA_HEARTBEAT_MS": "300",
        "POSTD_WEBHOOKS_POLL_SECONDS": "0.1",
        "POSTD_WEBHOOKS_CONSUMER_GROUP": unique("webhook-router"),
        "POSTD_WEBHOOKS_WORKERS": "separate",
    }
    api_settings = load_settings(environ)
    worker_settings = load_settings(environ, worker=True)
    assert (api_settings.role, worker_settings.role) == ("api", "worker")

    stop = asyncio.Event()
    serving: list[asyncio.Task[None]] = []
    closing: list[Runtime] = []
    pools: list[asyncpg.Pool] = []
    producers: list[EventProducer] = []
    parts = []
    for settings in (api_settings, worker_settings):
        pool = await db.create_pool(infra.dsn, max_size=5)
        producer = EventProducer(settings.common.kafka)
        runtime = Runtime(
            settings.common,
            pool,
            producer,
            signer_for("webhook-router"),
            verifier_for("webhook-router"),
        )
        built = await build(runtime, settings, Overrides(resolver=Unrouted(), topics=names))
        parts.append(built)
        pools.append(pool)
        producers.append(producer)
        closing.append(runtime)
        serving.append(asyncio.create_task(serve(runtime, SPEC, built, stop)))
    api_parts, worker_parts = parts
    # The API part answers gRPC and does nothing in the background; the worker the reverse.
    assert api_parts.register
    assert not api_parts.tasks
    assert not api_parts.consumers
    assert not worker_parts.register
    assert len(worker_parts.tasks) == 3
    assert len(worker_parts.consumers) == 2

    channel = open_channel(router_addr, signer=signer_for("gateway"), audience="webhook-router")
    try:
        stub = webhook_router_pb2_grpc.WebhookRouterServiceStub(channel)
        secret = api_settings.inbound.client_secrets["tiktok"][0].reveal()
        now = int(time.time())
        body = signing.canonical_json(
            {"event": "post.publish.complete", "create_time": now, "user_openid": unique("act")}
        )
        reply = await stub.IngestWebhook(
            pb.IngestWebhookRequest(
                http_method="POST",
                platform="tiktok",
                body=body,
                headers=[
                    pb.HttpHeader(
                        name="TikTok-Signature", value=signing.tiktok_signature(secret, body, now)
                    )
                ],
            ),
            timeout=10,
        )
        assert (reply.http_status, reply.verdict) == (200, pb.WEBHOOK_VERDICT_ACCEPTED)
        deadline = datetime.now(UTC).timestamp() + 20
        row = None
        while datetime.now(UTC).timestamp() < deadline:
            row = await pools[0].fetchrow(
                "SELECT state, emitted_at FROM webhooks.inbound_events WHERE id = $1::uuid",
                reply.event_id,
            )
            if row is not None and row["emitted_at"] is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None
        assert row["state"] == "emitted"
        assert row["emitted_at"] is not None
    finally:
        await channel.close()
        stop.set()
        for task in serving:
            await task
        for runtime in closing:
            for ch in runtime.channels.values():
                await ch.close()
        for producer in producers:
            await producer.close()
        for pool in pools:
            await pool.close()
