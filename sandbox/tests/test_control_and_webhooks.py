"""Control API (seeding, reset, tokens, consent) and signed webhooks, verified here
with independent HMAC/JWT code rather than the sandbox's own signing module."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qs

from postd_sandbox.config import load_settings
from postd_sandbox.signing import standard_webhooks_key

from .test_faults import meta_page_tokens

SETTINGS = load_settings({})


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def send(client: Any, server: Any, **request: Any) -> dict[str, Any]:
    resp = await client.post(
        "/_sandbox/webhooks/send", json={"url": str(server.make_url("/hook")), **request}
    )
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def test_meta_webhook_signature(client: Any, receiver: Any) -> None:
    recv, server = receiver
    result = await send(client, server, platform="meta", event="comment", account="200000000000001")
    assert result["status"] == 200
    got = recv.requests[-1]
    body = got["body"]
    expected = "sha256=" + hex_hmac("dev-meta-client-secret", body)
    assert got["headers"]["X-Hub-Signature-256"] == expected
    payload = json.loads(body)
    assert payload["object"] == "page"
    change = payload["entry"][0]["changes"][0]
    assert change["field"] == "feed"
    assert change["value"]["item"] == "comment"

    await send(client, server, platform="meta", event="comment", tamper="signature")
    tampered = recv.requests[-1]
    assert tampered["headers"]["X-Hub-Signature-256"] != "sha256=" + hex_hmac(
        "dev-meta-client-secret", tampered["body"]
    )
    await send(client, server, platform="meta", event="comment", tamper="body")
    tampered = recv.requests[-1]
    assert tampered["headers"]["X-Hub-Signature-256"] != "sha256=" + hex_hmac(
        "dev-meta-client-secret", tampered["body"]
    )


async def test_meta_deauthorize_is_a_signed_request(client: Any, receiver: Any) -> None:
    recv, server = receiver
    await send(client, server, platform="meta", event="deauthorize", account="10000000000001")
    form = parse_qs(recv.requests[-1]["body"].decode())
    sig_b64, payload_b64 = form["signed_request"][0].split(".")
    expected = hmac.new(b"dev-meta-client-secret", payload_b64.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig_b64 + "==") == expected
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    assert payload["user_id"] == "10000000000001"
    assert payload["algorithm"] == "HMAC-SHA256"


async def test_linkedin_slack_shopify_and_standard_webhooks(client: Any, receiver: Any) -> None:
    recv, server = receiver
    await send(client, server, platform="linkedin", event="comment", account="90000001")
    got = recv.requests[-1]
    assert got["headers"]["X-LI-Signature"] == hex_hmac("dev-linkedin-client-secret", got["body"])

    await send(client, server, platform="slack", event="url_verification")
    got = recv.requests[-1]
    ts = got["headers"]["X-Slack-Request-Timestamp"]
    base = b"v0:" + ts.encode() + b":" + got["body"]
    assert got["headers"]["X-Slack-Signature"] == "v0=" + hex_hmac(
        SETTINGS.slack_signing_secret, base
    )
    assert json.loads(got["body"])["type"] == "url_verification"

    await send(client, server, platform="shopify", event="app_uninstalled")
    got = recv.requests[-1]
    digest = hmac.new(b"dev-shopify-client-secret", got["body"], hashlib.sha256).digest()
    assert got["headers"]["X-Shopify-Hmac-Sha256"] == base64.b64encode(digest).decode()
    assert got["headers"]["X-Shopify-Topic"] == "app/uninstalled"
    assert got["headers"]["X-Shopify-Event-Id"]

    await send(client, server, platform="standard_webhooks", event="post.published")
    got = recv.requests[-1]
    h = got["headers"]
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got["body"]
    key = standard_webhooks_key(SETTINGS.standard_webhooks_secret)
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == "v1," + expected


async def test_stale_timestamp_tamper(client: Any, receiver: Any) -> None:
    recv, server = receiver
    result = await send(client, server, platform="slack", event="message", tamper="stale_timestamp")
    ts = int(recv.requests[-1]["headers"]["X-Slack-Request-Timestamp"])
    assert ts < result["sent"]["body"]["event_time"] + 1
    now = (await (await client.get("/_sandbox/clock")).json())["now"]
    assert now - ts > 300


async def test_seed_reset_and_token_controls(client: Any) -> None:
    resp = await client.post(
        "/_sandbox/accounts",
        json={"platform": "meta", "bulk": {"users": 50, "pages_per_user": 2}},
    )
    created = await resp.json()
    assert len(created["users"]) == 50
    assert len(created["pages"]) == 100
    accounts = await (await client.get("/_sandbox/accounts", params={"platform": "meta"})).json()
    assert len(accounts["meta"]["users"]) == 52
    resp = await client.post(
        "/_sandbox/accounts",
        json={
            "platform": "linkedin",
            "members": [
                {"given_name": "Ada", "family_name": "L", "organizations": [{"name": "Ada Co"}]}
            ],
        },
    )
    assert len((await resp.json())["organizations"]) == 1
    await client.post("/_sandbox/reset")
    accounts = await (await client.get("/_sandbox/accounts", params={"platform": "meta"})).json()
    assert len(accounts["meta"]["users"]) == 2
    bad = await client.post("/_sandbox/tokens/expire", json={"platform": "meta"})
    assert bad.status == 400


async def test_slack_incoming_webhook_records_messages(client: Any) -> None:
    hook = "/slack/hooks/services/T0SANDBOX1/B0ALERTS/abc123"
    resp = await client.post(hook, json={"text": "Connection needs attention"})
    assert resp.status == 200
    assert await resp.text() == "ok"
    empty = await client.post(hook, json={"username": "x"})
    assert empty.status == 400
    assert await empty.text() == "no_text"
    msgs = await (
        await client.get("/_sandbox/slack/messages", params={"text_contains": "attention"})
    ).json()
    assert msgs["count"] == 1
    assert msgs["messages"][0]["text"] == "Connection needs attention"
    await client.post(
        "/_sandbox/faults", json={"platform": "slack", "kind": "rate_limit", "retry_after": 2}
    )
    limited = await client.post(hook, json={"text": "again"})
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "2"
    assert await limited.text() == "rate_limited"


async def test_token_values_are_shown_only_when_the_sandbox_allows_it(
    client: Any, sandbox_client: Any
) -> None:
    await meta_page_tokens(client)
    listed = (await (await client.get("/_sandbox/tokens")).json())["tokens"]
    assert listed
    assert all("value" not in row for row in listed)
    assert (await client.get("/_sandbox/tokens?reveal=1")).status == 403
    revealing = await sandbox_client(reveal_tokens=True)
    await meta_page_tokens(revealing)
    shown = (await (await revealing.get("/_sandbox/tokens?reveal=1")).json())["tokens"]
    assert shown
    assert all(row["value"].startswith(row["token_hint"].rstrip("…")) for row in shown)
