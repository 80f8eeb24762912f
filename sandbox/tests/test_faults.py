"""Every fault kind, aimed through the control API, seen over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from postd_sandbox.platforms.linkedin import active_versions
from postd_sandbox.testing import REDIRECT_URI, add_fault, authorize, posts, query_of, set_consent

V = "v21.0"
GRAPH = f"/meta/graph/{V}"
PAGE = "200000000000001"
OTHER_PAGE = "200000000000002"
LI_API = "/linkedin/api"


async def meta_page_tokens(client: Any) -> dict[str, str]:
    await set_consent(
        client, platform="meta", scopes=["pages_show_list", "pages_manage_posts", "read_insights"]
    )
    resp = await authorize(
        client,
        f"/meta/www/{V}/dialog/oauth",
        {
            "client_id": "dev-meta-client-id",
            "redirect_uri": REDIRECT_URI,
            "scope": "pages_show_list,pages_manage_posts,read_insights",
        },
    )
    code = query_of(resp.headers["Location"])["code"]
    token = await (
        await client.get(
            f"{GRAPH}/oauth/access_token",
            params={
                "client_id": "dev-meta-client-id",
                "client_secret": "dev-meta-client-secret",
                "redirect_uri": REDIRECT_URI,
                "code": code,
            },
        )
    ).json()
    accounts = await (
        await client.get(f"{GRAPH}/me/accounts", params={"access_token": token["access_token"]})
    ).json()
    return {p["id"]: p["access_token"] for p in accounts["data"]}


async def feed_post(client: Any, token: str, text: str, page: str = PAGE) -> Any:
    return await client.post(f"{GRAPH}/{page}/feed", data={"message": text, "access_token": token})


async def linkedin_token(client: Any) -> str:
    await set_consent(client, platform="linkedin")
    resp = await authorize(
        client,
        "/linkedin/www/oauth/v2/authorization",
        {
            "response_type": "code",
            "client_id": "dev-linkedin-client-id",
            "redirect_uri": REDIRECT_URI,
            "scope": "w_member_social profile",
        },
    )
    code = query_of(resp.headers["Location"])["code"]
    body = await (
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
    token: str = body["access_token"]
    return token


async def test_rate_limit_uses_platform_body_and_retry_after(client: Any) -> None:
    tokens = await meta_page_tokens(client)
    await add_fault(client, platform="meta", account=PAGE, kind="rate_limit", retry_after=30)
    resp = await feed_post(client, tokens[PAGE], "throttled")
    body = await resp.json()
    assert body["error"]["code"] == 4
    assert body["error"]["is_transient"] is True
    assert resp.headers["Retry-After"] == "30"
    assert '"call_count": 100' in resp.headers["X-App-Usage"]
    assert '"estimated_time_to_regain_access": 1' in resp.headers["X-Business-Use-Case-Usage"]
    # times defaults to 1: the next call goes through, and nothing was recorded before.
    assert (await feed_post(client, tokens[PAGE], "throttled")).status == 200
    assert len(await posts(client, text_contains="throttled")) == 1

    li = await linkedin_token(client)
    await add_fault(client, platform="linkedin", kind="rate_limit")
    resp = await client.get(f"{LI_API}/v2/userinfo", headers={"Authorization": f"Bearer {li}"})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    assert (await resp.json())["status"] == 429


async def test_faults_aim_at_one_account_and_one_path(client: Any) -> None:
    tokens = await meta_page_tokens(client)
    await add_fault(
        client, platform="meta", account=PAGE, kind="server_error", times=-1, path_contains="/feed"
    )
    other = await feed_post(client, tokens[OTHER_PAGE], "other page", page=OTHER_PAGE)
    assert other.status == 200
    for _ in range(3):
        resp = await feed_post(client, tokens[PAGE], "still failing")
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == 2
    node = await client.get(f"{GRAPH}/{PAGE}", params={"access_token": tokens[PAGE]})
    assert node.status == 200
    listed = await (await client.get("/_sandbox/faults")).json()
    assert listed["faults"][0]["hits"] == 3
    await client.delete("/_sandbox/faults")
    assert (await feed_post(client, tokens[PAGE], "recovered")).status == 200


async def test_outage_answers_503_everywhere(client: Any) -> None:
    await add_fault(client, platform="linkedin", kind="outage", times=-1)
    resp = await client.post(
        "/linkedin/www/oauth/v2/accessToken", data={"grant_type": "authorization_code"}
    )
    assert resp.status == 503
    resp = await client.get(f"{LI_API}/v2/userinfo")
    assert resp.status == 503
    # Other platforms are unaffected.
    assert (await client.get(f"{GRAPH}/me")).status == 400


async def test_token_faults_and_permission_removed(client: Any) -> None:
    li = await linkedin_token(client)
    headers = {"Authorization": f"Bearer {li}"}
    await add_fault(client, platform="linkedin", kind="token_expired")
    body = await (await client.get(f"{LI_API}/v2/userinfo", headers=headers)).json()
    assert body["code"] == "EXPIRED_ACCESS_TOKEN"
    assert body["status"] == 401
    await add_fault(client, platform="linkedin", kind="token_revoked")
    body = await (await client.get(f"{LI_API}/v2/userinfo", headers=headers)).json()
    assert body["serviceErrorCode"] == 65601
    await add_fault(client, platform="linkedin", kind="permission_removed")
    resp = await client.get(f"{LI_API}/v2/userinfo", headers=headers)
    assert resp.status == 403
    # Faults are one-shot by default: the token itself is still fine.
    assert (await client.get(f"{LI_API}/v2/userinfo", headers=headers)).status == 200

    tokens = await meta_page_tokens(client)
    await add_fault(client, platform="meta", account=PAGE, kind="token_expired")
    err = (await (await feed_post(client, tokens[PAGE], "x")).json())["error"]
    assert (err["code"], err["error_subcode"]) == (190, 463)


async def test_platform_error_kind_picks_any_catalogued_error(client: Any) -> None:
    tokens = await meta_page_tokens(client)
    await add_fault(client, platform="meta", kind="platform_error", error="meta_blocked")
    err = (await (await feed_post(client, tokens[PAGE], "spammy")).json())["error"]
    assert err["code"] == 368


async def test_slow_then_normal(client: Any) -> None:
    tokens = await meta_page_tokens(client)
    await add_fault(client, platform="meta", kind="slow", delay_ms=300)
    started = time.monotonic()
    resp = await feed_post(client, tokens[PAGE], "slowly")
    assert resp.status == 200
    assert time.monotonic() - started >= 0.3


async def test_timeout_outlasts_the_client(client: Any) -> None:
    tokens = await meta_page_tokens(client)
    await add_fault(client, platform="meta", kind="timeout")
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            f"{GRAPH}/{PAGE}/feed",
            data={"message": "never answered", "access_token": tokens[PAGE]},
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    assert await posts(client, text_contains="never answered") == []


async def test_lost_response_records_the_post_but_drops_the_connection(client: Any) -> None:
    tokens = await meta_page_tokens(client)
    await add_fault(client, platform="meta", account=PAGE, kind="lost_response")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await feed_post(client, tokens[PAGE], "did it post?")
    recorded = await posts(client, platform="meta", text_contains="did it post?")
    assert len(recorded) == 1

    li = await linkedin_token(client)
    await add_fault(client, platform="linkedin", kind="lost_response", path_contains="/rest/posts")
    headers = {
        "Authorization": f"Bearer {li}",
        "LinkedIn-Version": active_versions(time.time())[0],
        "X-Restli-Protocol-Version": "2.0.0",
    }
    body = {
        "author": "urn:li:person:SbxM1mbr01",
        "commentary": "lost on the way back",
        "visibility": "PUBLIC",
        "distribution": {"feedDistribution": "MAIN_FEED"},
        "lifecycleState": "PUBLISHED",
    }
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post(f"{LI_API}/rest/posts", json=body, headers=headers)
    # A blind retry is refused as a duplicate naming the post that was created.
    retry = await client.post(f"{LI_API}/rest/posts", json=body, headers=headers)
    assert retry.status == 422
    recorded = await posts(client, platform="linkedin", text_contains="lost on the way")
    assert len(recorded) == 1
    assert recorded[0]["id"] in (await retry.json())["message"]


async def test_bad_fault_requests_are_refused(client: Any) -> None:
    resp = await client.post("/_sandbox/faults", json={"platform": "nope", "kind": "outage"})
    assert resp.status == 400
    resp = await client.post("/_sandbox/faults", json={"platform": "meta", "kind": "meltdown"})
    assert resp.status == 400
    resp = await client.post("/_sandbox/faults", json={"platform": "meta", "kind": "slow"})
    assert resp.status == 400


async def test_probability_applies_a_fault_to_a_share_of_requests(client: Any) -> None:
    token = (await meta_page_tokens(client))[PAGE]
    await add_fault(client, platform="meta", kind="server_error", times=-1, probability=0.25)
    statuses = [(await feed_post(client, token, f"Share {n}")).status for n in range(200)]
    failed = sum(1 for s in statuses if s >= 500)
    # Binomial(200, 0.25): 50 expected; these bounds fail about once in a million runs.
    assert 20 <= failed <= 85, failed
    assert sum(1 for s in statuses if s == 200) == 200 - failed
    listed = await (await client.get("/_sandbox/faults")).json()
    assert listed["faults"][0]["probability"] == 0.25
    assert listed["faults"][0]["hits"] == failed


@pytest.mark.parametrize("probability", [0, -0.5, 1.5, "half", True])
async def test_bad_probability_is_refused(client: Any, probability: Any) -> None:
    resp = await client.post(
        "/_sandbox/faults",
        json={"platform": "meta", "kind": "server_error", "probability": probability},
    )
    assert resp.status == 400
