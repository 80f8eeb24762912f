"""Meta (Facebook Pages + Instagram) against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from postd_sandbox.testing import (
    REDIRECT_URI,
    authorize,
    consent_via_page,
    pkce_pair,
    posts,
    query_of,
    set_consent,
)

V = "v21.0"
AUTH = f"/meta/www/{V}/dialog/oauth"
GRAPH = f"/meta/graph/{V}"
CLIENT_ID = "dev-meta-client-id"
SECRET = "dev-meta-client-secret"
SCOPES = (
    "pages_show_list,pages_read_engagement,pages_manage_posts,read_insights,"
    "instagram_basic,instagram_content_publish,instagram_manage_insights"
)
COFFEE_PAGE = "200000000000001"
COFFEE_IG = "17841400000000001"


def auth_params(**extra: str) -> dict[str, str]:
    return {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "st-123",
        "scope": SCOPES,
        **extra,
    }


async def exchange(client: Any, code: str, **extra: str) -> Any:
    return await client.get(
        f"{GRAPH}/oauth/access_token",
        params={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "redirect_uri": REDIRECT_URI,
            "code": code,
            **extra,
        },
    )


async def connect(client: Any) -> dict[str, str]:
    """Full dance: consent -> code -> short-lived -> long-lived -> page tokens."""
    await set_consent(client, platform="meta")
    resp = await authorize(client, AUTH, auth_params())
    code = query_of(resp.headers["Location"])["code"]
    short = await (await exchange(client, code)).json()
    resp = await client.get(
        f"{GRAPH}/oauth/access_token",
        params={
            "grant_type": "fb_exchange_token",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "fb_exchange_token": short["access_token"],
        },
    )
    long = await resp.json()
    accounts = await (
        await client.get(f"{GRAPH}/me/accounts", params={"access_token": long["access_token"]})
    ).json()
    tokens = {p["id"]: p["access_token"] for p in accounts["data"]}
    return {"user": long["access_token"], **tokens}


async def test_oauth_round_trip_through_the_consent_page(client: Any) -> None:
    params = await consent_via_page(client, AUTH, auth_params())
    assert params["state"] == "st-123"
    resp = await exchange(client, params["code"])
    assert resp.status == 200
    short = await resp.json()
    assert short["token_type"] == "bearer"
    assert 0 < short["expires_in"] <= 2 * 3600
    resp = await client.get(
        f"{GRAPH}/oauth/access_token",
        params={
            "grant_type": "fb_exchange_token",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "fb_exchange_token": short["access_token"],
        },
    )
    long = await resp.json()
    assert long["expires_in"] > 50 * 86400
    me = await (
        await client.get(f"{GRAPH}/me", params={"access_token": long["access_token"]})
    ).json()
    assert me == {"id": "10000000000001", "name": "Sandbox Marketer"}
    accounts = await (
        await client.get(
            f"{GRAPH}/me/accounts",
            headers={"Authorization": f"Bearer {long['access_token']}"},
        )
    ).json()
    pages = {p["id"]: p for p in accounts["data"]}
    assert set(pages) == {"200000000000001", "200000000000002"}
    assert pages[COFFEE_PAGE]["instagram_business_account"] == {"id": COFFEE_IG}
    assert pages[COFFEE_PAGE]["access_token"]
    # Page tokens from a long-lived user token never expire.
    debug = await (
        await client.get(
            f"{GRAPH}/debug_token",
            params={
                "input_token": pages[COFFEE_PAGE]["access_token"],
                "access_token": f"{CLIENT_ID}|{SECRET}",
            },
        )
    ).json()
    assert debug["data"]["type"] == "PAGE"
    assert debug["data"]["expires_at"] == 0
    assert debug["data"]["is_valid"] is True


async def test_denied_consent_redirects_with_meta_error(client: Any) -> None:
    params = await consent_via_page(client, AUTH, auth_params(), decision="deny")
    assert params == {
        "error_reason": "user_denied",
        "error": "access_denied",
        "error_description": "Permissions error.",
        "state": "st-123",
    }


async def test_partial_grant_is_visible_in_permissions(client: Any) -> None:
    params = await consent_via_page(
        client,
        AUTH,
        auth_params(return_scopes="true"),
        scopes=["pages_show_list", "pages_read_engagement"],
    )
    assert params["granted_scopes"] == "pages_show_list,pages_read_engagement"
    assert "pages_manage_posts" in params["denied_scopes"]
    token = (await (await exchange(client, params["code"])).json())["access_token"]
    perms = await (
        await client.get(f"{GRAPH}/me/permissions", params={"access_token": token})
    ).json()
    status = {p["permission"]: p["status"] for p in perms["data"]}
    assert status["pages_show_list"] == "granted"
    assert status["pages_manage_posts"] == "declined"


async def test_authorize_refuses_unknown_client_and_unregistered_redirect(
    sandbox_client: Any,
) -> None:
    client = await sandbox_client(registered_redirect_uris=(REDIRECT_URI,))
    resp = await authorize(client, AUTH, auth_params(client_id="nope"))
    assert resp.status == 400
    assert "Location" not in resp.headers
    resp = await authorize(client, AUTH, auth_params(redirect_uri="https://evil.test/cb"))
    assert resp.status == 400
    assert "redirect_uri" in await resp.text()
    resp = await authorize(client, AUTH, auth_params(scope="pages_show_list,not_a_scope"))
    assert resp.status == 400


async def test_code_is_single_use_and_bound_to_redirect_uri(client: Any) -> None:
    await set_consent(client, platform="meta", times=2)
    code = query_of((await authorize(client, AUTH, auth_params())).headers["Location"])["code"]
    bad = await exchange(client, code, redirect_uri="https://app.postd.test/other")
    assert bad.status == 400
    assert (await bad.json())["error"]["error_subcode"] == 36008
    code = query_of((await authorize(client, AUTH, auth_params())).headers["Location"])["code"]
    assert (await exchange(client, code)).status == 200
    again = await exchange(client, code)
    body = await again.json()
    assert again.status == 400
    assert body["error"]["code"] == 100
    assert body["error"]["error_subcode"] == 36009
    assert body["error"]["fbtrace_id"]


async def test_pkce_is_verified(client: Any) -> None:
    verifier, challenge = pkce_pair()
    await set_consent(client, platform="meta", times=2)
    params = auth_params(code_challenge=challenge, code_challenge_method="S256")
    code = query_of((await authorize(client, AUTH, params)).headers["Location"])["code"]
    wrong = await exchange(client, code, code_verifier="not-the-verifier")
    assert wrong.status == 400
    code = query_of((await authorize(client, AUTH, params)).headers["Location"])["code"]
    right = await exchange(client, code, code_verifier=verifier)
    assert right.status == 200


async def test_auto_approve_redirects_straight_back(sandbox_client: Any) -> None:
    client = await sandbox_client(auto_approve=True)
    resp = await authorize(client, AUTH, auth_params())
    assert resp.status == 302
    params = query_of(resp.headers["Location"])
    assert params["state"] == "st-123"
    assert params["code"]


async def test_page_post_lookup_delete_and_usage_headers(client: Any) -> None:
    tokens = await connect(client)
    page_token = tokens[COFFEE_PAGE]
    resp = await client.post(
        f"{GRAPH}/{COFFEE_PAGE}/feed",
        data={"message": "Fresh beans today", "access_token": page_token},
    )
    assert resp.status == 200
    usage = json.loads(resp.headers["X-App-Usage"])
    assert set(usage) == {"call_count", "total_cputime", "total_time"}
    buc = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    assert buc[COFFEE_PAGE][0]["type"] == "pages"
    post_id = (await resp.json())["id"]
    assert post_id.startswith(COFFEE_PAGE + "_")
    node = await (
        await client.get(
            f"{GRAPH}/{post_id}",
            params={"fields": "id,message,created_time", "access_token": page_token},
        )
    ).json()
    assert node["message"] == "Fresh beans today"
    assert node["created_time"].endswith("+0000")
    recorded = await posts(client, platform="meta", text_contains="Fresh beans")
    assert len(recorded) == 1
    assert recorded[0]["account"] == COFFEE_PAGE
    # Posting the same status again is refused as a duplicate (code 506).
    dup = await client.post(
        f"{GRAPH}/{COFFEE_PAGE}/feed",
        data={"message": "Fresh beans today", "access_token": page_token},
    )
    assert (await dup.json())["error"]["code"] == 506
    deleted = await client.delete(f"{GRAPH}/{post_id}", params={"access_token": page_token})
    assert await deleted.json() == {"success": True}
    gone = await client.get(f"{GRAPH}/{post_id}", params={"access_token": page_token})
    body = await gone.json()
    assert body["error"]["code"] == 100
    assert body["error"]["error_subcode"] == 33


async def test_user_token_cannot_publish_to_a_page(client: Any) -> None:
    tokens = await connect(client)
    resp = await client.post(
        f"{GRAPH}/{COFFEE_PAGE}/feed",
        data={"message": "hi", "access_token": tokens["user"]},
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == 200


async def test_photo_post(client: Any) -> None:
    tokens = await connect(client)
    resp = await client.post(
        f"{GRAPH}/{COFFEE_PAGE}/photos",
        data={
            "url": "https://cdn.example.com/cup.jpg",
            "caption": "Latte art",
            "access_token": tokens[COFFEE_PAGE],
        },
    )
    body = await resp.json()
    assert set(body) == {"id", "post_id"}
    recorded = await posts(client, platform="meta", text_contains="Latte art")
    assert recorded[0]["media"] == ["https://cdn.example.com/cup.jpg"]


async def test_instagram_container_must_finish_before_publish(client: Any) -> None:
    tokens = await connect(client)
    token = tokens["user"]
    resp = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media",
        data={
            "image_url": "https://cdn.example.com/a.jpg",
            "caption": "Morning #coffee",
            "access_token": token,
        },
    )
    container = (await resp.json())["id"]
    status = await (
        await client.get(
            f"{GRAPH}/{container}", params={"fields": "status_code", "access_token": token}
        )
    ).json()
    assert status == {"status_code": "IN_PROGRESS", "id": container}
    early = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media_publish",
        data={"creation_id": container, "access_token": token},
    )
    err = (await early.json())["error"]
    assert (err["code"], err["error_subcode"]) == (9007, 2207027)
    await asyncio.sleep(0.2)
    status = await (
        await client.get(
            f"{GRAPH}/{container}", params={"fields": "status_code", "access_token": token}
        )
    ).json()
    assert status["status_code"] == "FINISHED"
    published = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media_publish",
        data={"creation_id": container, "access_token": token},
    )
    media_id = (await published.json())["id"]
    media = await (
        await client.get(
            f"{GRAPH}/{media_id}",
            params={"fields": "caption,media_type,permalink", "access_token": token},
        )
    ).json()
    assert media["caption"] == "Morning #coffee"
    assert media["media_type"] == "IMAGE"
    status = await (
        await client.get(
            f"{GRAPH}/{container}", params={"fields": "status_code", "access_token": token}
        )
    ).json()
    assert status["status_code"] == "PUBLISHED"
    limit = await (
        await client.get(
            f"{GRAPH}/{COFFEE_IG}/content_publishing_limit",
            params={"fields": "quota_usage,config", "access_token": token},
        )
    ).json()
    assert limit["data"][0]["quota_usage"] == 1
    assert limit["data"][0]["config"]["quota_duration"] == 86400


async def test_instagram_carousel_and_failed_container(client: Any) -> None:
    token = (await connect(client))["user"]
    children = []
    for i in range(3):
        resp = await client.post(
            f"{GRAPH}/{COFFEE_IG}/media",
            data={
                "image_url": f"https://cdn.example.com/{i}.jpg",
                "is_carousel_item": "true",
                "access_token": token,
            },
        )
        children.append((await resp.json())["id"])
    resp = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media",
        data={
            "media_type": "CAROUSEL",
            "children": ",".join(children),
            "caption": "Three cups",
            "access_token": token,
        },
    )
    carousel = (await resp.json())["id"]
    await asyncio.sleep(0.2)
    published = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media_publish",
        data={"creation_id": carousel, "access_token": token},
    )
    assert published.status == 200
    recorded = await posts(client, platform="meta", account=COFFEE_IG)
    assert recorded[0]["kind"] == "ig_carousel"
    assert len(recorded[0]["media"]) == 3

    too_many = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media",
        data={"media_type": "CAROUSEL", "children": children[0], "access_token": token},
    )
    assert (await too_many.json())["error"]["code"] == 100

    resp = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media",
        data={"image_url": "https://cdn.example.com/sandbox_error.jpg", "access_token": token},
    )
    broken = (await resp.json())["id"]
    await asyncio.sleep(0.2)
    status = await (
        await client.get(
            f"{GRAPH}/{broken}", params={"fields": "status_code", "access_token": token}
        )
    ).json()
    assert status["status_code"] == "ERROR"
    failed = await client.post(
        f"{GRAPH}/{COFFEE_IG}/media_publish",
        data={"creation_id": broken, "access_token": token},
    )
    assert (await failed.json())["error"]["error_subcode"] == 2207052


async def test_expired_and_revoked_tokens_give_code_190(client: Any) -> None:
    tokens = await connect(client)
    await client.post(
        "/_sandbox/tokens/expire", json={"platform": "meta", "access_token": tokens["user"]}
    )
    resp = await client.get(f"{GRAPH}/me", params={"access_token": tokens["user"]})
    err = (await resp.json())["error"]
    assert (err["code"], err["error_subcode"]) == (190, 463)
    assert "WWW-Authenticate" in resp.headers
    await client.post("/_sandbox/tokens/revoke", json={"platform": "meta", "account": COFFEE_PAGE})
    resp = await client.get(f"{GRAPH}/me", params={"access_token": tokens[COFFEE_PAGE]})
    err = (await resp.json())["error"]
    assert (err["code"], err["error_subcode"]) == (190, 460)
    resp = await client.get(f"{GRAPH}/me", params={"access_token": "garbage"})
    assert (await resp.json())["error"]["code"] == 190


async def test_insights_grow_with_time(client: Any) -> None:
    tokens = await connect(client)
    page_token = tokens[COFFEE_PAGE]
    post_id = (
        await (
            await client.post(
                f"{GRAPH}/{COFFEE_PAGE}/feed",
                data={"message": "Insightful", "access_token": page_token},
            )
        ).json()
    )["id"]

    async def impressions() -> int:
        resp = await client.get(
            f"{GRAPH}/{post_id}/insights",
            params={"metric": "post_impressions,post_clicks", "access_token": page_token},
        )
        body = await resp.json()
        assert body["data"][0]["name"] == "post_impressions"
        value: int = body["data"][0]["values"][0]["value"]
        return value

    first = await impressions()
    await client.post("/_sandbox/clock", json={"advance_seconds": 6 * 3600})
    later = await impressions()
    assert later > first
    page = await (
        await client.get(
            f"{GRAPH}/{COFFEE_PAGE}/insights",
            params={"metric": "page_impressions", "period": "day", "access_token": page_token},
        )
    ).json()
    assert len(page["data"][0]["values"]) == 2


async def test_app_usage_follows_the_configured_allowance(sandbox_client: Any) -> None:
    client = await sandbox_client(meta_app_calls_per_hour=4)
    page_token = (await connect(client))[COFFEE_PAGE]
    seen = []
    for n in range(3):
        resp = await client.post(
            f"{GRAPH}/{COFFEE_PAGE}/feed",
            data={"message": f"Allowance post {n}", "access_token": page_token},
        )
        assert resp.status == 200
        seen.append(json.loads(resp.headers["X-App-Usage"])["call_count"])
    # The calls connect() made count too; the share climbs to 100 % of four calls.
    assert seen[-1] == 100
    assert seen == sorted(seen)
    # An hour later the window is empty again.
    await client.post("/_sandbox/clock", json={"advance_seconds": 3601})
    resp = await client.get(f"{GRAPH}/{COFFEE_PAGE}", params={"access_token": page_token})
    assert json.loads(resp.headers["X-App-Usage"])["call_count"] == 25
