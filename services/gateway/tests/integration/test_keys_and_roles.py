"""API keys (shown once, hashed, revocable, last-used), roles and scopes."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from postd_gateway.pipeline import PORTS

pytestmark = pytest.mark.integration


def creating(tenant) -> dict[str, str]:
    return {**tenant.auth, "Idempotency-Key": str(uuid.uuid4())}


async def test_no_or_bad_credentials_are_401(client, make_tenant):
    tenant = await make_tenant()
    wrong_secret = tenant.key[:-4] + ("AAAA" if not tenant.key.endswith("AAAA") else "BBBB")
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer postd_live_short"},
        {"Authorization": "Bearer " + wrong_secret},
        {"Authorization": "Bearer postd_dev_aaaaaaaaaaaa_" + "x" * 43},
    ):
        answer = await client.get("/v1/connections", headers=headers)
        problem = await answer.json()
        assert answer.status == 401, headers
        assert problem["code"] == "unauthenticated"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert tenant.key not in await answer.text()


async def test_created_key_is_shown_once_and_works(client, make_tenant, pg_pool):
    owner = await make_tenant("owner")
    created = await client.post(
        "/v1/api-keys", json={"name": "ci", "role": "editor"}, headers=creating(owner)
    )
    body = await created.json()
    assert created.status == 201, body
    secret = body["key"]
    assert secret.startswith("postd_dev_" + body["id"] + "_")
    assert created.headers["Location"] == f"/v1/api-keys/{body['id']}"
    # Stored hashed: the secret is nowhere in the table.
    row = await pg_pool.fetchrow("SELECT * FROM gateway.api_keys WHERE id = $1", body["id"])
    assert secret.split("_")[-1].encode() not in b"".join(str(v).encode() for v in row.values())
    shown = await client.get(f"/v1/api-keys/{body['id']}", headers=owner.auth)
    assert "key" not in await shown.json()
    listed = await client.get("/v1/api-keys", headers=owner.auth)
    assert secret not in await listed.text()
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert (await me.json())["role"] == "editor"


async def test_replayed_key_creation_does_not_show_the_secret_again(client, make_tenant):
    owner = await make_tenant("owner")
    headers = creating(owner)
    first = await client.post("/v1/api-keys", json={"name": "once"}, headers=headers)
    again = await client.post("/v1/api-keys", json={"name": "once"}, headers=headers)
    assert first.status == again.status == 201
    first_body, again_body = await first.json(), await again.json()
    assert first_body["key"].startswith("postd_dev_")
    assert again_body["key"] is None
    assert again_body["id"] == first_body["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_revocation_is_immediate_on_this_replica(client, make_tenant, add_key):
    owner = await make_tenant("owner")
    victim = await add_key(owner, "editor")
    assert (await client.get("/v1/me", headers=victim.auth)).status == 200
    revoked = await client.delete(f"/v1/api-keys/{victim.key_id}", headers=owner.auth)
    assert revoked.status == 200
    assert (await revoked.json())["revoked_at"] is not None
    answer = await client.get("/v1/me", headers=victim.auth)
    assert answer.status == 401
    assert "revoked" in (await answer.json())["detail"]


async def test_revocation_reaches_another_replica_within_the_cache_bound(
    client, make_client, make_tenant, add_key
):
    other = await make_client(auth_cache_seconds=0.5)
    owner = await make_tenant("owner")
    victim = await add_key(owner, "viewer")
    assert (await other.get("/v1/me", headers=victim.auth)).status == 200  # now cached there
    assert (await client.delete(f"/v1/api-keys/{victim.key_id}", headers=owner.auth)).status == 200
    deadline = time.monotonic() + 15
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = (await other.get("/v1/me", headers=victim.auth)).status
        await asyncio.sleep(0.05)
    assert status == 401


async def test_last_used_is_recorded(client, make_tenant, add_key):
    owner = await make_tenant("owner")
    user = await add_key(owner, "viewer")
    before = await (await client.get(f"/v1/api-keys/{user.key_id}", headers=owner.auth)).json()
    assert before["last_used_at"] is None
    assert (await client.get("/v1/connections", headers=user.auth)).status == 200
    await client.app[PORTS].authenticator.flush_last_used()
    after = await (await client.get(f"/v1/api-keys/{user.key_id}", headers=owner.auth)).json()
    assert after["last_used_at"] is not None


ROLE_CASES = [
    # (role, method, path, body, allowed)
    ("viewer", "GET", "/v1/connections", None, True),
    ("viewer", "POST", "/v1/connections/{id}/refresh", None, False),
    ("editor", "POST", "/v1/connections/{id}/refresh", None, True),
    ("editor", "POST", "/v1/connections/{id}/disconnect", {}, False),
    ("admin", "POST", "/v1/connections/{id}/disconnect", {}, True),
    ("viewer", "GET", "/v1/api-keys", None, False),
    ("editor", "GET", "/v1/api-keys", None, False),
    ("admin", "GET", "/v1/api-keys", None, True),
    ("editor", "POST", "/v1/posts/{post}/approve", {}, False),
    ("admin", "POST", "/v1/posts/{post}/approve", {}, True),
    ("viewer", "POST", "/v1/notifications/read", {"all": True}, True),
]


@pytest.mark.parametrize(("role", "method", "path", "body", "allowed"), ROLE_CASES)
async def test_roles_are_checked_per_route(
    client, make_tenant, add_key, world, role, method, path, body, allowed
):
    owner = await make_tenant("owner")
    ids = world.seed_tenant(owner.id)
    caller = await add_key(owner, role)
    url = path.format(id=ids["connection_id"], post=ids["post_id"])
    answer = await client.request(method, url, json=body, headers=caller.auth)
    if allowed:
        assert answer.status == 200, await answer.text()
    else:
        problem = await answer.json()
        assert answer.status == 403, problem
        assert problem["code"] == "forbidden"


async def test_a_key_cannot_outrank_its_creator(client, make_tenant, add_key):
    owner = await make_tenant("owner")
    admin = await add_key(owner, "admin")
    refused = await client.post(
        "/v1/api-keys", json={"name": "x", "role": "owner"}, headers=creating(admin)
    )
    assert refused.status == 403
    allowed = await client.post(
        "/v1/api-keys", json={"name": "x", "role": "admin"}, headers=creating(admin)
    )
    assert allowed.status == 201


async def test_scopes_narrow_a_key(client, make_tenant, add_key, world):
    owner = await make_tenant("owner")
    ids = world.seed_tenant(owner.id)
    reader = await add_key(owner, "admin", scopes=("posts:read",))
    assert (await client.get("/v1/posts", headers=reader.auth)).status == 200
    refused = await client.get("/v1/connections", headers=reader.auth)
    assert refused.status == 403
    assert "connections:read" in (await refused.json())["detail"]
    wildcard = await add_key(owner, "editor", scopes=("connections:*",))
    refreshed = await client.post(
        f"/v1/connections/{ids['connection_id']}/refresh", headers=wildcard.auth
    )
    assert refreshed.status == 200
