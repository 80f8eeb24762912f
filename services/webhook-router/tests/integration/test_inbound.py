"""Inbound end to end: the sandbox signs and sends each platform's webhooks through the
aiohttp front (passthrough handler) to the router over gRPC; PostgreSQL and Kafka are
real. Correct, forged, tampered, stale and duplicated deliveries each get their verdict;
duplicates are stored once; the handshakes answer; accepted events reach
``webhook.events`` normalised and routed."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from postd.events.v1 import webhook_event_pb2
from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd_sandbox import signing

from .conftest import Stack

pytestmark = pytest.mark.integration

GOOGLE_AUDIENCE = "https://hooks.postd.test/webhooks/google"


async def sandbox_send(stack: Stack, **request: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.sandbox_url}/_sandbox/webhooks/send", json=request) as response,
    ):
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def replay_raw(url: str, sent: dict[str, Any], method: str = "POST") -> int:
    """Send the exact bytes and headers of an earlier delivery again (a platform retry)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url, data=sent["raw"].encode(), headers=sent["headers"]
        ) as response,
    ):
        return response.status


async def stored_by_body(stack: Stack, raw: str) -> list[dict[str, Any]]:
    digest = hashlib.sha256(raw.encode()).hexdigest()
    rows = await stack.pool.fetch(
        "SELECT id, verdict, duplicate_count, body IS NOT NULL AS has_body "
        "FROM webhooks.inbound_events WHERE body_sha256 = $1 ORDER BY received_at",
        digest,
    )
    return [dict(r) for r in rows]


SIGNATURE_HEADERS = {
    "meta": "X-Hub-Signature-256",
    "tiktok": "TikTok-Signature",
    "linkedin": "X-LI-Signature",
    "shopify": "X-Shopify-Hmac-Sha256",
    "slack": "X-Slack-Signature",
    "google": "Authorization",
    "standard_webhooks": "webhook-signature",
}


def flip(value: str) -> str:
    """Change the second-last alphanumeric character to a digit of another value (a
    case change of a hex digit would be the same signature; base64 padding bits could
    hide a change of the last one)."""
    chars = list(value)
    positions = [i for i, c in enumerate(chars) if c.isalnum()]
    j = positions[-2]
    chars[j] = "1" if chars[j] == "0" else "0"
    return "".join(chars)


def hex_case_only(platform: str, result: dict[str, Any]) -> bool:
    """The sandbox's tamper turned a hex 'a' into 'A': the same signature, not a forgery."""
    raw = result["sent"]["raw"].encode()
    headers = result["sent"]["headers"]
    correct = {
        "linkedin": lambda: signing.linkedin_signature("dev-linkedin-client-secret", raw),
        "meta": lambda: signing.meta_signature("dev-meta-client-secret", raw),
        "slack": lambda: signing.slack_signature(
            "dev-slack-signing-secret", int(headers["X-Slack-Request-Timestamp"]), raw
        ),
        "tiktok": lambda: signing.tiktok_signature(
            "dev-tiktok-client-secret",
            raw,
            int(headers["TikTok-Signature"].split(",")[0].removeprefix("t=")),
        ),
    }
    if platform not in correct:
        return False
    sent = result["sent"]["headers"][SIGNATURE_HEADERS[platform]]
    return sent != correct[platform]() and sent.lower() == correct[platform]()


async def inbound_key(stack: Stack, platform: str, tenant: str) -> str:
    reply = await stack.stub.CreateInboundKey(
        pb.CreateInboundKeyRequest(tenant_id=tenant, platform=platform, connection_id="conn-k")
    )
    assert reply.url_path.endswith(reply.path_key)
    return reply.path_key


# (sandbox platform, event, path platform, needs a key, stale replay refused by timestamp)
CASES = [
    ("meta", "comment", "facebook", False, False),
    ("tiktok", "post_published", "tiktok", False, True),
    ("linkedin", "comment", "linkedin", False, False),
    ("shopify", "product_create", "shopify", False, False),
    ("slack", "message", "slack", False, True),
    ("google", "review", "google", False, True),  # the token's expiry is its tolerance
    ("mailchimp", "subscribe", "mailchimp", True, False),
    ("standard_webhooks", "thing.happened", "custom", True, True),
]


