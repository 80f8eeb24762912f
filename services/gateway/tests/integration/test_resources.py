"""The resources end to end through the gateway: pagination, the connect flow, posts
and jobs, the DLQ, webhooks, health, notifications and feature flags."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from postd_gateway.adapters.postgres import FlagStore, TenantStore
from postd_gateway.domain import FeatureFlag, rollout_bucket

pytestmark = pytest.mark.integration


def creating(tenant) -> dict[str, str]:
    return {**tenant.auth, "Idempotency-Key": str(uuid.uuid4())}


async def test_cursor_pagination(client, make_tenant, world):
    tenant = await make_tenant("viewer")
    made = [world.add_connection(tenant.id, name=f"Page {i}").id for i in range(3)]
    first = await (await client.get("/v1/connections?limit=2", headers=tenant.auth)).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    second = await client.get(
        "/v1/connections", params={"limit": 2, "cursor": first["next_cursor"]}, headers=tenant.auth
    )
    rest = await second.json()
    assert rest["next_cursor"] is None
    seen = [c["id"] for c in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(made)
    # A cursor is bound to its filters; a made-up one is refused with the field named.
    bad = await client.get(
        "/v1/connections",
        params={"cursor": first["next_cursor"], "platform": "tiktok"},
        headers=tenant.auth,
    )
    assert bad.status == 400
    assert (await bad.json())["errors"][0]["field"] == "cursor"
    filtered = await client.get("/v1/connections?status=revoked", headers=tenant.auth)
    assert (await filtered.json())["items"] == []


async def test_connect_flow_round_trip(client, make_tenant, world):
    tenant = await make_tenant("editor")
    start = await client.get(
        "/v1/connect/linkedin?return_to=/app/accounts&capability=analytics",
        headers=tenant.auth,
        allow_redirects=False,
    )
    assert start.status == 302, await start.text()
    consent = urlsplit(start.headers["Location"])
    assert consent.netloc == "consent.example"
    state = parse_qs(consent.query)["state"][0]
    bound = world.states[state]
    assert bound.tenant_id == tenant.id
    assert bound.redirect_uri == "http://gateway.test/oauth/callback/linkedin"
    # The platform sends the browser back; no credential is needed for that.
    back = await client.get(
        f"/oauth/callback/linkedin?state={state}&code=the-code&scope=r_liteprofile",
        allow_redirects=False,
    )
    assert back.status == 302
    landing = urlsplit(back.headers["Location"])
    assert landing.path == "/app/accounts"
    outcome = parse_qs(landing.query)
    assert outcome["connect"] == ["ok"]
    assert outcome["connections"] == ["1"]
    assert "the-code" not in back.headers["Location"]
    listed = await (await client.get("/v1/connections", headers=tenant.auth)).json()
    assert [c["platform"] for c in listed["items"]] == ["linkedin"]
    # A used state cannot be replayed.
    again = await client.get(
        f"/oauth/callback/linkedin?state={state}&code=the-code", allow_redirects=False
    )
    assert parse_qs(urlsplit(again.headers["Location"]).query)["connect"] == ["error"]


async def test_connect_declined_and_open_redirects(client, make_tenant):
    tenant = await make_tenant("editor")
    refused = await client.get(
        "/v1/connect/linkedin?return_to=//evil.example/x",
        headers=tenant.auth,
        allow_redirects=False,
    )
    assert refused.status == 400
    started = await client.post("/v1/connect/tiktok", json={}, headers=tenant.auth)
    state = (await started.json())["state"]
    declined = await client.get(
        f"/oauth/callback/tiktok?state={state}&error=access_denied", allow_redirects=False
    )
    landing = urlsplit(declined.headers["Location"])
    assert landing.path == "/app"
    outcome = parse_qs(landing.query)
    assert outcome["connect"] == ["error"]
    assert outcome["reason"] == ["failed_precondition"]
    assert "declined" in outcome["message"][0]
    unknown = await client.get("/v1/connect/myspace", headers=tenant.auth, allow_redirects=False)
    assert unknown.status == 400
    assert (await unknown.json())["errors"][0]["field"] == "platform"


async def test_a_callback_with_another_tenants_session_is_refused(client, make_tenant):
    one, two = await make_tenant("editor"), await make_tenant("editor")
    started = await client.post("/v1/connect/facebook", json={}, headers=one.auth)
    state = (await started.json())["state"]
    assert (await client.post("/v1/sessions", json={"api_key": two.key})).status == 201
    back = await client.get(f"/oauth/callback/facebook?state={state}&code=c", allow_redirects=False)
    assert parse_qs(urlsplit(back.headers["Location"]).query)["connect"] == ["error"]


async def test_reconnect_asks_for_the_same_account(client, make_tenant, world):
    tenant = await make_tenant("editor")
    connection = world.add_connection(tenant.id, "instagram", status=4)  # revoked
    link = await client.post(
        f"/v1/connections/{connection.id}/reconnect", json={}, headers=tenant.auth
    )
    body = await link.json()
    assert link.status == 200, body
    assert world.states[body["state"]].reconnect_connection_id == connection.id
    back = await client.get(
        f"/oauth/callback/instagram?state={body['state']}&code=c", allow_redirects=False
    )
    assert parse_qs(urlsplit(back.headers["Location"]).query)["connect"] == ["ok"]
    again = await (await client.get(f"/v1/connections/{connection.id}", headers=tenant.auth)).json()
    assert again["status"] == "healthy"


async def test_posts_jobs_approval_and_cancel(client, make_tenant, add_key, world):
    editor = await make_tenant("editor")
    admin = await add_key(editor, "admin")
    facebook = world.add_connection(editor.id, "facebook")
    linkedin = world.add_connection(editor.id, "linkedin")
    body = {
        "content": {
            "text": "Launch day",
            "media": [{"url": "https://cdn.example/a.jpg", "kind": "image"}],
        },
        "targets": [
            {"connection_id": facebook.id},
            {"connection_id": linkedin.id, "content": {"text": "Launch day on LinkedIn"}},
        ],
        "schedule": {"local": {"local_time": "2030-03-29T09:00:00", "time_zone": "Europe/Berlin"}},
        "requires_approval": True,
    }
    created = await client.post("/v1/posts", json=body, headers=creating(editor))
    post = (await created.json())["post"]
    assert created.status == 201, post
    assert post["status"] == "awaiting_approval"
    assert [j["platform"] for j in post["jobs"]] == ["facebook", "linkedin"]
    assert post["jobs"][1]["content"]["text"] == "Launch day on LinkedIn"
    assert post["content"]["media"][0]["kind"] == "image"
    assert post["created_by"] == f"key:{editor.key_id}"
    jobs = await (await client.get(f"/v1/jobs?post_id={post['id']}", headers=editor.auth)).json()
    assert len(jobs["items"]) == 2
    job = await (await client.get(f"/v1/jobs/{jobs['items'][0]['id']}", headers=editor.auth)).json()
    assert job["post_id"] == post["id"]
    approved = await client.post(f"/v1/posts/{post['id']}/approve", json={}, headers=admin.auth)
    assert (await approved.json())["status"] == "scheduled"
    cancelled = await client.post(f"/v1/posts/{post['id']}/cancel", headers=editor.auth)
    result = await cancelled.json()
    assert result["cancelled_count"] == 2
    assert result["post"]["status"] == "cancelled"
    again = await client.post(f"/v1/posts/{post['id']}/cancel", headers=editor.auth)
    assert again.status == 409
    listed = await (await client.get("/v1/posts?status=cancelled", headers=editor.auth)).json()
    assert [p["id"] for p in listed["items"]] == [post["id"]]
    bad_zone = dict(
        body, schedule={"local": {"local_time": "2030-03-29T09:00", "time_zone": "Mars/Olympus"}}
    )
    zone = await client.post("/v1/posts", json=bad_zone, headers=creating(editor))
    assert zone.status == 400
    assert (await zone.json())["errors"][0]["field"] == "schedule.local.time_zone"


async def test_validate_post_reports_each_target(client, make_tenant, world):
    tenant = await make_tenant("editor")
    instagram = world.add_connection(tenant.id, "instagram")
    answer = await client.post(
        "/v1/posts/validate",
        json={
            "content": {"text": "y" * 2500},
            "targets": [{"connection_id": instagram.id}, {"platform": "facebook"}],
        },
        headers=tenant.auth,
    )
    report = await answer.json()
    assert answer.status == 200, report
    assert report["valid"] is False
    assert [t["valid"] for t in report["targets"]] == [False, True]
    assert report["targets"][0]["violations"][0]["code"] == "text_too_long"


async def test_capabilities(client, make_tenant):
    tenant = await make_tenant("viewer")
    answer = await client.get("/v1/capabilities?platform=instagram", headers=tenant.auth)
    platforms = (await answer.json())["platforms"]
    assert [(p["platform"], p["max_text_length"]) for p in platforms] == [("instagram", 2200)]
    unknown = await client.get("/v1/capabilities?platform=friendster", headers=tenant.auth)
    assert unknown.status == 400
    assert (await unknown.json())["errors"][0]["field"] == "platform"


async def test_dead_letters_replay(client, make_tenant, world):
    tenant = await make_tenant("editor")
    dead = world.add_dead_letter(tenant.id, world.add_connection(tenant.id))
    listed = await (await client.get("/v1/dlq?category=transient", headers=tenant.auth)).json()
    assert [d["job"]["id"] for d in listed["items"]] == [dead.id]
    assert listed["items"][0]["job"]["last_error"]["category"] == "transient"
    replay = await client.post("/v1/dlq/replay", json={"job_ids": [dead.id]}, headers=tenant.auth)
    assert (await replay.json())["replayed_count"] == 1
    assert (await (await client.get("/v1/dlq", headers=tenant.auth)).json())["items"] == []
    both = await client.post(
        "/v1/dlq/replay", json={"job_ids": [dead.id], "filter": {}}, headers=tenant.auth
    )
    assert both.status == 400


async def test_outbound_endpoints(client, make_tenant):
    admin = await make_tenant("admin")
    headers = creating(admin)
    body = {"url": "https://hooks.example.com/in", "event_types": ["post.published"]}
    created = await client.post("/v1/webhook-endpoints", json=body, headers=headers)
    answer = await created.json()
    assert created.status == 201, answer
    secret = answer["signing_secret"]
    assert secret.startswith("whsec_")
    replay = await (await client.post("/v1/webhook-endpoints", json=body, headers=headers)).json()
    assert replay["signing_secret"] is None
    assert replay["endpoint"]["id"] == answer["endpoint"]["id"]
    endpoint_id = answer["endpoint"]["id"]
    listed = await client.get("/v1/webhook-endpoints", headers=admin.auth)
    assert secret not in await listed.text()
    local = await client.post(
        "/v1/webhook-endpoints", json={"url": "https://127.0.0.1/x"}, headers=creating(admin)
    )
    assert local.status == 400
    assert (await local.json())["errors"][0]["field"] == "url"
    disabled = await client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", json={"enabled": False}, headers=admin.auth
    )
    assert (await disabled.json())["state"] == "disabled"
    rotated = await (
        await client.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=admin.auth)
    ).json()
    assert rotated["signing_secret"] not in (secret, None)
    deleted = await client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=admin.auth)
    assert deleted.status == 204
    gone = await client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=admin.auth)
    assert gone.status == 404


async def test_inbound_webhook_keys(client, make_tenant):
    admin = await make_tenant("admin")
    created = await client.post(
        "/v1/webhook-inbound-keys", json={"platform": "mailchimp"}, headers=creating(admin)
    )
    key = await created.json()
    assert created.status == 201, key
    assert key["url_path"] == f"/webhooks/mailchimp/{key['path_key']}"
    assert (
        await client.delete(f"/v1/webhook-inbound-keys/{key['key_id']}", headers=admin.auth)
    ).status == 204
    assert (
        await client.delete(f"/v1/webhook-inbound-keys/{key['key_id']}", headers=admin.auth)
    ).status == 404


async def test_webhook_events_list_get_replay(client, make_tenant, add_key, world):
    admin = await make_tenant("admin")
    viewer = await add_key(admin, "viewer")
    event = world.add_webhook_event(admin.id, "tiktok")
    listed = await (
        await client.get("/v1/webhook-events?platform=tiktok", headers=viewer.auth)
    ).json()
    assert [e["id"] for e in listed["items"]] == [event.id]
    assert listed["items"][0]["body"] == ""
    full = await (
        await client.get(f"/v1/webhook-events/{event.id}?include_body=true", headers=viewer.auth)
    ).json()
    assert full["body"] == "eyJoZWxsbyI6IndvcmxkIn0="  # base64 of {"hello":"world"}
    refused = await client.post(
        "/v1/webhook-events/replay", json={"event_ids": [event.id]}, headers=viewer.auth
    )
    assert refused.status == 403
    replayed = await client.post(
        "/v1/webhook-events/replay", json={"event_ids": [event.id]}, headers=admin.auth
    )
    assert (await replayed.json())["replayed_count"] == 1


async def test_health_dashboard_and_notifications(client, make_tenant, world):
    tenant = await make_tenant("viewer")
    ids = world.seed_tenant(tenant.id)
    dashboard = await (
        await client.get("/v1/health/dashboard?timeframe_hours=24", headers=tenant.auth)
    ).json()
    assert dashboard["token_health"]["total"]["current"] == 1
    assert dashboard["timeframe"] == 86400
    assert len(dashboard["token_health"]["healthy"]["points"]) == 48
    too_far = await client.get("/v1/health/dashboard?timeframe_hours=1000", headers=tenant.auth)
    assert too_far.status == 400
    health = await (
        await client.get(f"/v1/connections/{ids['connection_id']}/health", headers=tenant.auth)
    ).json()
    assert health["status"] == "healthy"
    notes = await (
        await client.get("/v1/notifications?unread_only=true", headers=tenant.auth)
    ).json()
    assert notes["unread_count"] == 1
    marked = await client.post("/v1/notifications/read", json={"all": True}, headers=tenant.auth)
    assert (await marked.json())["marked_count"] == 1
    after = await (await client.get("/v1/notifications", headers=tenant.auth)).json()
    assert after["unread_count"] == 0
    alerts = await (await client.get("/v1/alerts?state=firing", headers=tenant.auth)).json()
    assert alerts["items"][0]["kind"] == "connection_attention"


async def test_feature_flags_rollout_and_overrides(client, make_tenant, add_key, pg_pool):
    admin = await make_tenant("admin")
    viewer = await add_key(admin, "viewer")
    suffix = uuid.uuid4().hex[:8]
    flags = FlagStore(pg_pool)
    names = {stage: f"{stage}-{suffix}" for stage in ("alpha", "beta", "stable", "off")}
    for stage, name in names.items():
        await flags.set_flag(FeatureFlag(name, "", stage, 10, f"{stage} feature"))
    await flags.set_flag(FeatureFlag(names["beta"], "tiktok", "beta", 100, "all of beta"))

    async def decisions(tenant, query=""):
        answer = await client.get(f"/v1/feature-flags{query}", headers=tenant.auth)
        return {
            (d["name"], d["integration"]): d
            for d in (await answer.json())["items"]
            if d["name"].endswith(suffix)
        }

    seen = await decisions(viewer)
    assert seen[(names["stable"], "")]["enabled"] is True
    assert seen[(names["alpha"], "")]["enabled"] is False
    assert seen[(names["off"], "")]["enabled"] is False
    expected_beta = rollout_bucket(names["beta"], "", admin.id) < 10
    assert seen[(names["beta"], "")]["enabled"] is expected_beta
    assert seen[(names["beta"], "tiktok")]["enabled"] is True
    only_linkedin = await decisions(viewer, "?integration=linkedin")
    assert (names["beta"], "tiktok") not in only_linkedin
    # Early access turns alpha on; an override wins over everything.
    await TenantStore(pg_pool).set_tenant_options(admin.id, rate_limit=None, early_access=True)
    refused = await client.put(
        f"/v1/feature-flags/{names['off']}/override", json={"enabled": True}, headers=viewer.auth
    )
    assert refused.status == 403
    on = await client.put(
        f"/v1/feature-flags/{names['off']}/override", json={"enabled": True}, headers=admin.auth
    )
    decided = await on.json()
    assert decided["enabled"] is True
    assert decided["reason"] == "override"
    cleared = await client.put(
        f"/v1/feature-flags/{names['off']}/override", json={"enabled": None}, headers=admin.auth
    )
    assert (await cleared.json())["enabled"] is False
    missing = await client.get("/v1/feature-flags/no-such-flag", headers=viewer.auth)
    assert missing.status == 404


async def test_early_access_turns_alpha_on(make_client, make_tenant, pg_pool):
    client = await make_client(auth_cache_seconds=0)
    tenant = await make_tenant("viewer")
    name = f"alpha-{uuid.uuid4().hex[:8]}"
    await FlagStore(pg_pool).set_flag(FeatureFlag(name, "", "alpha", 10, ""))
    before = await (await client.get(f"/v1/feature-flags/{name}", headers=tenant.auth)).json()
    assert before["enabled"] is False
    await TenantStore(pg_pool).set_tenant_options(tenant.id, rate_limit=None, early_access=True)
    after = await (await client.get(f"/v1/feature-flags/{name}", headers=tenant.auth)).json()
    assert after["enabled"] is True
    assert after["reason"] == "early_access"
