"""pytest plugin: the real PostgreSQL and broker for a test session, and isolation helpers.

Uses ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP`` when given; otherwise starts the
embedded servers once per session in a temporary folder. Each test makes its own
topics, consumer groups and tenants (:func:`unique`), so tests never see each
other's data. Loaded by the repository's root ``conftest.py``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from postd_common import db
from postd_common.devinfra import EmbeddedBroker, EmbeddedPostgres, free_port
from postd_common.identity import IdentitySigner, IdentityVerifier, generate_keypair
from postd_common.kafka import KafkaSettings, TopicSpec, ensure_topics

SERVICES = (
    "gateway",
    "connectors",
    "vault",
    "publisher",
    "webhook-router",
    "health",
    "operator",  # the admin tools (python -m postd_vault admin ...)
    "tests",
)


@dataclass(frozen=True)
class TestInfra:
    __test__ = False  # not a test class

    dsn: str
    bootstrap: str
    workdir: Path
    postgres: EmbeddedPostgres | None
    broker: EmbeddedBroker | None

    def kafka(self, client: str = "tests") -> KafkaSettings:
        # Short session timeout: group joins take about half of it (DEVINFRA.md).
        return KafkaSettings(
            bootstrap=self.bootstrap,
            client_id=client,
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
        )


def unique(prefix: str) -> str:
    """A name no other test uses: topics, groups, tenants."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def infra() -> Iterator[TestInfra]:
    workdir = Path(tempfile.mkdtemp(prefix="postd-test-"))
    pg: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    dsn = os.environ.get("DATABASE_URL", "")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
    try:
        if not dsn:
            pg = EmbeddedPostgres(
                workdir / "pg", free_port(), durable=False, log_file=workdir / "postgres.log"
            )
            dsn = pg.start()
        if not bootstrap:
            broker = EmbeddedBroker(free_port(), log_file=workdir / "broker.log")
            bootstrap = broker.start()
        yield TestInfra(dsn, bootstrap, workdir, pg, broker)
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()


@pytest.fixture(scope="session")
def pg_dsn(infra: TestInfra) -> str:
    return infra.dsn


@pytest.fixture(scope="session")
def kafka_settings(infra: TestInfra) -> KafkaSettings:
    return infra.kafka()


@pytest.fixture(scope="session")
async def pg_pool(infra: TestInfra) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(infra.dsn, min_size=1, max_size=20, application_name="tests")
    yield pool
    await pool.close()


@pytest.fixture
def make_topics(kafka_settings: KafkaSettings) -> Callable[..., list[str]]:
    """``make_topics("jobs", partitions=3)`` creates fresh topics (and their .dlq twins)."""

    def make(*prefixes: str, partitions: int = 3) -> list[str]:
        names = [unique(p) for p in prefixes]
        ensure_topics(kafka_settings, [TopicSpec(n, partitions) for n in names])
        return names

    return make


@pytest.fixture
def tenant_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("identity")
    for name in SERVICES:
        generate_keypair(directory, name)
    return directory


@pytest.fixture(scope="session")
def signer_for(identity_dir: Path) -> Callable[[str], IdentitySigner]:
    def make(service: str) -> IdentitySigner:
        return IdentitySigner.from_file(service, identity_dir / f"{service}.key")

    return make


@pytest.fixture(scope="session")
def verifier_for(identity_dir: Path) -> Callable[[str], IdentityVerifier]:
    def make(service: str) -> IdentityVerifier:
        return IdentityVerifier.from_dir(service, identity_dir)

    return make


async def apply_migrations(dsn: str, schema: str, directory: Path) -> None:
    await db.migrate_dsn(dsn, schema, directory)
