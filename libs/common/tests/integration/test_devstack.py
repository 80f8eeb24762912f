"""The devstack's controls for tools that drive it: pids.json, and restarting the
embedded broker (empty, topics re-created) and PostgreSQL (data kept) — the handlers
SIGUSR1 / SIGUSR2 call (tests/e2e/test_chaos_fast.py sends the signals themselves)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka.admin import AdminClient

from postd_common.devstack.__main__ import Stack
from postd_common.devstack.config import load
from postd_common.devstack.driver import free_offset
from postd_common.kafka import KafkaSettings, TopicSpec, ensure_topics
from postd_common.topics import ALL as ALL_TOPICS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A Stack with its embedded servers only (no services) on free ports."""
    settings = load(tmp_path / "state", {"POSTD_PORT_OFFSET": str(free_offset())})
    settings.state.mkdir(parents=True)
    stack = Stack(settings)
    stack.dsn, stack.bootstrap = await asyncio.to_thread(stack.start_infra)
    yield stack
    await asyncio.to_thread(stack.stop_infra)


def topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


async def test_pids_file_names_the_servers(stack: Stack) -> None:
    stack.write_pids()
    data = json.loads((stack.s.state / "pids.json").read_text())
    assert data["devstack"] == os.getpid()
    assert stack.postgres is not None
    assert stack.broker is not None
    assert data["postgres"] == stack.postgres.pid
    assert data["broker"] == stack.broker.pid
    assert data["database_url"] == stack.dsn
    assert data["kafka_bootstrap"] == stack.bootstrap
    assert data["ports"]["gateway"] == stack.s.port("gateway")
    assert data["infra_restarts"] == {"broker": 0, "postgres": 0}


async def test_broker_comes_back_empty_with_the_topics(stack: Stack) -> None:
    ensure_topics(KafkaSettings(stack.bootstrap), [TopicSpec("scratch.topic", 1)])
    assert "scratch.topic" in topics(stack.bootstrap)
    assert stack.broker is not None
    before = stack.broker.pid
    stack.on_infra_signal("broker")
    for _ in range(400):
        if stack.infra_restarts["broker"]:
            break
        await asyncio.sleep(0.05)
    assert stack.infra_restarts["broker"] == 1
    assert stack.broker.pid != before
    after = topics(stack.bootstrap)
    assert "scratch.topic" not in after  # empty: what it held is gone
    assert {spec.name for spec in ALL_TOPICS} <= after  # the stack's own are back
    assert json.loads((stack.s.state / "pids.json").read_text())["broker"] == stack.broker.pid


async def test_postgres_restarts_with_its_data(stack: Stack) -> None:
    connection = await asyncpg.connect(stack.dsn)
    await connection.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    assert stack.postgres is not None
    before = stack.postgres.pid
    stack.on_infra_signal("postgres")
    for _ in range(600):
        if stack.infra_restarts["postgres"]:
            break
        await asyncio.sleep(0.05)
    assert stack.infra_restarts["postgres"] == 1
    assert stack.postgres.pid != before
    with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)):
        await connection.fetchval("SELECT n FROM kept")
    again = await asyncpg.connect(stack.dsn)
    try:
        assert await again.fetchval("SELECT n FROM kept") == 7
    finally:
        await again.close()
