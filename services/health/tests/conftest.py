"""Fixtures for health's tests: a fresh schema per test on the session's PostgreSQL."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from postd_common import db
from postd_common.testing import unique
from postd_health.adapters.postgres import PostgresStore
from postd_health.app import MIGRATIONS

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
