"""Tokens remembered from the real vault, through the service's gRPC contract: one
vault read per connection while its row is unchanged; a disconnect ends it at once,
and a reconnect's new tokens are the ones used next."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_connectors.domain.model import StoredBundle

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"


class CountingReads:
    """The service's TokenStore, counting reads (everything else passes through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0

    async def get(self, tenant_id: str, connection_id: str) -> StoredBundle:
        self.reads += 1
        stored: StoredBundle = await self.inner.get(tenant_id, connection_id)
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _page(harness: Any, tenant: str) -> str:
    result = await harness.connect(tenant, "facebook", capabilities=("publish",))
    return next(
        str(c.connection.id) for c in result.connections if c.connection.external_id == COFFEE_PAGE
    )


async def _publish(harness: Any, tenant: str, page: str, text: str) -> pb.PublishPostResponse:
    reply: pb.PublishPostResponse = await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=page,
            idempotency_key=str(uuid.uuid4()),
            content=common_pb2.PostContent(text=text),
            attempt=1,
        )
    )
    return reply


async def test_one_vault_read_serves_a_connections_publishes(harness: Any, tenant: str) -> None:
    page = await _page(harness, tenant)
    counting = CountingReads(harness.service.tokens)
    harness.service.tokens = counting
    for i in range(3):
        reply = await _publish(harness, tenant, page, f"Batch {i}")
        assert reply.status == pb.PUBLISH_STATUS_PUBLISHED
    assert counting.reads == 1


async def test_disconnect_ends_it_and_a_reconnect_brings_new_tokens(
    harness: Any, tenant: str
) -> None:
    page = await _page(harness, tenant)
    assert (await _publish(harness, tenant, page, "Before")).status == (pb.PUBLISH_STATUS_PUBLISHED)
    kept = await harness.stored_bundles(tenant)  # both of the person's Pages
    await harness.stub().DisconnectConnection(
        pb.DisconnectConnectionRequest(tenant_id=tenant, connection_id=page, reason="test")
    )
    assert await harness.stored_bundles(tenant) == kept - 1
    refused = await _publish(harness, tenant, page, "While disconnected")
    assert refused.status == pb.PUBLISH_STATUS_FAILED
    assert len(harness.service.token_cache) == 0
    again = await _page(harness, tenant)
    assert again == page
    counting = CountingReads(harness.service.tokens)
    harness.service.tokens = counting
    assert (await _publish(harness, tenant, page, "After")).status == (pb.PUBLISH_STATUS_PUBLISHED)
    assert counting.reads == 1  # the reconnect's tokens, from the vault
    texts = [p["text"] for p in await harness.posts(platform="meta", account=COFFEE_PAGE)]
    assert "While disconnected" not in texts
    assert {"Before", "After"} <= set(texts)
