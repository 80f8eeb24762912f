"""``python -m postd_gateway create-tenants``: tenants with a working key each, the
keys written once to a file only its owner reads."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from postd_gateway.__main__ import create_tenants
from postd_gateway.adapters.postgres import TenantStore
from postd_gateway.config import Settings
from postd_gateway.domain import digest_matches, parse_key

pytestmark = pytest.mark.integration


async def test_create_tenants_with_a_key_each(
    client: Any, settings: Settings, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "keys" / "tenants.json"
    await create_tenants(settings, slug_prefix=prefix, count=3, role="editor", out=out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = json.loads(out.read_text())
    assert [r["slug"] for r in rows] == [f"{prefix}-{n}" for n in range(3)]
    assert len({r["tenant_id"] for r in rows}) == 3
    store = TenantStore(pg_pool)
    for row in rows:
        parsed = parse_key(row["api_key"])
        assert parsed is not None
        record = await store.find_key(parsed[0])
        assert record is not None
        assert record.tenant_id == row["tenant_id"]
        assert record.role == "editor"
        assert digest_matches(record.secret_sha256, parsed[1])
        # The key works through the API, for its own tenant.
        resp = await client.get("/v1/me", headers={"Authorization": f"Bearer {row['api_key']}"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["tenant_id"] == row["tenant_id"]
    # Run again: the tenants are kept, each gets one more key.
    await create_tenants(settings, slug_prefix=prefix, count=1, role="owner", out=out)
    again = json.loads(out.read_text())
    assert again[0]["tenant_id"] == rows[0]["tenant_id"]
    assert again[0]["api_key"] != rows[0]["api_key"]
