"""The service as ``python -m postd_health`` wires it: build() on a real runtime,
served by the shared bootstrap (gRPC with identities, consumers, background loops),
answering the gateway and stopping cleanly; and a bad configuration stops it with
one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from postd.health.v1 import health_pb2 as hpb
from postd.health.v1.health_pb2_grpc import ConnectionHealthServiceStub
from postd_common.bootstrap import Runtime, serve
from postd_common.devinfra import free_port
from postd_common.grpcutil import check_health, open_channel
from postd_common.identity import IdentitySigner, IdentityVerifier
from postd_common.kafka import EventProducer
from postd_common.testing import TestInfra
from postd_health.app import SPEC, Overrides, build
from postd_health.config import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4]


async def test_build_serves_the_api_and_stops(
    infra: TestInfra,
    identity_dir: Path,
    pg_pool: asyncpg.Pool,
    schema: str,
    producer: EventProducer,
    topic_names: Any,
    signer_for: Callable[[str], IdentitySigner],
    verifier_for: Callable[[str], IdentityVerifier],
) -> None:
    port = free_port()
    settings = load_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "POSTD_KAFKA_HEARTBEAT_MS": "300",
            "POSTD_GRPC_LISTEN": f"127.0.0.1:{port}",
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "health.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
            "POSTD_HEALTH_CONSUMER_GROUP": f"health-{uuid.uuid4().hex[:8]}",
            "POSTD_CONNECTORS_ADDR": "127.0.0.1:1",
            "POSTD_PUBLISHER_ADDR": "127.0.0.1:1",
            "POSTD_HEALTH_SYNC_SECONDS": "3600",
        }
    )
    runtime = Runtime(
        settings=settings.common,
        pool=pg_pool,
        producer=producer,
        signer=signer_for("health"),
        verifier=verifier_for("health"),
    )
    parts = await build(runtime, settings, Overrides(schema=schema, topics=topic_names))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(runtime, SPEC, parts, stop))
    try:
        for _ in range(100):
            if await check_health(f"127.0.0.1:{port}", timeout=0.5):
                break
            await asyncio.sleep(0.1)
        channel = open_channel(f"127.0.0.1:{port}", signer=signer_for("gateway"), audience="health")
        try:
            stub = ConnectionHealthServiceStub(channel)
            tenant = str(uuid.uuid4())
            dashboard = await stub.GetDashboard(hpb.GetDashboardRequest(tenant_id=tenant))
            assert dashboard.token_health.total.current == 0
            assert len(dashboard.token_health.total.points) >= 48
            assert dashboard.resolution.seconds == 30 * 60
            listed = await stub.ListNotifications(hpb.ListNotificationsRequest(tenant_id=tenant))
            assert listed.unread_count == 0
        finally:
            await channel.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        for channel in runtime.channels.values():
            with contextlib.suppress(Exception):
                await channel.close()


def test_a_bad_configuration_stops_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP")}
    env["POSTD_HEALTH_TRANSIENT_FAILURES"] = "zero"
    proc = subprocess.run(
        [sys.executable, "-m", "postd_health"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("health: cannot start: invalid configuration:")
    assert "DATABASE_URL is required" in lines[0]
    assert "POSTD_HEALTH_TRANSIENT_FAILURES must be an integer" in lines[0]


async def test_a_slack_failure_never_names_the_hook() -> None:
    from aiohttp import web

    from postd_health.adapters.channels import HttpSlackSender
    from postd_health.ports import DeliveryFailed

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no_service")

    app = web.Application()
    app.router.add_post("/{tail:.*}", gone)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    secret = uuid.uuid4().hex
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            sender = HttpSlackSender(session)
            with pytest.raises(DeliveryFailed) as refused:
                await sender.send(f"http://127.0.0.1:{port}/services/T/B/{secret}", "hi")
            assert refused.value.permanent
            with pytest.raises(DeliveryFailed) as unreachable:
                await sender.send(f"http://127.0.0.1:{free_port()}/services/T/B/{secret}", "hi")
            assert not unreachable.value.permanent
    finally:
        await runner.cleanup()
    for failure in (refused.value, unreachable.value):
        assert secret not in str(failure)
