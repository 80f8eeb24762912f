"""Mailchimp and Slack (OAuth + Web API) against the sandbox over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from postd_sandbox.testing import REDIRECT_URI, add_fault, consent_via_page, posts

MC_AUTH = "/mailchimp/login/oauth2/authorize"
MC_TOKEN = "/mailchimp/login/oauth2/token"
MC_ID = "dev-mailchimp-client-id"
MC_SECRET = "dev-mailchimp-client-secret"


async def mailchimp_connect(client: Any) -> tuple[str, str]:
    params = await consent_via_page(
        client,
        MC_AUTH,
        {
            "response_type": "code",
            "client_id": MC_ID,
            "redirect_uri": REDIRECT_URI,
            "state": "mc",
        },
    )
    assert params["state"] == "mc"
    resp = await client.post(
        MC_TOKEN,
        data={
            "grant_type": "authorization_code",
            "client_id": MC_ID,
            "client_secret": MC_SECRET,
            "redirect_uri": REDIRECT_URI,
            "code": params["code"],
        },
    )
    tokens = await resp.json()
    assert tokens["expires_in"] == 0
    assert tokens["scope"] is None
    assert "refresh_token" not in tokens
    meta = await (
        await client.get(
            "/mailchimp/login/oauth2/metadata",
            headers={"Authorization": f"OAuth {tokens['access_token']}"},
        )
    ).json()
    assert meta["dc"] == "us21"
    assert meta["accountname"] == "Sandbox Coffee Co"
    api = meta["api_endpoint"]
    assert api.endswith("/mailchimp/api/us21")
    path = "/" + api.split("://", 1)[1].split("/", 1)[1] + "/3.0"
    return tokens["access_token"], path


async def test_mailchimp_campaign_flow(client: Any) -> None:
    token, base = await mailchimp_connect(client)
    auth = {"Authorization": f"Bearer {token}"}
    ping = await (await client.get(f"{base}/ping", headers=auth)).json()
    assert ping == {"health_status": "Everything's Chimpy!"}
    wrong_dc = await client.get("/mailchimp/api/us6/3.0/ping", headers=auth)
    assert wrong_dc.status == 401
    assert wrong_dc.content_type == "application/problem+json"
    problem = await wrong_dc.json()
    assert problem["title"] == "API Key Invalid"
    assert problem["instance"]
    lists = await (await client.get(f"{base}/lists", headers=auth)).json()
    list_id = lists["lists"][0]["id"]
    assert lists["total_items"] == 2
    bad = await client.post(
        f"{base}/campaigns",
        json={"type": "regular", "recipients": {"list_id": "nope"}},
        headers=auth,
    )
    body = await bad.json()
    assert bad.status == 400
    assert body["errors"][0]["field"] == "recipients.list_id"
    created = await (
        await client.post(
            f"{base}/campaigns",
            json={
                "type": "regular",
                "recipients": {"list_id": list_id},
                "settings": {
                    "subject_line": "Autumn blend is here",
                    "from_name": "Sandbox Coffee",
                    "reply_to": "hello@example.com",
                    "title": "Autumn CTA",
                },
            },
            headers=auth,
        )
    ).json()
    cid = created["id"]
    assert created["status"] == "save"
    not_ready = await client.post(f"{base}/campaigns/{cid}/actions/send", headers=auth)
    assert (await not_ready.json())["detail"] == "Your Campaign is not ready to send."
    content = await client.put(
        f"{base}/campaigns/{cid}/content", json={"html": "<p>Try it</p>"}, headers=auth
    )
    assert (await content.json())["plain_text"] == "Try it"
    quarter = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=1)
    off_quarter = quarter.replace(minute=7)
    resp = await client.post(
        f"{base}/campaigns/{cid}/actions/schedule",
        json={"schedule_time": off_quarter.isoformat()},
        headers=auth,
    )
    assert resp.status == 400
    on_quarter = quarter.replace(minute=15)
    resp = await client.post(
        f"{base}/campaigns/{cid}/actions/schedule",
        json={"schedule_time": on_quarter.isoformat()},
        headers=auth,
    )
    assert resp.status == 204
    assert (await posts(client, platform="mailchimp"))[0]["status"] == "scheduled"
    assert (
        await client.post(f"{base}/campaigns/{cid}/actions/unschedule", headers=auth)
    ).status == 204
    assert (await client.get(f"{base}/reports/{cid}", headers=auth)).status == 404
    assert (await client.post(f"{base}/campaigns/{cid}/actions/send", headers=auth)).status == 204
    again = await client.post(f"{base}/campaigns/{cid}/actions/send", headers=auth)
    assert again.status == 400
    await client.post("/_sandbox/clock", json={"advance_seconds": 6 * 3600})
    report = await (await client.get(f"{base}/reports/{cid}", headers=auth)).json()
    assert report["emails_sent"] == 1200
    assert 0 < report["opens"]["unique_opens"] < 1200
    campaign = await (await client.get(f"{base}/campaigns/{cid}", headers=auth)).json()
    assert campaign["status"] == "sent"
    recorded = await posts(client, platform="mailchimp", text_contains="Autumn blend")
    assert recorded[0]["status"] == "sent"


async def test_mailchimp_token_revocation_and_faults(client: Any) -> None:
    token, base = await mailchimp_connect(client)
    auth = {"Authorization": f"Bearer {token}"}
    await add_fault(client, platform="mailchimp", kind="rate_limit", retry_after=5)
    limited = await client.get(f"{base}/ping", headers=auth)
    assert limited.status == 429
    assert (await limited.json())["title"] == "Too Many Requests"
    await client.post(
        "/_sandbox/tokens/revoke", json={"platform": "mailchimp", "access_token": token}
    )
    revoked = await client.get(f"{base}/ping", headers=auth)
    assert revoked.status == 401


async def test_mailchimp_webhooks_are_form_encoded(client: Any, receiver: Any) -> None:
    recv, server = receiver
    url = str(server.make_url("/mc/secret-path"))
    await client.post(
        "/_sandbox/webhooks/send", json={"platform": "mailchimp", "url": url, "event": "validate"}
    )
    assert recv.requests[-1]["method"] == "GET"
    await client.post(
        "/_sandbox/webhooks/send",
        json={"platform": "mailchimp", "url": url, "event": "unsubscribe", "account": "a1b2c3d4e5"},
    )
    got = recv.requests[-1]
    assert got["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(got["body"].decode()).items()}
    assert form["type"] == "unsubscribe"
    assert form["data[list_id]"] == "a1b2c3d4e5"


async def test_slack_oauth_and_post_message(client: Any) -> None:
    params = await consent_via_page(
        client,
        "/slack/oauth/v2/authorize",
        {
            "client_id": "dev-slack-client-id",
            "scope": "chat:write,incoming-webhook",
            "redirect_uri": REDIRECT_URI,
            "state": "sl",
        },
    )
    resp = await client.post(
        "/slack/api/oauth.v2.access",
        data={
            "client_id": "dev-slack-client-id",
            "client_secret": "dev-slack-client-secret",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
        },
    )
    body = await resp.json()
    assert body["ok"] is True
    assert body["token_type"] == "bot"
    hook = body["incoming_webhook"]["url"]
    hook_path = "/" + hook.split("://", 1)[1].split("/", 1)[1]
    assert (await client.post(hook_path, json={"text": "from oauth hook"})).status == 200
    posted = await (
        await client.post(
            "/slack/api/chat.postMessage",
            json={"channel": "#postd-alerts", "text": "Approve this post?"},
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
    ).json()
    assert posted["ok"] is True
    assert posted["channel"] == "C0ALERTS01"
    bad = await (
        await client.post(
            "/slack/api/chat.postMessage",
            json={"channel": "#postd-alerts", "text": "x"},
            headers={"Authorization": "Bearer xoxb-wrong"},
        )
    ).json()
    assert bad == {"ok": False, "error": "invalid_auth"}
    msgs = await (await client.get("/_sandbox/slack/messages")).json()
    assert msgs["count"] == 2
