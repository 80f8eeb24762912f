"""Tenant isolation on every resource: a second tenant's key gets 404 for the first
tenant's ids (never 403, never the object), and lists never show them."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration

SCHEDULE = {"schedule": {"publish_at": "2030-01-01T09:00:00Z"}}

# (method, path template, JSON body, success status for the owner)
BY_ID = [
    ("GET", "/v1/connections/{connection_id}", None, 200),
    ("GET", "/v1/connections/{connection_id}/analytics", None, 200),
    ("POST", "/v1/connections/{connection_id}/refresh", None, 200),
    ("POST", "/v1/connections/{connection_id}/disconnect", {"revoke_at_platform": False}, 200),
    ("POST", "/v1/connections/{connection_id}/reconnect", {}, 200),
    ("GET", "/v1/connections/{connection_id}/audit", None, 200),
    ("GET", "/v1/connections/{connection_id}/missed-jobs", None, 200),
    ("POST", "/v1/connections/{connection_id}/backfill", {"action": "publish"}, 200),
    ("GET", "/v1/connections/{connection_id}/health", None, 200),
    ("POST", "/v1/connections/{connection_id}/check", {"refresh": True}, 200),
    ("GET", "/v1/capabilities?connection_id={connection_id}", None, 200),
    ("GET", "/v1/connect/facebook?reconnect={connection_id}", None, 302),
    ("GET", "/v1/health/checks?connection_id={connection_id}", None, 200),
    ("GET", "/v1/posts/{post_id}", None, 200),
    ("GET", "/v1/posts/{post_id}/analytics", None, 200),
    ("POST", "/v1/posts/{post_id}/cancel", {"reason": "no"}, 200),
    ("POST", "/v1/posts/{post_id}/reschedule", SCHEDULE, 200),
    ("POST", "/v1/posts/{post_id}/approve", {"note": "ok"}, 200),
    ("POST", "/v1/posts/{post_id}/reject", {"reason": "off-brand"}, 200),
    ("GET", "/v1/jobs/{job_id}", None, 200),
    ("POST", "/v1/dlq/replay", {"job_ids": ["{dead_job_id}"]}, 200),
    ("GET", "/v1/webhook-events/{event_id}", None, 200),
    ("POST", "/v1/webhook-events/replay", {"event_ids": ["{event_id}"]}, 200),
    ("PATCH", "/v1/webhook-endpoints/{endpoint_id}", {"description": "mine"}, 200),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", {}, 200),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}", None, 204),
    ("GET", "/v1/webhook-deliveries?endpoint_id={endpoint_id}", None, 200),
    ("POST", "/v1/notifications/read", {"ids": ["{notification_id}"]}, 200),
    ("GET", "/v1/api-keys/{key_id}", None, 200),
    ("DELETE", "/v1/api-keys/{key_id}", None, 200),
]

LISTS = [
    ("/v1/connections", "connection_id"),
    ("/v1/posts", "post_id"),
    ("/v1/jobs", "job_id"),
    ("/v1/dlq", "dead_job_id"),
    ("/v1/webhook-events", "event_id"),
    ("/v1/webhook-endpoints", "endpoint_id"),
    ("/v1/notifications", "notification_id"),
    ("/v1/alerts", "notification_id"),
    ("/v1/health/checks", "check_id"),
    ("/v1/api-keys", "key_id"),
]


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.fixture
async def two_tenants(make_tenant, add_key, world):
    first = await make_tenant("owner")
    second = await make_tenant("owner")
    ids = world.seed_tenant(first.id)
    extra = await add_key(first, "viewer")
    ids["key_id"] = extra.key_id
    alerts = [a.alert_id for a in world.alerts.values() if a.tenant_id == first.id]
    ids["alert_id"] = alerts[0]
    return first, second, ids


@pytest.mark.parametrize(("method", "template", "body", "owner_status"), BY_ID)
async def test_another_tenants_object_is_not_found(
    client, two_tenants, method, template, body, owner_status
):
    first, second, ids = two_tenants
    path = _fill(template, ids)
    payload = _fill(body, ids)
    answer = await client.request(
        method, path, json=payload, headers=second.auth, allow_redirects=False
    )
    problem = await answer.json()
    assert answer.status == 404, problem
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert problem["code"] == "not_found"
    # Nothing of the object comes back (the request's own path is echoed as `instance`).
    problem.pop("instance")
    for value in ids.values():
        assert value not in str(problem)
    # The same request by the owner succeeds: the id exists, only the tenant differs.
    owned = await client.request(
        method, path, json=payload, headers=first.auth, allow_redirects=False
    )
    assert owned.status == owner_status, await owned.text()


@pytest.mark.parametrize(("path", "id_name"), LISTS)
async def test_lists_show_only_the_callers_objects(client, two_tenants, path, id_name):
    first, second, ids = two_tenants
    wanted = ids["alert_id"] if path == "/v1/alerts" else ids[id_name]
    theirs = await client.get(path, headers=second.auth)
    assert theirs.status == 200
    assert wanted not in await theirs.text()
    mine = await client.get(path, headers=first.auth)
    assert mine.status == 200
    assert wanted in await mine.text()


async def test_creating_with_another_tenants_connection_is_not_found(client, two_tenants):
    _first, second, ids = two_tenants
    body = {"content": {"text": "hi"}, "targets": [{"connection_id": ids["connection_id"]}]}
    answer = await client.post(
        "/v1/posts", json=body, headers={**second.auth, "Idempotency-Key": str(uuid.uuid4())}
    )
    problem = await answer.json()
    assert answer.status == 404, problem
    assert problem["errors"][0]["field"] == "targets[0].connection_id"
    inbound = await client.post(
        "/v1/webhook-inbound-keys",
        json={"platform": "mailchimp", "connection_id": ids["connection_id"]},
        headers={**second.auth, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert inbound.status == 404


async def test_the_tenant_comes_from_the_credential_only(client, two_tenants, world):
    first, second, ids = two_tenants
    # A body or query naming another tenant changes nothing: there is no such field,
    # and the backend is asked for the caller's tenant.
    answer = await client.post(
        "/v1/connections/" + ids["connection_id"] + "/refresh",
        json={"tenant_id": first.id},
        headers=second.auth,
    )
    assert answer.status in (400, 404)
    listed = await client.get(f"/v1/connections?tenant_id={first.id}", headers=second.auth)
    assert listed.status == 400
    assert (await listed.json())["errors"][0]["field"] == "tenant_id"
    await client.get("/v1/connections", headers=second.auth)
    assert world.seen[-1] == ("ListConnections", second.id)
