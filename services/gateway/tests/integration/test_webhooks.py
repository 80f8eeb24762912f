"""/webhooks/{platform}[/{key}]: unauthenticated, raw bytes and headers to the router,
its answer to the platform, size-limited."""

from __future__ import annotations

import asyncio

import pytest

from postd_common.devinfra import free_port
from postd_gateway.testing import VERIFY_TOKEN, sign_fake_webhook

pytestmark = pytest.mark.integration


async def test_a_signed_webhook_is_passed_raw(client, world):
    body = b'{"object":"page",  "entry":[{"id":"1"}]}\n'
    answer = await client.post(
        "/webhooks/facebook",
        data=body,
        headers={"X-Fake-Signature": sign_fake_webhook(body), "Content-Type": "application/json"},
    )
    assert answer.status == 200
    seen = world.ingested[-1]
    assert seen.body == body  # byte for byte, whitespace included
    assert seen.platform == "facebook"
    assert seen.http_method == "POST"
    names = [h.name.lower() for h in seen.headers]
    assert "x-fake-signature" in names


async def test_a_bad_signature_is_the_routers_401(client):
    answer = await client.post("/webhooks/facebook", data=b"{}", headers={"X-Fake-Signature": "0"})
    assert answer.status == 401


async def test_a_challenge_is_answered_with_the_routers_body(client, world):
    answer = await client.get(
        "/webhooks/facebook",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "8675309",
        },
    )
    assert answer.status == 200
    assert await answer.text() == "8675309"
    assert world.ingested[-1].query_string.startswith("hub.mode=subscribe")


async def test_path_keys_and_unknown_platforms(client, world):
    answer = await client.post("/webhooks/nowhere/abc123", data=b"{}")
    assert answer.status == 404
    assert world.ingested[-1].path_key == "abc123"


# Keys are URL-safe base64 as the router issues them (secrets.token_urlsafe): one in
# 32 begins with "-" or "_", which an id may not; such a key still reaches the router.
@pytest.mark.parametrize("key", ["-Qx3_kT9", "_9aZ-b2", "Ab_-9"])
async def test_every_key_the_router_issues_reaches_it(client, world, key):
    before = len(world.ingested)
    await client.post(f"/webhooks/mailchimp/{key}", data=b"type=subscribe")
    assert len(world.ingested) == before + 1
    assert world.ingested[-1].path_key == key


@pytest.mark.parametrize("key", ["a.b", "a:b", "k%20y"])
async def test_a_key_outside_the_issued_alphabet_is_not_passed_on(client, world, key):
    before = len(world.ingested)
    answer = await client.post(f"/webhooks/mailchimp/{key}", data=b"{}")
    assert answer.status == 404
    assert len(world.ingested) == before


async def test_bodies_over_the_limit_are_refused_and_recorded(make_client, world):
    client = await make_client(webhook_max_body_bytes=1024)
    answer = await client.post("/webhooks/facebook", data=b"x" * 5000)
    assert answer.status == 413
    assert world.ingested[-1].body_truncated


async def test_router_down_means_retry_later(make_client, settings):
    dead = {name: f"127.0.0.1:{free_port()}" for name in settings.backends}
    client = await make_client(backends=dead)
    answer = await client.post("/webhooks/facebook", data=b"{}")
    assert answer.status == 503
    assert answer.headers["Retry-After"]


async def test_concurrent_webhooks_share_one_router_call_each_with_its_own_answer(
    make_client, world
):
    client = await make_client(webhook_batch_linger_seconds=0.2, webhook_batch_max=4)
    good = b'{"entry":[{"id":"2"}]}'
    answers = await asyncio.gather(
        client.post(
            "/webhooks/facebook", data=good, headers={"X-Fake-Signature": sign_fake_webhook(good)}
        ),
        client.post("/webhooks/facebook", data=b"{}", headers={"X-Fake-Signature": "0"}),
        client.post("/webhooks/nowhere", data=b"{}"),
        client.get(
            "/webhooks/facebook",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "42",
            },
        ),
    )
    assert [a.status for a in answers] == [200, 401, 404, 200]
    assert await answers[3].text() == "42"
    assert world.ingest_batches[-1:] == [4]


async def test_batching_off_calls_the_router_once_per_webhook(make_client, world):
    client = await make_client(webhook_batch_max=1)
    before = len(world.ingest_batches)
    answers = await asyncio.gather(
        *(
            client.post("/webhooks/facebook", data=b"{}", headers={"X-Fake-Signature": "0"})
            for _ in range(3)
        )
    )
    assert [a.status for a in answers] == [401] * 3
    assert len(world.ingest_batches) == before
