"""Dashboard sessions: HttpOnly cookie, CSRF on state-changing requests, expiry,
sign-out and revocation."""

from __future__ import annotations

import dataclasses

import pytest

pytestmark = pytest.mark.integration


async def sign_in(client, tenant):
    answer = await client.post("/v1/sessions", json={"api_key": tenant.key})
    body = await answer.json()
    assert answer.status == 201, body
    return answer, body


async def test_sign_in_sets_an_httponly_lax_cookie(client, make_tenant):
    tenant = await make_tenant("editor")
    answer, body = await sign_in(client, tenant)
    session = answer.cookies["postd_session"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"
    assert session["path"] == "/"
    assert not session["secure"]  # development and test only
    assert answer.cookies["postd_csrf"].value == body["csrf_token"]
    assert not answer.cookies["postd_csrf"]["httponly"]
    assert session.value not in await answer.text()
    assert body["tenant_id"] == tenant.id
    assert body["role"] == "editor"


async def test_cookies_are_secure_outside_development(make_client, settings, make_tenant):
    common = dataclasses.replace(settings.common, environment="production")
    client = await make_client(common=common)
    tenant = await make_tenant()
    answer, _ = await sign_in(client, tenant)
    assert answer.cookies["postd_session"]["secure"]
    assert answer.cookies["postd_csrf"]["secure"]


async def test_state_changing_requests_need_the_csrf_token(client, make_tenant, world):
    tenant = await make_tenant("editor")
    ids = world.seed_tenant(tenant.id)
    _, body = await sign_in(client, tenant)
    path = f"/v1/connections/{ids['connection_id']}/refresh"
    me = await client.get("/v1/me")  # the cookie jar carries the session
    assert me.status == 200
    assert (await me.json())["credential"] == "session"
    missing = await client.post(path)
    assert missing.status == 403
    assert (await missing.json())["code"] == "csrf_failed"
    wrong = await client.post(path, headers={"X-CSRF-Token": "not-it"})
    assert wrong.status == 403
    right = await client.post(path, headers={"X-CSRF-Token": body["csrf_token"]})
    assert right.status == 200, await right.text()
    # A bearer credential carries no ambient authority: no CSRF token needed.
    client.session.cookie_jar.clear()
    assert (await client.post(path, headers=tenant.auth)).status == 200


async def test_sign_out_ends_the_session(client, make_tenant):
    tenant = await make_tenant()
    answer, body = await sign_in(client, tenant)
    token = answer.cookies["postd_session"].value
    out = await client.delete("/v1/session", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status == 204
    client.session.cookie_jar.clear()
    replay = await client.get("/v1/me", headers={"Cookie": f"postd_session={token}"})
    assert replay.status == 401


async def test_the_session_dies_with_its_key(client, make_tenant, add_key):
    owner = await make_tenant("owner")
    user = await add_key(owner, "viewer")
    await sign_in(client, user)
    assert (await client.get("/v1/me")).status == 200
    revoked = await client.delete(f"/v1/api-keys/{user.key_id}", headers=owner.auth)
    assert revoked.status == 200
    client.session.cookie_jar.update_cookies({})  # keep the session cookie
    assert (await client.get("/v1/me")).status == 401


async def test_expired_sessions_are_refused(make_client, make_tenant, pg_pool):
    client = await make_client(auth_cache_seconds=0)
    tenant = await make_tenant()
    _, _body = await sign_in(client, tenant)
    assert (await client.get("/v1/me")).status == 200
    await pg_pool.execute(
        "UPDATE gateway.sessions SET expires_at = now() - interval '1 second' "
        "WHERE tenant_id = $1::uuid",
        tenant.id,
    )
    assert (await client.get("/v1/me")).status == 401


async def test_sign_in_refuses_bad_keys_and_forms(client, make_tenant):
    tenant = await make_tenant()
    bad = await client.post("/v1/sessions", json={"api_key": tenant.key[:-2] + "zz"})
    assert bad.status == 401
    form = await client.post("/v1/sessions", data={"api_key": tenant.key})
    assert form.status == 415
    both = await client.post("/v1/sessions", json={"api_key": tenant.key, "id_token": "x"})
    assert both.status == 400
    assert "postd_session" not in form.cookies