@pytest.mark.parametrize(("platform", "event", "path", "keyed", "timestamped"), CASES)
async def test_each_platform_verdicts_and_duplicates(
    stack: Stack,
    tenant_id: str,
    platform: str,
    event: str,
    path: str,
    keyed: bool,
    timestamped: bool,
) -> None:
    key = await inbound_key(stack, path, tenant_id) if keyed else ""
    url = stack.url(path, key)
    common = {"platform": platform, "event": event, "url": url, "audience": GOOGLE_AUDIENCE}

    good = await sandbox_send(stack, **common)
    assert good["status"] == 200, good
    stored = await stored_by_body(stack, good["sent"]["raw"])
    assert [(r["verdict"], r["has_body"]) for r in stored] == [("accepted", True)]

    # The platform retries the very same delivery: acknowledged, stored once.
    assert await replay_raw(url, good["sent"]) == 200
    assert await replay_raw(url, good["sent"]) == 200
    again = await stored_by_body(stack, good["sent"]["raw"])
    assert len(again) == 1
    assert again[0]["duplicate_count"] == 2

    if platform != "mailchimp":  # Mailchimp signs nothing: its secret is the URL
        forged = await sandbox_send(stack, **common, tamper="signature")
        if not hex_case_only(platform, forged):
            assert forged["status"] == 401, forged
        # Our own forgery of the accepted delivery: one signature character changed.
        header = SIGNATURE_HEADERS[platform]
        sent = {**good["sent"], "headers": {**good["sent"]["headers"]}}
        sent["headers"][header] = flip(sent["headers"][header])
        assert await replay_raw(url, sent) == 401
        tampered = await sandbox_send(stack, **common, tamper="body")
        if platform == "google":
            # Pub/Sub's OIDC token authenticates the sender, not the body (TLS guards
            # the bytes): a changed body with a valid token is accepted by the scheme.
            assert tampered["status"] == 200, tampered
        else:
            assert tampered["status"] == 401, tampered
            rejected = await stored_by_body(stack, tampered["sent"]["raw"])
            assert [(r["verdict"], r["has_body"]) for r in rejected] == [
                ("rejected_signature", False)
            ]
    stale = await sandbox_send(stack, **common, tamper="stale_timestamp")
    if timestamped:
        assert stale["status"] == 401, stale
        rows = await stored_by_body(stack, stale["sent"]["raw"])
        assert [r["verdict"] for r in rows] == ["rejected_stale"]
    else:
        # No signed timestamp in the scheme: an old delivery is a new body, accepted
        # once; its replays are caught as duplicates above.
        assert stale["status"] == 200, stale
    if keyed:
        wrong_key = await sandbox_send(stack, **{**common, "url": stack.url(path, "not-a-key")})
        assert wrong_key["status"] == 404


async def test_unknown_platform_and_too_large(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.url("myspace"), data=b"{}") as response:
            assert response.status == 404
        big = b"x" * (stack.settings.inbound.max_body_bytes + 1)
        async with session.post(stack.url("tiktok"), data=big) as response:
            assert response.status == 413
    rows = await stack.pool.fetch(
        "SELECT verdict, body IS NULL AS no_body, body_size FROM webhooks.inbound_events "
        "WHERE verdict IN ('rejected_unknown', 'rejected_too_large') "
        "AND received_at > now() - interval '1 minute'"
    )
    verdicts = {(r["verdict"], r["no_body"]) for r in rows}
    assert ("rejected_unknown", True) in verdicts
    assert ("rejected_too_large", True) in verdicts
    assert any(r["body_size"] == len(big) for r in rows if r["verdict"] == "rejected_too_large")


