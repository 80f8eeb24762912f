"""First contact: the documents and one authenticated call."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


async def test_openapi_and_docs(client):
    response = await client.get("/openapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"] == "3.1.0"
    assert "/v1/connections" in doc["paths"]
    docs = await client.get("/docs")
    assert docs.status == 200
    assert "listConnections" in await docs.text()


async def test_list_connections(client, make_tenant, world):
    tenant = await make_tenant()
    made = world.add_connection(tenant.id, "linkedin", name="Acme Inc")
    response = await client.get("/v1/connections", headers=tenant.auth)
    body = await response.json()
    assert response.status == 200, body
    assert [c["id"] for c in body["items"]] == [made.id]
    assert body["items"][0]["status"] == "healthy"
    assert body["next_cursor"] is None
    assert response.headers["RateLimit-Limit"] == "6000"
