"""Google OAuth and Business Profile against the sandbox over real HTTP."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from postd_sandbox.testing import (
    REDIRECT_URI,
    add_fault,
    authorize,
    consent_via_page,
    pkce_pair,
    posts,
    query_of,
    set_consent,
)

AUTH = "/google/accounts/o/oauth2/v2/auth"
TOKEN = "/google/oauth2/token"
CLIENT_ID = "dev-google-client-id"
SECRET = "dev-google-client-secret"
BUSINESS = "https://www.googleapis.com/auth/business.manage"
ACCOUNT = "100000000000000000001"
LOCATION = "2000000000000000001"
V4_LOC = f"/google/mybusiness/v4/accounts/{ACCOUNT}/locations/{LOCATION}"


def auth_params(challenge: str, **extra: str) -> dict[str, str]:
    return {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": f"openid email {BUSINESS}",
        "access_type": "offline",
        "prompt": "consent",
        "state": "g-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def exchange(client: Any, code: str, verifier: str | None, **extra: str) -> Any:
    data = {
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT_URI,
        "grant_type": "authorization_code",
        **extra,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    return await client.post(TOKEN, data=data)


async def connect(client: Any, **extra: str) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    await set_consent(client, platform="google")
    resp = await authorize(client, AUTH, auth_params(challenge, **extra))
    code = query_of(resp.headers["Location"])["code"]
    body: dict[str, Any] = await (await exchange(client, code, verifier)).json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_oauth_round_trip_refresh_token_rules(client: Any) -> None:
    verifier, challenge = pkce_pair()
    params = await consent_via_page(client, AUTH, auth_params(challenge))
    assert params["state"] == "g-state"
    assert params["iss"] == "https://accounts.google.com"
    assert params["scope"] == f"openid email {BUSINESS}"
    missing = await exchange(client, params["code"], None)
    assert await missing.json() == {
        "error": "invalid_grant",
        "error_description": "Missing code verifier.",
    }
    params = await consent_via_page(client, AUTH, auth_params(challenge))
    tokens = await (await exchange(client, params["code"], verifier)).json()
    assert tokens["expires_in"] == 3599
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"].startswith("1//")
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["email"] == "marketer@example.com"

    # Without prompt=consent a returning user gets no new refresh token.
    again = await connect(client, prompt="")
    assert "refresh_token" not in again
    with_prompt = await connect(client)
    assert "refresh_token" in with_prompt

    refreshed = await client.post(
        TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        },
    )
    body = await refreshed.json()
    assert body["expires_in"] == 3599
    assert "refresh_token" not in body
    revoked = await client.post("/google/oauth2/revoke", data={"token": tokens["refresh_token"]})
    assert revoked.status == 200
    dead = await client.post(
        TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        },
    )
    assert await dead.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


async def test_denial_redirect_mismatch_and_code_reuse(client: Any) -> None:
    verifier, challenge = pkce_pair()
    denied = await consent_via_page(client, AUTH, auth_params(challenge), decision="deny")
    assert denied == {"error": "access_denied", "state": "g-state"}
    await set_consent(client, platform="google", times=2)
    code = query_of((await authorize(client, AUTH, auth_params(challenge))).headers["Location"])[
        "code"
    ]
    wrong = await exchange(client, code, verifier, redirect_uri="https://app.postd.test/x")
    assert (await wrong.json())["error"] == "redirect_uri_mismatch"
    code = query_of((await authorize(client, AUTH, auth_params(challenge))).headers["Location"])[
        "code"
    ]
    assert (await exchange(client, code, verifier)).status == 200
    reused = await exchange(client, code, verifier)
    assert reused.status == 400
    assert (await reused.json())["error"] == "invalid_grant"


async def test_testing_apps_get_seven_day_refresh_tokens(sandbox_client: Any) -> None:
    client = await sandbox_client(google_testing_app=True)
    tokens = await connect(client)
    assert tokens["refresh_token_expires_in"] == 7 * 86400


async def test_accounts_locations_and_read_mask(client: Any) -> None:
    token = (await connect(client))["access_token"]
    accounts = await (
        await client.get("/google/mybusinessaccountmanagement/v1/accounts", headers=bearer(token))
    ).json()
    assert accounts["accounts"][0]["name"] == f"accounts/{ACCOUNT}"
    url = f"/google/mybusinessbusinessinformation/v1/accounts/{ACCOUNT}/locations"
    no_mask = await client.get(url, headers=bearer(token))
    assert no_mask.status == 400
    err = (await no_mask.json())["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["details"][0]["fieldViolations"][0]["field"] == "read_mask"
    listed = await (
        await client.get(url, params={"readMask": "name,title"}, headers=bearer(token))
    ).json()
    assert listed["locations"][0] == {
        "name": f"locations/{LOCATION}",
        "title": "Sandbox Coffee Co — Downtown",
    }
    other = await client.get(
        "/google/mybusinessbusinessinformation/v1/accounts/100000000000000000002/locations",
        params={"readMask": "name"},
        headers=bearer(token),
    )
    assert other.status == 403


async def test_local_posts_and_edit_limit(client: Any) -> None:
    token = (await connect(client))["access_token"]
    standard = await client.post(
        f"{V4_LOC}/localPosts",
        json={
            "languageCode": "en-US",
            "summary": "New autumn blend",
            "callToAction": {"actionType": "LEARN_MORE", "url": "https://sandbox.example/blend"},
            "media": [{"mediaFormat": "PHOTO", "sourceUrl": "https://cdn.example.com/b.jpg"}],
            "topicType": "STANDARD",
        },
        headers=bearer(token),
    )
    post = await standard.json()
    assert post["state"] == "LIVE"
    assert post["name"].startswith(f"accounts/{ACCOUNT}/locations/{LOCATION}/localPosts/")
    bad_event = await client.post(
        f"{V4_LOC}/localPosts",
        json={"summary": "Party", "topicType": "EVENT", "event": {"title": "Party"}},
        headers=bearer(token),
    )
    assert bad_event.status == 400
    offer = await client.post(
        f"{V4_LOC}/localPosts",
        json={
            "summary": "10% off",
            "topicType": "OFFER",
            "event": {
                "title": "Autumn offer",
                "schedule": {
                    "startDate": {"year": 2026, "month": 11, "day": 1},
                    "endDate": {"year": 2026, "month": 11, "day": 30},
                },
            },
            "offer": {"couponCode": "AUTUMN10", "termsConditions": "One per visit"},
        },
        headers=bearer(token),
    )
    assert offer.status == 200
    too_long = await client.post(
        f"{V4_LOC}/localPosts",
        json={"summary": "x" * 1501, "topicType": "STANDARD"},
        headers=bearer(token),
    )
    assert too_long.status == 400
    listed = await (await client.get(f"{V4_LOC}/localPosts", headers=bearer(token))).json()
    assert len(listed["localPosts"]) == 2
    recorded = await posts(client, platform="google", account=LOCATION)
    assert [p["kind"] for p in recorded] == ["gbp_standard", "gbp_offer"]
    # Two edits so far; eight more are fine, the eleventh in a minute is refused.
    for i in range(8):
        resp = await client.post(
            f"{V4_LOC}/localPosts",
            json={"summary": f"post {i}", "topicType": "STANDARD"},
            headers=bearer(token),
        )
        assert resp.status == 200
    limited = await client.post(
        f"{V4_LOC}/localPosts",
        json={"summary": "one too many", "topicType": "STANDARD"},
        headers=bearer(token),
    )
    assert limited.status == 429
    assert (await limited.json())["error"]["status"] == "RESOURCE_EXHAUSTED"
    await client.post("/_sandbox/clock", json={"advance_seconds": 61})
    post_id = post["name"].rsplit("/", 1)[1]
    deleted = await client.delete(f"{V4_LOC}/localPosts/{post_id}", headers=bearer(token))
    assert deleted.status == 200


async def test_reviews_and_reply(client: Any) -> None:
    token = (await connect(client))["access_token"]
    reviews = await (await client.get(f"{V4_LOC}/reviews", headers=bearer(token))).json()
    assert reviews["totalReviewCount"] == 3
    review_id = reviews["reviews"][0]["reviewId"]
    reply = await client.put(
        f"{V4_LOC}/reviews/{review_id}/reply",
        json={"comment": "Thanks for visiting!"},
        headers=bearer(token),
    )
    assert (await reply.json())["comment"] == "Thanks for visiting!"
    review = await (await client.get(f"{V4_LOC}/reviews/{review_id}", headers=bearer(token))).json()
    assert review["reviewReply"]["comment"] == "Thanks for visiting!"


async def test_performance_metrics(client: Any) -> None:
    token = (await connect(client))["access_token"]
    resp = await client.get(
        f"/google/businessprofileperformance/v1/locations/{LOCATION}:fetchMultiDailyMetricsTimeSeries",
        params=[
            ("dailyMetrics", "WEBSITE_CLICKS"),
            ("dailyMetrics", "BUSINESS_IMPRESSIONS_MOBILE_MAPS"),
            ("dailyRange.start_date.year", "2026"),
            ("dailyRange.start_date.month", "11"),
            ("dailyRange.start_date.day", "1"),
            ("dailyRange.end_date.year", "2026"),
            ("dailyRange.end_date.month", "11"),
            ("dailyRange.end_date.day", "7"),
        ],
        headers=bearer(token),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    series = body["multiDailyMetricTimeSeries"][0]["dailyMetricTimeSeries"]
    assert [s["dailyMetric"] for s in series] == [
        "WEBSITE_CLICKS",
        "BUSINESS_IMPRESSIONS_MOBILE_MAPS",
    ]
    values = series[1]["timeSeries"]["datedValues"]
    assert len(values) == 7
    assert values[0]["date"] == {"year": 2026, "month": 11, "day": 1}
    assert all(isinstance(v.get("value", "0"), str) for v in values)


async def test_google_error_body_and_faults(client: Any) -> None:
    token = (await connect(client))["access_token"]
    await add_fault(client, platform="google", account=LOCATION, kind="server_error")
    resp = await client.get(f"{V4_LOC}/reviews", headers=bearer(token))
    assert resp.status == 500
    assert (await resp.json())["error"] == {
        "code": 500,
        "message": "Internal error encountered.",
        "status": "INTERNAL",
    }
    unauth = await client.get(f"{V4_LOC}/reviews", headers=bearer("nope"))
    assert unauth.status == 401
    assert (await unauth.json())["error"]["status"] == "UNAUTHENTICATED"
    assert "invalid_token" in unauth.headers["WWW-Authenticate"]


async def test_pubsub_push_is_signed_with_the_jwks(client: Any, receiver: Any) -> None:
    recv, server = receiver
    url = str(server.make_url("/pubsub"))
    jwks = await (await client.get("/google/oauth2/v3/certs")).json()
    keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks["keys"]}

    def verify(headers: dict[str, str]) -> dict[str, Any]:
        token = headers["Authorization"].removeprefix("Bearer ")
        kid = jwt.get_unverified_header(token)["kid"]
        claims: dict[str, Any] = jwt.decode(
            token,
            keys[kid],
            algorithms=["RS256"],
            audience=url,
            issuer="https://accounts.google.com",
        )
        return claims

    await client.post(
        "/_sandbox/webhooks/send",
        json={"platform": "google", "url": url, "event": "review", "account": LOCATION},
    )
    got = recv.requests[-1]
    claims = verify(got["headers"])
    assert claims["email_verified"] is True
    assert claims["email"].endswith(".iam.gserviceaccount.com")
    envelope = json.loads(got["body"])
    data = json.loads(base64.b64decode(envelope["message"]["data"]))
    assert data["type"] == "NEW_REVIEW"
    assert data["location"] == f"accounts/{ACCOUNT}/locations/{LOCATION}"

    await client.post(
        "/_sandbox/webhooks/send",
        json={"platform": "google", "url": url, "event": "review", "tamper": "signature"},
    )
    with pytest.raises(jwt.InvalidSignatureError):
        verify(recv.requests[-1]["headers"])
    await client.post(
        "/_sandbox/webhooks/send",
        json={"platform": "google", "url": url, "event": "review", "tamper": "stale_timestamp"},
    )
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(recv.requests[-1]["headers"])

    minted = await (
        await client.post("/_sandbox/google/oidc-token", json={"audience": "https://x.test/push"})
    ).json()
    claims = jwt.decode(
        minted["token"], keys[minted["kid"]], algorithms=["RS256"], audience="https://x.test/push"
    )
    assert claims["iss"] == "https://accounts.google.com"
