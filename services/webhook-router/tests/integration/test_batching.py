"""Webhooks that arrive together go to the router in one IngestWebhooks call, through
the real HTTP front (the passthrough handler) and the real router, PostgreSQL durable:
each request is answered with its own verdict after its row is committed; a batch
that fails answers 503 to every request of it, acknowledging nothing that was not
stored; a router without the batch call is sent one call per webhook."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd.webhook_router.v1 import webhook_router_pb2_grpc as pb_grpc
from postd_common.devinfra import free_port
from postd_sandbox import signing
from postd_webhook_router.domain.ingest import dedupe_keys
from postd_webhook_router.domain.model import Verified
from postd_webhook_router.http_passthrough import BatchPolicy, WebhookIngest, webhook_passthrough
from postd_webhook_router.servicer import SERVICE_NAME

from .conftest import Stack, dedupe_key_held, waiting_inserts

pytestmark = pytest.mark.integration


class RecordingStub:
    """The router's stub, recording which call each webhook went through."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.batches: list[int] = []
        self.singles = 0

    async def IngestWebhooks(
        self, request: pb.IngestWebhooksRequest, **kwargs: Any
    ) -> pb.IngestWebhooksResponse:
        self.batches.append(len(request.webhooks))
        reply: pb.IngestWebhooksResponse = await self._stub.IngestWebhooks(request, **kwargs)
        return reply

    async def IngestWebhook(
        self, request: pb.IngestWebhookRequest, **kwargs: Any
    ) -> pb.IngestWebhookResponse:
        self.singles += 1
        reply: pb.IngestWebhookResponse = await self._stub.IngestWebhook(request, **kwargs)
        return reply


