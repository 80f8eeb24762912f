"""Analytics: deterministic per post, growing with age, the same through every door
(the platform's own endpoint and `/_sandbox/metrics/{id}`); webhook handshakes."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from postd_sandbox import metrics
from postd_sandbox.platforms.linkedin import active_versions
from postd_sandbox.testing import REDIRECT_URI, authorize, query_of, set_consent


async def sandbox_metrics(client: Any, post_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (
        await client.get(f"/_sandbox/metrics/{quote(post_id, safe='')}")
    ).json()
    return body


def test_growth_is_deterministic_and_monotonic() -> None:
    values = [metrics.cumulative("post-1", "impressions", h * 3600) for h in range(0, 72, 6)]
    assert values == sorted(values)
    assert values[0] == 0
    assert values[-1] > 0
    assert metrics.cumulative("post-1", "likes", 7200) == metrics.cumulative(
        "post-1", "likes", 7200
    )
    assert metrics.cumulative("post-1", "impressions", 86400) != metrics.cumulative(
        "post-2", "impressions", 86400
    )
    total = metrics.cumulative("post-1", "impressions", 86400)
    daily = metrics.between("post-1", "impressions", 0, 43200) + metrics.between(
        "post-1", "impressions", 43200, 86400
    )
    assert abs(total - daily) <= 1


async def test_meta_insights_match_the_prediction(client: Any) -> None:
    await set_consent(client, platform="meta")
    resp = await authorize(
        client,
        "/meta/www/v21.0/dialog/oauth",
        {
            "client_id": "dev-meta-client-id",
            "redirect_uri": REDIRECT_URI,
            "scope": "pages_show_list,pages_manage_posts,read_insights",
        },
    )
    code = query_of(resp.headers["Location"])["code"]
    user = await (
        await client.get(
            "/meta/graph/v21.0/oauth/access_token",
            params={
                "client_id": "dev-meta-client-id",
                "client_secret": "dev-meta-client-secret",
                "redirect_uri": REDIRECT_URI,
                "code": code,
            },
        )
    ).json()
    pages = await (
        await client.get(
            "/meta/graph/v21.0/me/accounts", params={"access_token": user["access_token"]}
        )
    ).json()
    page_token = pages["data"][0]["access_token"]
    post_id = (
        await (
            await client.post(
                "/meta/graph/v21.0/200000000000001/feed",
                data={"message": "metrics please", "access_token": page_token},
            )
        ).json()
    )["id"]
    # Page tokens from a short-lived user token live as long as it does (2 hours).
    await client.post("/_sandbox/clock", json={"advance_seconds": 3600})
    insights = await (
        await client.get(
            f"/meta/graph/v21.0/{post_id}/insights",
            params={"metric": "post_impressions,post_clicks", "access_token": page_token},
        )
    ).json()
    assert "data" in insights, insights
    by_name = {d["name"]: d["values"][0]["value"] for d in insights["data"]}
    expected = (await sandbox_metrics(client, post_id))["metrics"]
    assert by_name["post_impressions"] == expected["impressions"] > 0
    assert by_name["post_clicks"] == expected["clicks"]


async def test_linkedin_social_actions_and_stats_agree(client: Any) -> None:
    await set_consent(client, platform="linkedin")
    resp = await authorize(
        client,
        "/linkedin/www/oauth/v2/authorization",
        {
            "response_type": "code",
            "client_id": "dev-linkedin-client-id",
            "redirect_uri": REDIRECT_URI,
            "scope": "w_member_social w_organization_social rw_organization_admin",
        },
    )
    code = query_of(resp.headers["Location"])["code"]
    token = (
        await (
            await client.post(
                "/linkedin/www/oauth/v2/accessToken",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": REDIRECT_URI,
                    "client_id": "dev-linkedin-client-id",
                    "client_secret": "dev-linkedin-client-secret",
                },
            )
        ).json()
    )["access_token"]
    headers = {
        "Authorization": f"Bearer {token}",
        "LinkedIn-Version": active_versions(time.time())[0],
        "X-Restli-Protocol-Version": "2.0.0",
    }
    created = await client.post(
        "/linkedin/api/rest/posts",
        json={
            "author": "urn:li:organization:90000001",
            "commentary": "stats",
            "visibility": "PUBLIC",
            "distribution": {"feedDistribution": "MAIN_FEED"},
            "lifecycleState": "PUBLISHED",
        },
        headers=headers,
    )
    urn = created.headers["x-restli-id"]
    await client.post("/_sandbox/clock", json={"advance_seconds": 24 * 3600})
    social = await (
        await client.get(f"/linkedin/api/rest/socialActions/{quote(urn, safe='')}", headers=headers)
    ).json()
    assert "likesSummary" in social, social
    expected = (await sandbox_metrics(client, urn))["metrics"]
    assert social["likesSummary"]["totalLikes"] == expected["likes"], social
    stats = await (
        await client.get(
            "/linkedin/api/rest/organizationalEntityShareStatistics",
            params={
                "q": "organizationalEntity",
                "organizationalEntity": "urn:li:organization:90000001",
                "shares": f"List({urn})",
            },
            headers=headers,
        )
    ).json()
    assert (
        stats["elements"][0]["totalShareStatistics"]["impressionCount"] == expected["impressions"]
    )


async def test_metrics_are_the_same_in_two_sandboxes(sandbox_client: Any) -> None:
    # Same post id and age -> same numbers, whichever sandbox process computes them.
    a = metrics.cumulative("urn:li:share:1", "impressions", 3600)
    b = metrics.cumulative("urn:li:share:1", "impressions", 3600)
    assert a == b
    client = await sandbox_client()
    assert (await client.get("/_sandbox/metrics/unknown")).status == 404


async def test_handshakes(client: Any, aiohttp_server: Any) -> None:
    async def meta_endpoint(request: web.Request) -> web.Response:
        if request.query.get("hub.verify_token") != "dev-meta-verify-token":
            return web.Response(status=403)
        return web.Response(text=request.query["hub.challenge"])

    async def linkedin_endpoint(request: web.Request) -> web.Response:
        code = request.query["challengeCode"]
        answer = hmac.new(b"dev-linkedin-client-secret", code.encode(), hashlib.sha256).hexdigest()
        return web.json_response({"challengeCode": code, "challengeResponse": answer})

    async def wrong_endpoint(request: web.Request) -> web.Response:
        return web.json_response({"challengeCode": "x", "challengeResponse": "y"})

    app = web.Application()
    app.router.add_get("/meta", meta_endpoint)
    app.router.add_get("/linkedin", linkedin_endpoint)
    app.router.add_get("/wrong", wrong_endpoint)
    server = await aiohttp_server(app)

    async def shake(platform: str, path: str) -> dict[str, Any]:
        resp = await client.post(
            "/_sandbox/webhooks/handshake",
            json={"platform": platform, "url": str(server.make_url(path))},
        )
        body: dict[str, Any] = await resp.json()
        return body

    assert (await shake("meta", "/meta"))["ok"] is True
    assert (await shake("linkedin", "/linkedin"))["ok"] is True
    assert (await shake("linkedin", "/wrong"))["ok"] is False
    resp = await client.post(
        "/_sandbox/webhooks/handshake", json={"platform": "tiktok", "url": "http://x.test/"}
    )
    assert resp.status == 400


def test_pictures_draw_more_interactions_but_not_more_reach() -> None:
    age = 3 * 86400.0
    for post in ("p-1", "p-2", "p-3"):
        text = metrics.cumulative(post, "engagements", age, kind="page_feed")
        photo = metrics.cumulative(post, "engagements", age, kind="page_photo")
        assert photo > text
        assert abs(photo / text - metrics.KIND_INTERACTION_FACTOR["page_photo"]) < 0.05
        assert metrics.cumulative(post, "impressions", age, kind="page_photo") == (
            metrics.cumulative(post, "impressions", age, kind="page_feed")
        )