async def test_handshakes(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        query = urlencode(
            {
                "hub.mode": "subscribe",
                "hub.verify_token": "dev-meta-verify-token",
                "hub.challenge": "1158201444",
            }
        )
        async with session.get(f"{stack.url('facebook')}?{query}") as response:
            assert response.status == 200
            assert await response.text() == "1158201444"
        wrong = query.replace("dev-meta-verify-token", "guess")
        async with session.get(f"{stack.url('facebook')}?{wrong}") as response:
            assert response.status == 403
        code = str(uuid.uuid4())
        async with session.get(f"{stack.url('linkedin')}?challengeCode={code}") as response:
            assert response.status == 200
            answer = await response.json()
        assert answer == {
            "challengeCode": code,
            "challengeResponse": signing.linkedin_challenge_response(
                "dev-linkedin-client-secret", code
            ),
        }
    slack = await sandbox_send(
        stack, platform="slack", event="url_verification", url=stack.url("slack")
    )
    assert slack["status"] == 200
    assert slack["body"] == slack["sent"]["body"]["challenge"]


async def test_meta_deauthorize_reaches_webhook_events_normalised(
    stack: Stack, tenant_id: str, reader_factory: Any
) -> None:
    user_id = str(10**15 + int(time.time() * 1000) % 10**9)
    connection = f"conn-{uuid.uuid4().hex[:8]}"
    stack.connectors.accounts[("facebook", user_id)] = [(tenant_id, connection)]
    reader = reader_factory(stack.topics.webhook_events)
    sent = await sandbox_send(
        stack, platform="meta", event="deauthorize", account=user_id, url=stack.url("facebook")
    )
    assert sent["status"] == 200

    def decoded(messages: list[Any]) -> list[webhook_event_pb2.WebhookEvent]:
        events = []
        for m in messages:
            event = webhook_event_pb2.WebhookEvent()
            event.ParseFromString(m.value())
            if event.external_account_id == user_id:
                events.append(event)
        return events

    messages = await reader.until(lambda ms: bool(decoded(ms)))
    events = decoded(messages)
    assert len(events) == 1
    event = events[0]
    assert event.type == "connection.deauthorized"
    assert (event.tenant_id, event.connection_id, event.platform) == (
        tenant_id,
        connection,
        "facebook",
    )
    assert event.payload["user_id"] == user_id
    assert event.replay_count == 0

    def event_of(m: Any) -> webhook_event_pb2.WebhookEvent:
        parsed = webhook_event_pb2.WebhookEvent()
        parsed.ParseFromString(m.value())
        return parsed

    message = next(m for m in messages if event_of(m).event_id == event.event_id)
    assert message.key() == connection.encode()
    headers = dict(message.headers())
    assert headers["postd-tenant"] == tenant_id.encode()
    assert headers["postd-idempotency-key"] == event.event_id.encode()

    # The stored record is routed and emitted; a replay re-emits the same event id.
    got = await stack.stub.GetWebhookEvent(
        pb.GetWebhookEventRequest(tenant_id=tenant_id, event_id=event.raw_event_ref)
    )
    assert got.event.types == ["connection.deauthorized"]
    assert got.event.connection_id == connection
    assert got.event.processing_state == pb.PROCESSING_STATE_EMITTED
    other_tenant = str(uuid.uuid4())
    with pytest.raises(Exception, match=r"NOT_FOUND|not found"):
        await stack.stub.GetWebhookEvent(
            pb.GetWebhookEventRequest(tenant_id=other_tenant, event_id=event.raw_event_ref)
        )
    replay = await stack.stub.ReplayWebhookEvents(
        pb.ReplayWebhookEventsRequest(tenant_id=tenant_id, event_ids=[event.raw_event_ref])
    )
    assert replay.replayed_count == 1
    messages = await reader.until(lambda ms: len(decoded(ms)) >= 2)
    replayed = decoded(messages)
    assert [e.event_id for e in replayed] == [event.event_id, event.event_id]
    assert [e.replay_count for e in replayed] == [0, 1]


async def test_unrouted_event_is_kept_and_emitted(stack: Stack, reader_factory: Any) -> None:
    open_id = f"act.{uuid.uuid4().hex}"
    reader = reader_factory(stack.topics.webhook_events)
    payload = {
        "client_key": "dev-tiktok-client-id",
        "event": "authorization.removed",
        "create_time": int(time.time()),
        "user_openid": open_id,
        "content": json.dumps({"reason": 1}),
    }
    sent = await sandbox_send(
        stack, platform="tiktok", event="deauthorize", payload=payload, url=stack.url("tiktok")
    )
    assert sent["status"] == 200

    def mine(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m.key() == f"unrouted:tiktok:{open_id}".encode()]

    found = mine(await reader.until(lambda ms: bool(mine(ms))))
    assert len(found) == 1
    event = webhook_event_pb2.WebhookEvent()
    event.ParseFromString(found[0].value())
    assert (event.type, event.tenant_id, event.connection_id) == ("connection.deauthorized", "", "")
    row = await stack.pool.fetchrow(
        "SELECT routed, state FROM webhooks.inbound_events WHERE id = $1::uuid",
        event.raw_event_ref,
    )
    assert row is not None
    assert (row["routed"], row["state"]) == ("unrouted", "emitted")
