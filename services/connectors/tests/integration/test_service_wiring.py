"""The service as it starts in production: settings -> runtime (migrations, pool,
topics, producer, identities) -> build -> serve (gRPC + outbox relay) -> stop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postd.connectors.v1 import connectors_pb2 as pb
from postd.connectors.v1 import connectors_pb2_grpc
from postd_common.bootstrap import close_runtime, open_runtime, serve
from postd_common.devinfra import free_port
from postd_common.grpcutil import check_health, open_channel
from postd_common.testing import TestInfra
from postd_connectors.app import SPEC, build
from postd_connectors.config import load_settings

pytestmark = pytest.mark.integration


async def test_the_service_starts_serves_and_stops(
    infra: TestInfra, identity_dir: Path, signer_for: Any, events_topic: str
) -> None:
    port = free_port()
    settings = load_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": infra.dsn,
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_GRPC_LISTEN": f"127.0.0.1:{port}",
            "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "connectors.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
            "POSTD_CONNECTION_EVENTS_TOPIC": events_topic,
        }
    )
    runtime = await open_runtime(settings.common, SPEC)
    stop = asyncio.Event()
    try:
        parts = await build(runtime, settings)
        serving = asyncio.create_task(serve(runtime, SPEC, parts, stop))
        for _ in range(100):
            if await check_health(f"127.0.0.1:{port}", "postd.connectors.v1.ConnectorsService"):
                break
            await asyncio.sleep(0.05)
        channel = open_channel(
            f"127.0.0.1:{port}", signer=signer_for("gateway"), audience="connectors"
        )
        try:
            stub = connectors_pb2_grpc.ConnectorsServiceStub(channel)
            caps = await stub.GetCapabilities(pb.GetCapabilitiesRequest())
            assert {p.platform for p in caps.platforms} == {
                "facebook",
                "instagram",
                "linkedin",
                "tiktok",
                "google_business",
                "mailchimp",
            }
        finally:
            await channel.close()
        stop.set()
        await asyncio.wait_for(serving, 30)
    finally:
        stop.set()
        await close_runtime(runtime)


def test_missing_configuration_stops_with_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP")}
    env["POSTD_META_CLIENT_ID"] = "only-half"
    done = subprocess.run(
        [sys.executable, "-m", "postd_connectors"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DATABASE_URL is required" in done.stderr
    assert "POSTD_META_CLIENT_SECRET" in done.stderr
