"""Connections: listing with page tokens, routing webhooks across tenants, a publish
interrupted midway, and media caps."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_common.testing import unique
from postd_connectors.media.fetch import GuardedFetcher, MediaRefused

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"


async def test_pages_of_connections(harness: Any, tenant: str, rpc_error: Any) -> None:
    await harness.connect(tenant, "facebook")  # two pages
    await harness.connect(tenant, "linkedin")  # member + organization
    first = await harness.stub().ListConnections(
        pb.ListConnectionsRequest(tenant_id=tenant, page_size=3)
    )
    assert len(first.connections) == 3
    assert first.next_page_token
    second = await harness.stub().ListConnections(
        pb.ListConnectionsRequest(tenant_id=tenant, page_size=3, page_token=first.next_page_token)
    )
    assert len(second.connections) == 1
    assert second.next_page_token == ""
    ids = [c.id for c in first.connections] + [c.id for c in second.connections]
    assert len(set(ids)) == 4
    only = await harness.stub().ListConnections(
        pb.ListConnectionsRequest(tenant_id=tenant, platforms=["linkedin"])
    )
    assert {c.platform for c in only.connections} == {"linkedin"}
    error = await rpc_error(
        harness.stub().ListConnections(
            pb.ListConnectionsRequest(
                tenant_id=tenant, platforms=["linkedin"], page_token=first.next_page_token
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    negative = await rpc_error(
        harness.stub().ListConnections(pb.ListConnectionsRequest(tenant_id=tenant, page_size=-1))
    )
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = await harness.stub().ListConnections(
        pb.ListConnectionsRequest(tenant_id=unique("nobody"))
    )
    assert list(other.connections) == []


async def test_resolve_account_routes_webhooks_across_tenants(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    agency = unique("agency")
    await harness.connect(tenant, "facebook")
    await harness.connect(agency, "facebook")
    request = pb.ResolveAccountRequest(platform="facebook", external_account_id=COFFEE_PAGE)
    found = await harness.stub("webhook-router").ResolveAccount(request)
    assert {m.tenant_id for m in found.matches} >= {tenant, agency}
    nothing = await harness.stub("webhook-router").ResolveAccount(
        pb.ResolveAccountRequest(platform="facebook", external_account_id="no-such-page")
    )
    assert list(nothing.matches) == []
    refused = await rpc_error(harness.stub("gateway").ResolveAccount(request))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_publish_interrupted_midway_posts_once(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    """The caller gives up (deadline) while the call to the platform is in flight, as
    when a worker dies: the attempt is left "pending", and the next one looks on the
    platform first, then posts exactly once."""
    result = await harness.connect(tenant, "facebook")
    page = next(
        c.connection.id for c in result.connections if c.connection.external_id == COFFEE_PAGE
    )
    await harness.fault(
        platform="meta", account=COFFEE_PAGE, kind="slow", delay_ms=1500, path_contains="/feed"
    )
    key = str(uuid.uuid4())
    request = pb.PublishPostRequest(
        tenant_id=tenant,
        connection_id=page,
        idempotency_key=key,
        content=common_pb2.PostContent(text="Interrupted"),
    )
    error = await rpc_error(harness.stub("publisher").PublishPost(request, timeout=0.5))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = await harness.pool.fetchrow(
        "SELECT status, attempts FROM connectors.publish_records WHERE idempotency_key = $1", key
    )
    assert (record["status"], record["attempts"]) == ("pending", 1)
    await asyncio.sleep(1.6)  # whatever the platform was going to do, it has done
    retry = await harness.stub("publisher").PublishPost(request)
    assert retry.status == pb.PUBLISH_STATUS_PUBLISHED
    posts = await harness.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == ["Interrupted"]
    assert retry.platform_post_id == posts[0]["id"]


async def test_media_downloads_are_capped(media_server: str) -> None:
    fetcher = GuardedFetcher(timeout=5, allowed_origins=[media_server])
    with pytest.raises(MediaRefused) as info:
        await fetcher.fetch(f"{media_server}/media/square.jpg", max_bytes=100)
    assert info.value.code == "too_large"
    fetched = await fetcher.fetch(f"{media_server}/media/square.jpg", max_bytes=10 * 1024 * 1024)
    assert fetched.data[:3] == b"\xff\xd8\xff"
    missing = GuardedFetcher(timeout=5, allowed_origins=[media_server])
    with pytest.raises(MediaRefused) as gone:
        await missing.fetch(f"{media_server}/media/nope.jpg", max_bytes=1024)
    assert gone.value.code == "bad_status"