@contextlib.asynccontextmanager
async def front(stack: Stack, stub: Any, policy: BatchPolicy) -> AsyncIterator[str]:
    """An HTTP front like the gateway's webhook routes, on ``stub``; yields its URL."""
    ingest = WebhookIngest(stub, policy, timeout=4.0)
    app = web.Application()
    handler = webhook_passthrough(ingest, max_body_bytes=stack.settings.inbound.max_body_bytes)
    app.router.add_route("*", "/webhooks/{platform}", handler)
    app.router.add_route("*", "/webhooks/{platform}/{key}", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await ingest.close()


@contextlib.asynccontextmanager
async def router_proxy(
    methods: Mapping[str, tuple[Callable[[Any, Any], Awaitable[Any]], Any, Any]],
) -> AsyncIterator[pb_grpc.WebhookRouterServiceStub]:
    """A gRPC server offering only ``methods`` of the router's service (name: handler,
    request type, response type): an older router, or one that fails."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE_NAME,
                {
                    name: grpc.unary_unary_rpc_method_handler(
                        handler,
                        request_deserializer=request.FromString,
                        response_serializer=response.SerializeToString,
                    )
                    for name, (handler, request, response) in methods.items()
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.WebhookRouterServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def tiktok(
    stack: Stack, *, stale: bool = False, forged: bool = False
) -> tuple[bytes, dict[str, str]]:
    """A distinct TikTok webhook, signed as TikTok signs it."""
    secret = stack.settings.inbound.client_secrets["tiktok"][0].reveal()
    now = int(time.time()) - (3600 if stale else 0)
    body = signing.canonical_json(
        {
            "event": "post.publish.complete",
            "create_time": now,
            "user_openid": f"act.{uuid.uuid4().hex}",
            "content": json.dumps({"publish_id": uuid.uuid4().hex}),
        }
    )
    signature = signing.tiktok_signature(secret, body, now)
    if forged:
        signature = signing.tiktok_signature("not-the-secret", body, now)
    return body, {"Content-Type": "application/json", "TikTok-Signature": signature}


async def rows_of(stack: Stack, body: bytes) -> list[tuple[str, int]]:
    """(verdict, duplicate count) of every stored row of ``body``."""
    rows = await stack.pool.fetch(
        "SELECT verdict, duplicate_count FROM webhooks.inbound_events WHERE body_sha256 = $1",
        hashlib.sha256(body).hexdigest(),
    )
    return [(r["verdict"], r["duplicate_count"]) for r in rows]


async def send(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes, dict[str, str]]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.read(), dict(response.headers)


async def test_one_batch_of_mixed_webhooks_answers_each_request_its_own_verdict(
    stack: Stack,
) -> None:
    seen_body, seen_headers = tiktok(stack)
    async with aiohttp.ClientSession() as session:
        # Stored earlier (through the shared front): in the batch it is a duplicate.
        assert (
            await send(session, "POST", stack.url("tiktok"), data=seen_body, headers=seen_headers)
        )[0] == 200
        valid, forged, stale, twice = (
            tiktok(stack),
            tiktok(stack, forged=True),
            tiktok(stack, stale=True),
            tiktok(stack),
        )
        big = b"x" * (stack.settings.inbound.max_body_bytes + 7)
        unknown = json.dumps({"id": uuid.uuid4().hex}).encode()
        challenge = uuid.uuid4().hex
        token = stack.settings.inbound.meta_verify_token.reveal()
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "tiktok", {"data": valid[0], "headers": valid[1]}),
            ("POST", "tiktok", {"data": forged[0], "headers": forged[1]}),
            ("POST", "tiktok", {"data": seen_body, "headers": seen_headers}),
            ("POST", "tiktok", {"data": big, "headers": valid[1]}),
            ("POST", "myspace", {"data": unknown}),
            ("POST", "tiktok", {"data": stale[0], "headers": stale[1]}),
            ("POST", "tiktok", {"data": twice[0], "headers": twice[1]}),
            ("POST", "tiktok", {"data": twice[0], "headers": twice[1]}),
            (
                "GET",
                "facebook",
                {
                    "params": {
                        "hub.mode": "subscribe",
                        "hub.verify_token": token,
                        "hub.challenge": challenge,
                    }
                },
            ),
        ]
        stub = RecordingStub(stack.stub)
        # A long linger and room for all: every request joins one batch.
        policy = BatchPolicy(max_webhooks=len(requests), linger_seconds=0.5, max_calls=1)
        async with front(stack, stub, policy) as url:
            answers = await asyncio.gather(
                *(send(session, m, f"{url}/webhooks/{p}", **kw) for m, p, kw in requests)
            )
    assert stub.batches == [len(requests)]
    assert stub.singles == 0
    assert [status for status, _, _ in answers] == [200, 401, 200, 413, 404, 401, 200, 200, 200]
    assert answers[8][1] == challenge.encode()  # its own body, no one else's
    assert all(body == b"" for _, body, _ in answers[:8])
    assert await rows_of(stack, valid[0]) == [("accepted", 0)]
    assert await rows_of(stack, unknown) == [("rejected_unknown", 0)]
    assert await rows_of(stack, forged[0]) == [("rejected_signature", 0)]
    assert await rows_of(stack, seen_body) == [("accepted", 1)]
    assert await rows_of(stack, stale[0]) == [("rejected_stale", 0)]
    # The same event twice in one batch: stored once, the copy counted as a duplicate.
    assert await rows_of(stack, twice[0]) == [("accepted", 1)]
    too_large = await stack.pool.fetchval(
        "SELECT count(*) FROM webhooks.inbound_events "
        "WHERE verdict = 'rejected_too_large' AND body_size = $1",
        len(big),
    )
    assert too_large == 1


async def test_a_commit_lost_mid_batch_answers_503_to_all_and_stores_none(
    stack: Stack, pg_dsn: str
) -> None:
    webhooks = [tiktok(stack) for _ in range(4)]
    # Another transaction holds the dedupe key of one of them: the batch's transaction
    # writes some rows, then waits on that one.
    held, _ = dedupe_keys(
        Verified(),
        hashlib.sha256(webhooks[2][0]).hexdigest(),
        None,
        datetime.now(UTC),
        stack.settings.inbound.dedupe_window_seconds,
    )
    stub = RecordingStub(stack.stub)
    policy = BatchPolicy(max_webhooks=len(webhooks), linger_seconds=0.5, max_calls=1)
    async with aiohttp.ClientSession() as session, front(stack, stub, policy) as url:
        async with dedupe_key_held(pg_dsn, held) as blocker:
            answers = asyncio.gather(
                *(
                    send(session, "POST", f"{url}/webhooks/tiktok", data=b, headers=h)
                    for b, h in webhooks
                )
            )
            (pid,) = await waiting_inserts(stack.pool)
            # PostgreSQL goes away under the batch's transaction.
            await blocker.execute("SELECT pg_terminate_backend($1)", pid)
            statuses = [
                (status, headers.get("Retry-After")) for status, _, headers in await answers
            ]
        assert stub.batches == [len(webhooks)]
        assert statuses == [(503, "30")] * len(webhooks)
        # Nothing was committed, so nothing was acknowledged.
        for body, _ in webhooks:
            assert await rows_of(stack, body) == []
        # The platforms retry: every webhook is stored, once.
        retried = await asyncio.gather(
            *(
                send(session, "POST", f"{url}/webhooks/tiktok", data=b, headers=h)
                for b, h in webhooks
            )
        )
        assert [status for status, _, _ in retried] == [200] * len(webhooks)
    for body, _ in webhooks:
        assert await rows_of(stack, body) == [("accepted", 0)]


async def test_a_failed_batch_call_answers_503_to_all_and_the_retries_store_once(
    stack: Stack,
) -> None:
    async def store_then_fail(request: pb.IngestWebhooksRequest, context: Any) -> None:
        # The router stored the batch, then its answer was lost (a crash, a reset).
        await stack.stub.IngestWebhooks(request)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")

    webhooks = [tiktok(stack) for _ in range(3)]
    policy = BatchPolicy(linger_seconds=0.3)
    methods = {
        "IngestWebhooks": (store_then_fail, pb.IngestWebhooksRequest, pb.IngestWebhooksResponse)
    }
    async with aiohttp.ClientSession() as session:
        async with router_proxy(methods) as failing, front(stack, failing, policy) as url:
            answers = await asyncio.gather(
                *(
                    send(session, "POST", f"{url}/webhooks/tiktok", data=b, headers=h)
                    for b, h in webhooks
                )
            )
        assert [(s, h.get("Retry-After")) for s, _, h in answers] == [(503, "30")] * 3
        # A router that cannot be reached at all: the same answer.
        dead = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
        async with front(stack, pb_grpc.WebhookRouterServiceStub(dead), policy) as url:
            status, _, _ = await send(
                session,
                "POST",
                f"{url}/webhooks/tiktok",
                data=webhooks[0][0],
                headers=webhooks[0][1],
            )
            assert status == 503
        await dead.close()
        # The platforms retry; what the failed call stored is found again.
        retried = await asyncio.gather(
            *(send(session, "POST", stack.url("tiktok"), data=b, headers=h) for b, h in webhooks)
        )
    assert [status for status, _, _ in retried] == [200] * 3
    for body, _ in webhooks:
        assert await rows_of(stack, body) == [("accepted", 1)]


async def test_a_router_without_the_batch_call_is_sent_one_call_per_webhook(
    stack: Stack,
) -> None:
    async def ingest_one(
        request: pb.IngestWebhookRequest, context: Any
    ) -> pb.IngestWebhookResponse:
        reply: pb.IngestWebhookResponse = await stack.stub.IngestWebhook(request)
        return reply

    methods = {"IngestWebhook": (ingest_one, pb.IngestWebhookRequest, pb.IngestWebhookResponse)}
    valid, forged = tiktok(stack), tiktok(stack, forged=True)
    async with aiohttp.ClientSession() as session, router_proxy(methods) as old_router:
        stub = RecordingStub(old_router)
        policy = BatchPolicy(linger_seconds=0.3, batch_retry_seconds=60)
        async with front(stack, stub, policy) as url:
            answers = await asyncio.gather(
                send(session, "POST", f"{url}/webhooks/tiktok", data=valid[0], headers=valid[1]),
                send(session, "POST", f"{url}/webhooks/tiktok", data=forged[0], headers=forged[1]),
                send(session, "POST", f"{url}/webhooks/myspace", data=b"{}"),
            )
            assert [status for status, _, _ in answers] == [200, 401, 404]
            assert (stub.batches, stub.singles) == ([3], 3)
            # From now on (for a while) one call per webhook, no batch attempted.
            later = tiktok(stack)
            status, _, _ = await send(
                session, "POST", f"{url}/webhooks/tiktok", data=later[0], headers=later[1]
            )
            assert status == 200
            assert (stub.batches, stub.singles) == ([3], 4)
    assert await rows_of(stack, valid[0]) == [("accepted", 0)]
    assert await rows_of(stack, forged[0]) == [("rejected_signature", 0)]
    assert await rows_of(stack, later[0]) == [("accepted", 0)]
