"""TikTok against the sandbox over real HTTP: OAuth, rotating refresh tokens, chunked
uploads, status polling, limits, metrics and signed webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest

from postd_sandbox.platforms.tiktok import MB, chunk_plan_error
from postd_sandbox.testing import (
    REDIRECT_URI,
    add_fault,
    consent_via_page,
    pkce_pair,
    posts,
    query_of,
    set_consent,
)

AUTH = "/tiktok/www/v2/auth/authorize/"
TOKEN = "/tiktok/open/v2/oauth/token/"
OPEN = "/tiktok/open/v2"
CLIENT_KEY = "dev-tiktok-client-id"
SECRET = "dev-tiktok-client-secret"
CREATOR = "-000SbxOpenId0001"
SCOPES = "user.info.basic,user.info.profile,video.publish,video.upload,video.list"
MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def video_bytes(size: int) -> bytes:
    body = MP4_HEADER + bytes(range(256)) * (size // 256 + 1)
    return body[:size]


async def connect(client: Any, scopes: str = SCOPES, account: str | None = None) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    if account:
        await set_consent(client, platform="tiktok", account=account)
        resp = await client.get(
            AUTH,
            params={
                "client_key": CLIENT_KEY,
                "response_type": "code",
                "scope": scopes,
                "redirect_uri": REDIRECT_URI,
                "state": "tt",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
        )
        params = query_of(resp.headers["Location"])
    else:
        params = await consent_via_page(
            client,
            AUTH,
            {
                "client_key": CLIENT_KEY,
                "response_type": "code",
                "scope": scopes,
                "redirect_uri": REDIRECT_URI,
                "state": "tt",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
    resp = await client.post(
        TOKEN,
        data={
            "client_key": CLIENT_KEY,
            "client_secret": SECRET,
            "code": params["code"],
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=UTF-8"}


async def init(client: Any, token: str, size: int, chunk: int, total: int, **post: Any) -> Any:
    return await client.post(
        f"{OPEN}/post/publish/video/init/",
        json={
            "post_info": {"title": "Latte #coffee", "privacy_level": "SELF_ONLY", **post},
            "source_info": {
                "source": "FILE_UPLOAD",
                "video_size": size,
                "chunk_size": chunk,
                "total_chunk_count": total,
            },
        },
        headers=bearer(token),
    )


async def put_chunk(client: Any, url: str, data: bytes, first: int, total: int) -> Any:
    path = url.split("://", 1)[1].split("/", 1)[1]
    return await client.put(
        "/" + path,
        data=data,
        headers={
            "Content-Type": "video/mp4",
            "Content-Range": f"bytes {first}-{first + len(data) - 1}/{total}",
        },
    )


async def status(client: Any, token: str, publish_id: str) -> dict[str, Any]:
    resp = await client.post(
        f"{OPEN}/post/publish/status/fetch/", json={"publish_id": publish_id}, headers=bearer(token)
    )
    body: dict[str, Any] = await resp.json()
    assert body["error"]["code"] == "ok", body
    data: dict[str, Any] = body["data"]
    return data


async def test_oauth_with_pkce_and_partial_scopes(client: Any) -> None:
    verifier, challenge = pkce_pair()
    params = await consent_via_page(
        client,
        AUTH,
        {
            "client_key": CLIENT_KEY,
            "response_type": "code",
            "scope": SCOPES,
            "redirect_uri": REDIRECT_URI,
            "state": "tt",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        scopes=["user.info.basic", "video.list"],
    )
    assert params["scopes"] == "user.info.basic,video.list"
    wrong = await client.post(
        TOKEN,
        data={
            "client_key": CLIENT_KEY,
            "client_secret": SECRET,
            "code": params["code"],
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT_URI,
            "code_verifier": "wrong" + verifier,
        },
    )
    assert wrong.status == 400
    err = await wrong.json()
    assert err["error"] == "invalid_grant"
    assert err["log_id"]


async def test_token_response_and_rotating_refresh(client: Any) -> None:
    tokens = await connect(client)
    assert set(tokens) == {
        "access_token",
        "expires_in",
        "open_id",
        "refresh_expires_in",
        "refresh_token",
        "scope",
        "token_type",
    }
    assert tokens["open_id"] == CREATOR
    assert tokens["scope"] == SCOPES

    async def refresh(value: str) -> Any:
        return await client.post(
            TOKEN,
            data={
                "client_key": CLIENT_KEY,
                "client_secret": SECRET,
                "grant_type": "refresh_token",
                "refresh_token": value,
            },
        )

    first = await (await refresh(tokens["refresh_token"])).json()
    assert first["refresh_token"] != tokens["refresh_token"]
    reused = await refresh(tokens["refresh_token"])
    assert reused.status == 400
    assert (await reused.json())["error"] == "invalid_grant"
    second = await refresh(first["refresh_token"])
    assert second.status == 200
    info = await client.get(
        f"{OPEN}/user/info/",
        params={"fields": "open_id,display_name,username"},
        headers=bearer((await second.json())["access_token"]),
    )
    body = await info.json()
    assert body["error"]["code"] == "ok"
    assert body["data"]["user"]["username"] == "sandboxcoffee"


async def test_missing_scope_and_expired_token(client: Any) -> None:
    tokens = await connect(client, scopes="user.info.basic")
    resp = await client.post(
        f"{OPEN}/post/publish/creator_info/query/", headers=bearer(tokens["access_token"])
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "scope_not_authorized"
    await client.post("/_sandbox/tokens/expire", json={"platform": "tiktok", "account": CREATOR})
    resp = await client.get(
        f"{OPEN}/user/info/", params={"fields": "open_id"}, headers=bearer(tokens["access_token"])
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "access_token_invalid"


def test_chunk_rules() -> None:
    assert chunk_plan_error(3 * MB, 3 * MB, 1) is None
    assert chunk_plan_error(3 * MB, 1 * MB, 3) is not None  # under 5 MB goes whole
    assert chunk_plan_error(11 * MB, 5 * MB, 2) is None  # last chunk holds the rest
    assert chunk_plan_error(11 * MB, 5 * MB, 3) is not None  # count is rounded down
    assert chunk_plan_error(20 * MB, 4 * MB, 5) is not None  # chunks are at least 5 MB
    assert chunk_plan_error(100 * MB, 64 * MB, 1) is not None  # > 64 MB must be chunked
    assert chunk_plan_error(100 * MB, 50 * MB, 2) is None
    assert chunk_plan_error(300 * MB, 64 * MB, 4) is None
    assert chunk_plan_error(64 * MB * 3 + 100 * MB, 64 * MB, 4) is None  # last chunk 100 MB


async def test_creator_info_and_posting_rules(sandbox_client: Any) -> None:
    client = await sandbox_client()
    token = (await connect(client))["access_token"]
    info = await (
        await client.post(f"{OPEN}/post/publish/creator_info/query/", headers=bearer(token))
    ).json()
    assert "SELF_ONLY" in info["data"]["privacy_level_options"]
    public = await init(client, token, 1000, 1000, 1, privacy_level="PUBLIC_TO_EVERYONE")
    assert public.status == 403
    err = (await public.json())["error"]["code"]
    assert err == "unaudited_client_can_only_post_to_private_accounts"
    bad_plan = await init(client, token, 11 * MB, 5 * MB, 3)
    assert bad_plan.status == 400
    assert (await bad_plan.json())["error"]["code"] == "invalid_params"

    audited = await sandbox_client(tiktok_audited=True)
    private = await connect(audited, account="-000SbxOpenId0002")
    mismatch = await init(
        audited, private["access_token"], 1000, 1000, 1, privacy_level="PUBLIC_TO_EVERYONE"
    )
    assert (await mismatch.json())["error"]["code"] == "privacy_level_option_mismatch"


async def test_init_is_limited_to_six_a_minute(client: Any) -> None:
    token = (await connect(client))["access_token"]

    async def pull() -> Any:
        return await client.post(
            f"{OPEN}/post/publish/video/init/",
            json={
                "post_info": {"title": "from url", "privacy_level": "SELF_ONLY"},
                "source_info": {
                    "source": "PULL_FROM_URL",
                    "video_url": "https://media.postd.test/v.mp4",
                },
            },
            headers=bearer(token),
        )

    for _ in range(6):
        assert (await pull()).status == 200
    limited = await pull()
    assert limited.status == 429
    assert (await limited.json())["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["Retry-After"]) > 0


async def test_pending_uploads_are_capped(client: Any) -> None:
    token = (await connect(client))["access_token"]
    for _ in range(5):
        assert (await init(client, token, 1000, 1000, 1)).status == 200
    sixth = await init(client, token, 1000, 1000, 1)
    assert sixth.status == 403
    assert (await sixth.json())["error"]["code"] == "spam_risk_too_many_pending_share"


async def test_multi_chunk_upload_resumes_and_publishes(client: Any) -> None:
    token = (await connect(client))["access_token"]
    size = 11 * MB
    video = video_bytes(size)
    resp = await init(client, token, size, 5 * MB, 2)
    data = (await resp.json())["data"]
    publish_id, url = data["publish_id"], data["upload_url"]
    assert url.split("?")[0].endswith("/tiktok/upload/video/")
    first, second = video[: 5 * MB], video[5 * MB :]
    # Out of order is refused.
    early = await put_chunk(client, url, second, 5 * MB, size)
    assert early.status == 400
    assert (await early.json())["error"]["code"] == "invalid_file_upload"
    # Wrong chunk size is refused.
    short = await put_chunk(client, url, first[:100], 0, size)
    assert short.status == 400
    assert (await put_chunk(client, url, first, 0, size)).status == 206
    assert (await status(client, token, publish_id))["status"] == "PROCESSING_UPLOAD"
    # The final chunk lands but its answer is lost; sending it again is accepted.
    await add_fault(
        client, platform="tiktok", account=CREATOR, kind="lost_response", path_contains="/upload/"
    )
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await put_chunk(client, url, second, 5 * MB, size)
    assert (await put_chunk(client, url, second, 5 * MB, size)).status == 201
    upload = await (await client.get(f"/_sandbox/uploads/{publish_id}")).json()
    assert upload["sha256"] == hashlib.sha256(video).hexdigest()
    assert upload["size"] == size
    assert (await status(client, token, publish_id))["status"] == "PROCESSING_UPLOAD"
    await asyncio.sleep(0.2)
    done = await status(client, token, publish_id)
    assert done["status"] == "PUBLISH_COMPLETE"
    assert done["uploaded_bytes"] == size
    assert done["publicaly_available_post_id"] == []  # SELF_ONLY stays private
    recorded = await posts(client, platform="tiktok", account=CREATOR)
    assert recorded[0]["status"] == "published"
    assert recorded[0]["text"] == "Latte #coffee"


async def test_bad_file_fails_with_reason(client: Any) -> None:
    token = (await connect(client))["access_token"]
    resp = await init(client, token, 1000, 1000, 1)
    data = (await resp.json())["data"]
    assert (await put_chunk(client, data["upload_url"], b"x" * 1000, 0, 1000)).status == 201
    await asyncio.sleep(0.2)
    failed = await status(client, token, data["publish_id"])
    assert failed["status"] == "FAILED"
    assert failed["fail_reason"] == "file_format_check_failed"


async def test_audited_public_post_metrics_and_webhook(sandbox_client: Any, receiver: Any) -> None:
    client = await sandbox_client(tiktok_audited=True)
    token = (await connect(client))["access_token"]
    video = video_bytes(2000)
    data = (
        await (await init(client, token, 2000, 2000, 1, privacy_level="PUBLIC_TO_EVERYONE")).json()
    )["data"]
    assert (await put_chunk(client, data["upload_url"], video, 0, 2000)).status == 201
    await asyncio.sleep(0.2)
    done = await status(client, token, data["publish_id"])
    video_id = str(done["publicaly_available_post_id"][0])
    # Less than the 2-hour access token lifetime.
    await client.post("/_sandbox/clock", json={"advance_seconds": 3600})
    listed = await (
        await client.post(
            f"{OPEN}/video/list/",
            params={"fields": "id,title,view_count,like_count"},
            json={"max_count": 10},
            headers=bearer(token),
        )
    ).json()
    assert listed["error"]["code"] == "ok", listed
    assert listed["data"]["videos"][0]["id"] == video_id
    assert listed["data"]["videos"][0]["view_count"] > 0
    queried = await (
        await client.post(
            f"{OPEN}/video/query/",
            params={"fields": "id,share_count"},
            json={"filters": {"video_ids": [video_id]}},
            headers=bearer(token),
        )
    ).json()
    assert queried["data"]["videos"][0]["id"] == video_id

    recv, server = receiver
    await client.post(
        "/_sandbox/webhooks/send",
        json={
            "platform": "tiktok",
            "url": str(server.make_url("/tt")),
            "event": "post_published",
            "account": CREATOR,
        },
    )
    got = recv.requests[-1]
    parts = dict(p.split("=", 1) for p in got["headers"]["TikTok-Signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), parts["t"].encode() + b"." + got["body"], hashlib.sha256
    ).hexdigest()
    assert parts["s"] == expected
    payload = json.loads(got["body"])
    assert payload["event"] == "post.publish.complete"
    assert json.loads(payload["content"])["publish_id"] == data["publish_id"]
