"""Idempotency-Key on creating requests: same key + same body replays the answer; same
key + another body is 409; failures do not pin the key; keys are per tenant."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

pytestmark = pytest.mark.integration


def post_body(connection_id: str, text: str = "Hello") -> dict:
    return {
        "content": {"text": text},
        "targets": [{"connection_id": connection_id}],
        "schedule": {"publish_at": "2030-05-01T10:00:00Z"},
    }


async def test_same_key_same_body_is_replayed(client, make_tenant, world):
    tenant = await make_tenant("editor")
    connection = world.add_connection(tenant.id, "linkedin")
    key = str(uuid.uuid4())
    headers = {**tenant.auth, "Idempotency-Key": key}
    first = await client.post("/v1/posts", json=post_body(connection.id), headers=headers)
    first_body = await first.json()
    assert first.status == 201, first_body
    assert "Idempotent-Replayed" not in first.headers
    # The same JSON with other key order and spacing is the same request.
    same = json.dumps(dict(reversed(list(post_body(connection.id).items()))), indent=3)
    again = await client.post(
        "/v1/posts", data=same, headers={**headers, "Content-Type": "application/json"}
    )
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == first_body
    assert again.headers["Location"] == first.headers["Location"]
    posts = [p for p in world.posts.values() if p.tenant_id == tenant.id]
    assert len(posts) == 1


async def test_same_key_other_body_is_a_conflict(client, make_tenant, world):
    tenant = await make_tenant("editor")
    connection = world.add_connection(tenant.id)
    headers = {**tenant.auth, "Idempotency-Key": "order-42"}
    first = await client.post("/v1/posts", json=post_body(connection.id), headers=headers)
    assert first.status == 201
    other = await client.post(
        "/v1/posts", json=post_body(connection.id, "Changed"), headers=headers
    )
    problem = await other.json()
    assert other.status == 409
    assert problem["code"] == "idempotency_key_reused"
    assert problem["errors"][0]["field"] == "Idempotency-Key"


async def test_keys_belong_to_one_tenant(client, make_tenant, world):
    one, two = await make_tenant("editor"), await make_tenant("editor")
    for tenant in (one, two):
        connection = world.add_connection(tenant.id)
        answer = await client.post(
            "/v1/posts",
            json=post_body(connection.id),
            headers={**tenant.auth, "Idempotency-Key": "shared-key"},
        )
        assert answer.status == 201
        assert "Idempotent-Replayed" not in answer.headers


async def test_a_failed_request_does_not_pin_the_key(client, make_tenant, world):
    tenant = await make_tenant("editor")
    connection = world.add_connection(tenant.id, "instagram")
    headers = {**tenant.auth, "Idempotency-Key": str(uuid.uuid4())}
    too_long = await client.post(
        "/v1/posts", json=post_body(connection.id, "x" * 2300), headers=headers
    )
    problem = await too_long.json()
    assert too_long.status == 422, problem
    assert problem["code"] == "validation_failed"
    assert problem["errors"][0]["field"] == "content.text"
    assert "2,200" in problem["errors"][0]["message"] or "2200" in problem["errors"][0]["message"]
    fixed = await client.post("/v1/posts", json=post_body(connection.id, "short"), headers=headers)
    assert fixed.status == 201


async def test_the_header_is_required_and_checked(client, make_tenant, world):
    tenant = await make_tenant("editor")
    connection = world.add_connection(tenant.id)
    missing = await client.post("/v1/posts", json=post_body(connection.id), headers=tenant.auth)
    assert missing.status == 400
    assert (await missing.json())["code"] == "idempotency_key_missing"
    bad = await client.post(
        "/v1/posts",
        json=post_body(connection.id),
        headers={**tenant.auth, "Idempotency-Key": "has space"},
    )
    assert bad.status == 400


async def test_concurrent_duplicates_create_once(client, make_tenant, world):
    tenant = await make_tenant("editor")
    connection = world.add_connection(tenant.id)
    headers = {**tenant.auth, "Idempotency-Key": str(uuid.uuid4())}
    answers = await asyncio.gather(
        *(
            client.post("/v1/posts", json=post_body(connection.id), headers=headers)
            for _ in range(5)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    in_progress = [await a.json() for a in answers if a.status == 409]
    assert all(p["code"] == "idempotency_request_in_progress" for p in in_progress)
    assert len([p for p in world.posts.values() if p.tenant_id == tenant.id]) == 1
