"""LinkedIn against the sandbox over real HTTP."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import jwt

from postd_sandbox.platforms.linkedin import active_versions
from postd_sandbox.testing import REDIRECT_URI, authorize, consent_via_page, posts, query_of

AUTH = "/linkedin/www/oauth/v2/authorization"
TOKEN = "/linkedin/www/oauth/v2/accessToken"
API = "/linkedin/api"
CLIENT_ID = "dev-linkedin-client-id"
SECRET = "dev-linkedin-client-secret"
MEMBER = "SbxM1mbr01"
ORG = "urn:li:organization:90000001"
SCOPES = "openid profile email w_member_social w_organization_social rw_organization_admin"


def auth_params(**extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "li-state",
        "scope": SCOPES,
        **extra,
    }


async def exchange(client: Any, code: str, **extra: str) -> Any:
    return await client.post(
        TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            **extra,
        },
    )


def rest_headers(token: str, version: str | None = None) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "LinkedIn-Version": version or active_versions(time.time())[1],
        "X-Restli-Protocol-Version": "2.0.0",
    }


async def connect(client: Any) -> dict[str, Any]:
    params = await consent_via_page(client, AUTH, auth_params())
    resp = await exchange(client, params["code"])
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def post_body(author: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "author": author,
        "commentary": text,
        "visibility": "PUBLIC",
        "distribution": {
            "feedDistribution": "MAIN_FEED",
            "targetEntities": [],
            "thirdPartyDistributionChannels": [],
        },
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": False,
        **extra,
    }


async def test_oauth_round_trip_and_userinfo(client: Any) -> None:
    tokens = await connect(client)
    assert tokens["expires_in"] == 60 * 86400
    assert tokens["scope"] == SCOPES.replace(" ", ",")
    assert "refresh_token" not in tokens  # not a partner app
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["sub"] == MEMBER
    assert claims["iss"] == "https://www.linkedin.com/oauth"
    jwks = await (await client.get("/linkedin/www/oauth/openid/jwks")).json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    jwt.decode(tokens["id_token"], key, algorithms=["RS256"], audience=CLIENT_ID)
    info = await (
        await client.get(
            f"{API}/v2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    ).json()
    assert info["sub"] == MEMBER
    assert info["email"] == "marketer@example.com"


async def test_denial_and_bad_code(client: Any) -> None:
    params = await consent_via_page(client, AUTH, auth_params(), decision="deny")
    assert params["error"] == "user_cancelled_authorize"
    assert params["state"] == "li-state"
    bad = await exchange(client, "not-a-code")
    assert bad.status == 400
    assert (await bad.json())["error"] == "invalid_request"
    wrong_secret = await client.post(
        TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID,
            "client_secret": "wrong",
        },
    )
    assert wrong_secret.status == 401
    assert (await wrong_secret.json())["error"] == "invalid_client"
    scope = await authorize(client, AUTH, auth_params(scope="w_member_social r_everything"))
    assert query_of(scope.headers["Location"])["error"] == "unauthorized_scope_error"


async def test_partner_apps_get_non_extending_refresh_tokens(sandbox_client: Any) -> None:
    client = await sandbox_client(linkedin_partner=True)
    tokens = await connect(client)
    assert tokens["refresh_token_expires_in"] == 365 * 86400
    await client.post("/_sandbox/clock", json={"advance_seconds": 10 * 86400})
    resp = await client.post(
        TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        },
    )
    refreshed = await resp.json()
    assert refreshed["refresh_token"] == tokens["refresh_token"]
    assert refreshed["refresh_token_expires_in"] <= 355 * 86400
    assert refreshed["access_token"] != tokens["access_token"]


async def test_versioned_posts_api(client: Any) -> None:
    token = (await connect(client))["access_token"]
    author = f"urn:li:person:{MEMBER}"
    missing = await client.post(
        f"{API}/rest/posts",
        json=post_body(author, "hi"),
        headers={"Authorization": f"Bearer {token}", "X-Restli-Protocol-Version": "2.0.0"},
    )
    assert missing.status == 400
    assert (await missing.json())["code"] == "VERSION_MISSING"
    old = await client.post(
        f"{API}/rest/posts", json=post_body(author, "hi"), headers=rest_headers(token, "202001")
    )
    assert old.status == 426
    body = await old.json()
    assert body == {
        "code": "NONEXISTENT_VERSION",
        "message": "Requested version 202001 is not active",
        "status": 426,
    }
    no_restli = rest_headers(token)
    del no_restli["X-Restli-Protocol-Version"]
    assert (
        await client.post(f"{API}/rest/posts", json=post_body(author, "hi"), headers=no_restli)
    ).status == 400

    created = await client.post(
        f"{API}/rest/posts", json=post_body(author, "Hello LinkedIn"), headers=rest_headers(token)
    )
    assert created.status == 201
    urn = created.headers["x-restli-id"]
    assert urn.startswith("urn:li:share:")
    fetched = await client.get(
        f"{API}/rest/posts/{quote(urn, safe='')}", headers=rest_headers(token)
    )
    post = await fetched.json()
    assert post["commentary"] == "Hello LinkedIn"
    assert post["id"] == urn
    dup = await client.post(
        f"{API}/rest/posts", json=post_body(author, "Hello LinkedIn"), headers=rest_headers(token)
    )
    assert dup.status == 422
    assert urn in (await dup.json())["message"]
    too_long = await client.post(
        f"{API}/rest/posts", json=post_body(author, "x" * 3001), headers=rest_headers(token)
    )
    assert too_long.status == 422
    deleted = await client.delete(
        f"{API}/rest/posts/{quote(urn, safe='')}", headers=rest_headers(token)
    )
    assert deleted.status == 204
    assert (
        await client.get(f"{API}/rest/posts/{quote(urn, safe='')}", headers=rest_headers(token))
    ).status == 404
    assert len(await posts(client, platform="linkedin", text_contains="Hello LinkedIn")) == 1


async def test_organization_posts_need_an_admin_role(client: Any) -> None:
    token = (await connect(client))["access_token"]
    acls = await (
        await client.get(
            f"{API}/rest/organizationAcls",
            params={"q": "roleAssignee", "role": "ADMINISTRATOR", "state": "APPROVED"},
            headers=rest_headers(token),
        )
    ).json()
    assert acls["elements"][0]["organization"] == ORG
    ok = await client.post(
        f"{API}/rest/posts", json=post_body(ORG, "From the company"), headers=rest_headers(token)
    )
    assert ok.status == 201
    other = await client.post(
        f"{API}/rest/posts",
        json=post_body("urn:li:organization:12345", "Not mine"),
        headers=rest_headers(token),
    )
    assert other.status == 403
    err = await other.json()
    assert err["code"] == "ACCESS_DENIED"
    assert err["serviceErrorCode"] == 100
    stats = await (
        await client.get(
            f"{API}/rest/organizationalEntityShareStatistics",
            params={
                "q": "organizationalEntity",
                "organizationalEntity": ORG,
                "shares": f"List({ok.headers['x-restli-id']})",
            },
            headers=rest_headers(token),
        )
    ).json()
    totals = stats["elements"][0]["totalShareStatistics"]
    assert set(totals) >= {"impressionCount", "clickCount", "likeCount", "engagement"}


async def test_image_upload_then_post(client: Any) -> None:
    token = (await connect(client))["access_token"]
    author = f"urn:li:person:{MEMBER}"
    init = await (
        await client.post(
            f"{API}/rest/images",
            params={"action": "initializeUpload"},
            json={"initializeUploadRequest": {"owner": author}},
            headers=rest_headers(token),
        )
    ).json()
    image = init["value"]["image"]
    upload_url = init["value"]["uploadUrl"]
    early = await client.post(
        f"{API}/rest/posts",
        json=post_body(author, "pic", content={"media": {"id": image}}),
        headers=rest_headers(token),
    )
    assert early.status == 422
    path = upload_url.split("://", 1)[1].split("/", 1)[1]
    put = await client.put(
        "/" + path, data=b"\x89PNG fake", headers={"Authorization": f"Bearer {token}"}
    )
    assert put.status == 201
    resp = await client.post(
        f"{API}/rest/posts",
        json=post_body(author, "pic", content={"media": {"id": image, "title": "cup"}}),
        headers=rest_headers(token),
    )
    assert resp.status == 201
    upload = await (await client.get(f"/_sandbox/uploads/{quote(image, safe='')}")).json()
    assert upload["size"] == len(b"\x89PNG fake")
