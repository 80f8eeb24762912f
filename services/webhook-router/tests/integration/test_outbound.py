"""Outbound end to end: a publish result on Kafka becomes a signed delivery to the
tenant's endpoint (an aiohttp server), verified here by the reference Standard
Webhooks library; a failing endpoint is retried on its schedule and recovers; SSRF
targets are refused; a rotated secret signs alongside the old one during the overlap."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postd.events.v1 import publish_result_pb2
from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd_common.kafka import message_headers

from .conftest import Stack

pytestmark = pytest.mark.integration


class Endpoint:
    """A tenant's endpoint: answers from a script of statuses, records every request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[float, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((time.monotonic(), dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


async def serve_endpoint(statuses: list[int]) -> tuple[Endpoint, TestServer]:
    endpoint = Endpoint(statuses)
    app = web.Application()
    app.router.add_post("/hooks", endpoint.handle)
    server = TestServer(app)
    await server.start_server()
    return endpoint, server


async def publish_result(
    stack: Stack, tenant: str, **fields: Any
) -> publish_result_pb2.PublishResult:
    finished = timestamp_pb2.Timestamp()
    finished.GetCurrentTime()
    values: dict[str, Any] = {
        "job_id": str(uuid.uuid4()),
        "post_id": str(uuid.uuid4()),
        "tenant_id": tenant,
        "connection_id": "conn-1",
        "platform": "linkedin",
        "outcome": publish_result_pb2.PUBLISH_OUTCOME_PUBLISHED,
        "platform_post_id": "urn:li:share:1",
        "attempt": 1,
        "finished_at": finished,
    }
    result = publish_result_pb2.PublishResult(**{**values, **fields})
    await stack.producer.produce(
        stack.topics.publish_results,
        result,
        key="conn-1",
        headers=message_headers(result, tenant_id=tenant),
    )
    return result


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_failing_endpoint_is_retried_on_schedule_and_recovers(
    stack: Stack, tenant_id: str
) -> None:
    endpoint, server = await serve_endpoint([500, 500, 200])
    try:
        created = await stack.stub.CreateEndpoint(
            pb.CreateEndpointRequest(
                tenant_id=tenant_id,
                url=str(server.make_url("/hooks")),
                event_types=["post.published"],
                created_by="u-1",
            )
        )
        secret = created.signing_secret
        assert secret.startswith("whsec_")
        assert created.endpoint.secret_hint == secret[:10]
        result = await publish_result(stack, tenant_id)
        await wait_for(lambda: len(endpoint.received) >= 3)
    finally:
        await server.close()

    verifier = Webhook(secret)
    bodies = set()
    for _, headers, body in endpoint.received:
        lowered = {k.lower(): v for k, v in headers.items()}
        payload = verifier.verify(body, lowered)  # raises if the signature is wrong
        assert payload["type"] == "post.published"
        assert payload["data"]["job_id"] == result.job_id
        bodies.add(body)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret.replace(secret[8], "A" if secret[8] != "A" else "B")).verify(
                body, lowered
            )
    # One message, three attempts: the same webhook-id and body every time.
    ids = {h["webhook-id"] for _, h, _ in endpoint.received}
    assert len(ids) == 1
    assert len(bodies) == 1
    # Exponential backoff: base 0.5 s then 1 s (±10 % jitter), never sooner.
    times = [t for t, _, _ in endpoint.received]
    assert times[1] - times[0] >= 0.45
    assert times[2] - times[1] >= 0.9
    assert times[2] - times[1] > (times[1] - times[0]) * 1.4

    listed = await stack.stub.ListDeliveries(
        pb.ListDeliveriesRequest(tenant_id=tenant_id, endpoint_id=created.endpoint.id)
    )
    assert len(listed.deliveries) == 1
    delivery = listed.deliveries[0]
    assert delivery.state == pb.DELIVERY_STATE_SUCCEEDED
    assert (delivery.attempt_count, delivery.last_http_status) == (3, 200)
    endpoints = await stack.stub.ListEndpoints(pb.ListEndpointsRequest(tenant_id=tenant_id))
    assert endpoints.endpoints[0].consecutive_failures == 0

    # The same result again (a redelivered Kafka message) makes no second delivery.
    attempts = await stack.pool.fetchval(
        "SELECT count(*) FROM webhooks.delivery_attempts a JOIN webhooks.deliveries d "
        "ON d.id = a.delivery_id WHERE d.tenant_id = $1",
        tenant_id,
    )
    assert attempts == 3


async def test_rotation_signs_with_both_secrets_during_overlap(
    stack: Stack, tenant_id: str
) -> None:
    endpoint, server = await serve_endpoint([])
    try:
        created = await stack.stub.CreateEndpoint(
            pb.CreateEndpointRequest(tenant_id=tenant_id, url=str(server.make_url("/hooks")))
        )
        rotated = await stack.stub.RotateEndpointSecret(
            pb.RotateEndpointSecretRequest(
                tenant_id=tenant_id,
                endpoint_id=created.endpoint.id,
                overlap=duration_pb2.Duration(seconds=3600),
            )
        )
        assert rotated.signing_secret != created.signing_secret
        assert rotated.endpoint.HasField("previous_secret_expires_at")
        await publish_result(stack, tenant_id, outcome=publish_result_pb2.PUBLISH_OUTCOME_FAILED)
        await wait_for(lambda: len(endpoint.received) >= 1)
    finally:
        await server.close()
    _, headers, body = endpoint.received[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert len(lowered["webhook-signature"].split()) == 2
    for secret in (created.signing_secret, rotated.signing_secret):
        assert Webhook(secret).verify(body, lowered)["type"] == "post.failed"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.8/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.1.1/x",
        "http://[::ffff:10.0.0.1]/x",
        "ftp://example.com/x",
    ],
)
async def test_private_targets_are_refused(stack: Stack, tenant_id: str, url: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.CreateEndpoint(pb.CreateEndpointRequest(tenant_id=tenant_id, url=url))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_endpoints_are_tenant_scoped_and_reenabling_resets(
    stack: Stack, tenant_id: str
) -> None:
    created = await stack.stub.CreateEndpoint(
        pb.CreateEndpointRequest(tenant_id=tenant_id, url="http://127.0.0.1:9/hooks")
    )
    other = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.DeleteEndpoint(
            pb.DeleteEndpointRequest(tenant_id=other, endpoint_id=created.endpoint.id)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    disabled = await stack.stub.UpdateEndpoint(
        pb.UpdateEndpointRequest(
            tenant_id=tenant_id,
            endpoint_id=created.endpoint.id,
            enabled=False,
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        )
    )
    assert disabled.endpoint.state == pb.ENDPOINT_STATE_DISABLED
    await stack.stub.DeleteEndpoint(
        pb.DeleteEndpointRequest(tenant_id=tenant_id, endpoint_id=created.endpoint.id)
    )
    listed = await stack.stub.ListEndpoints(pb.ListEndpointsRequest(tenant_id=tenant_id))
    assert list(listed.endpoints) == []
