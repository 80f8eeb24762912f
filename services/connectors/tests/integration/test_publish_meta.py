"""Publishing to Facebook Pages and Instagram against the sandbox over real HTTP:
formats, faults and their categories, refresh-and-retry, reconciliation."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"
COFFEE_IG = "17841400000000001"


async def _connect(harness: Any, tenant: str, platform: str, external_id: str) -> str:
    result = await harness.connect(tenant, platform, capabilities=("publish", "analytics"))
    for item in result.connections:
        if item.connection.external_id == external_id:
            return str(item.connection.id)
    raise AssertionError(f"{external_id} not connected")


async def _publish(
    harness: Any, tenant: str, connection_id: str, key: str | None = None, **content: Any
) -> pb.PublishPostResponse:
    media = [common_pb2.MediaItem(**m) for m in content.pop("media", [])]
    return await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=connection_id,
            idempotency_key=key or str(uuid.uuid4()),
            content=common_pb2.PostContent(media=media, **content),
            attempt=1,
        )
    )


@pytest.fixture
async def page(harness: Any, tenant: str) -> str:
    return await _connect(harness, tenant, "facebook", COFFEE_PAGE)


@pytest.fixture
async def ig(harness: Any, tenant: str) -> str:
    return await _connect(harness, tenant, "instagram", COFFEE_IG)


async def test_text_post_and_a_retry_with_the_same_key(
    harness: Any, tenant: str, page: str
) -> None:
    key = str(uuid.uuid4())
    first = await _publish(harness, tenant, page, key, text="Fresh beans today")
    assert first.status == pb.PUBLISH_STATUS_PUBLISHED
    assert first.platform_post_id.startswith(COFFEE_PAGE + "_")
    assert first.content_fingerprint.startswith("fp1:")
    usage = {u.name: u for u in first.usage}
    assert "app_calls_per_hour" in usage
    again = await _publish(harness, tenant, page, key, text="Fresh beans today")
    assert again.reconciled
    assert again.platform_post_id == first.platform_post_id
    posts = await harness.posts(platform="meta", account=COFFEE_PAGE)
    assert [p["text"] for p in posts] == ["Fresh beans today"]


async def test_link_and_image_posts(
    harness: Any, tenant: str, page: str, media_server: str
) -> None:
    link = await _publish(harness, tenant, page, text="Our menu", link="https://example.com/menu")
    image = await _publish(
        harness,
        tenant,
        page,
        text="Latte art",
        media=[{"url": f"{media_server}/media/square.jpg", "mime_type": "image/jpeg"}],
    )
    assert link.status == image.status == pb.PUBLISH_STATUS_PUBLISHED
    posts = {p["text"]: p for p in await harness.posts(platform="meta", account=COFFEE_PAGE)}
    assert posts["Our menu"]["kind"] == "page_feed"
    assert posts["Our menu"]["request_fields"]["link"] == "https://example.com/menu"
    assert posts["Latte art"]["kind"] == "page_photo"
    assert posts["Latte art"]["media"] == [f"{media_server}/media/square.jpg"]


async def test_instagram_image_and_carousel(
    harness: Any, tenant: str, ig: str, media_server: str
) -> None:
    single = await _publish(
        harness, tenant, ig, text="One photo", media=[{"url": f"{media_server}/media/square.jpg"}]
    )
    assert single.status == pb.PUBLISH_STATUS_PUBLISHED
    urls = [f"{media_server}/media/square.jpg?n={i}" for i in range(3)]
    carousel = await _publish(
        harness, tenant, ig, text="Three photos", media=[{"url": u, "kind": 1} for u in urls]
    )
    assert carousel.status == pb.PUBLISH_STATUS_PUBLISHED
    posts = {p["text"]: p for p in await harness.posts(platform="meta", account=COFFEE_IG)}
    assert posts["One photo"]["kind"] == "ig_media"
    assert posts["Three photos"]["kind"] == "ig_carousel"
    assert posts["Three photos"]["media"] == urls
    # The sandbox refuses media_publish while a container is IN_PROGRESS: publishing
    # only succeeded because the connector waited for FINISHED.
    assert carousel.platform_post_id == posts["Three photos"]["id"]


async def test_instagram_reel(harness: Any, tenant: str, ig: str, media_server: str) -> None:
    reel = await _publish(
        harness,
        tenant,
        ig,
        text="A short clip",
        media=[{"url": f"{media_server}/media/clip.mp4", "kind": 2, "mime_type": "video/mp4"}],
    )
    assert reel.status == pb.PUBLISH_STATUS_PUBLISHED
    (post,) = await harness.posts(platform="meta", account=COFFEE_IG)
    assert post["kind"] == "ig_reel"


async def test_failed_instagram_media_is_content_rejected(
    harness: Any, tenant: str, ig: str
) -> None:
    result = await _publish(
        harness, tenant, ig, text="Broken", media=[{"url": "https://cdn.example/sandbox_error.jpg"}]
    )
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert "Instagram" in result.error.message
    assert await harness.posts(platform="meta", account=COFFEE_IG) == []


FAULTS: list[tuple[dict[str, Any], int]] = [
    ({"kind": "rate_limit", "retry_after": 30}, common_pb2.ERROR_CATEGORY_RATE_LIMITED),
    ({"kind": "server_error"}, common_pb2.ERROR_CATEGORY_TRANSIENT),
    ({"kind": "outage"}, common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE),
    ({"kind": "token_revoked"}, common_pb2.ERROR_CATEGORY_AUTH_REVOKED),
    ({"kind": "permission_removed"}, common_pb2.ERROR_CATEGORY_PERMISSION_MISSING),
    (
        {"kind": "platform_error", "error": "meta_blocked"},
        common_pb2.ERROR_CATEGORY_CONTENT_REJECTED,
    ),
    (
        {"kind": "platform_error", "error": "meta_duplicate_post"},
        common_pb2.ERROR_CATEGORY_CONTENT_REJECTED,
    ),
    (
        {"kind": "platform_error", "error": "meta_page_rate_limit"},
        common_pb2.ERROR_CATEGORY_RATE_LIMITED,
    ),
    (
        {"kind": "platform_error", "error": "meta_unknown_error"},
        common_pb2.ERROR_CATEGORY_TRANSIENT,
    ),
    (
        {"kind": "platform_error", "error": "meta_app_not_authorized"},
        common_pb2.ERROR_CATEGORY_AUTH_REVOKED,
    ),
    (
        {"kind": "platform_error", "error": "meta_app_permission"},
        common_pb2.ERROR_CATEGORY_PERMISSION_MISSING,
    ),
    # A 5xx, whatever its body says, is never a revoked token.
    (
        {"kind": "platform_error", "error": "revoked_token", "status": 502},
        common_pb2.ERROR_CATEGORY_TRANSIENT,
    ),
]


@pytest.mark.parametrize(
    ("fault", "category"), FAULTS, ids=[f[0].get("error", f[0]["kind"]) for f in FAULTS]
)
async def test_sandbox_faults_map_to_categories(
    harness: Any, tenant: str, page: str, fault: dict[str, Any], category: int
) -> None:
    await harness.fault(platform="meta", account=COFFEE_PAGE, path_contains="/feed", **fault)
    result = await _publish(harness, tenant, page, text="Hello")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == category, result.error
    assert result.error.message
    assert result.error.platform == "facebook"
    assert "190" not in result.error.message  # people see words, not codes
    if category == common_pb2.ERROR_CATEGORY_RATE_LIMITED and "retry_after" in fault:
        assert result.error.retry_after.seconds == 30
    assert await harness.posts(platform="meta", account=COFFEE_PAGE) == []
    connection = await harness.stub().GetConnection(
        pb.GetConnectionRequest(tenant_id=tenant, connection_id=page)
    )
    assert connection.connection.last_error.category == category
    # Health decides statuses; a failed publish does not change it.
    assert connection.connection.status == common_pb2.CONNECTION_STATUS_HEALTHY


async def test_rate_limit_pauses_calls_until_retry_after(
    harness: Any, tenant: str, page: str
) -> None:
    await harness.fault(platform="meta", account=COFFEE_PAGE, kind="rate_limit", retry_after=120)
    first = await _publish(harness, tenant, page, text="one")
    assert first.error.category == common_pb2.ERROR_CATEGORY_RATE_LIMITED
    faults = await harness.control("GET", "/_sandbox/faults")
    assert faults["faults"] == []
    second = await _publish(harness, tenant, page, text="two")
    # Refused locally: the platform asked for 120 s and is not called meanwhile.
    assert second.error.category == common_pb2.ERROR_CATEGORY_RATE_LIMITED
    assert 100 <= second.error.retry_after.seconds <= 120
    assert await harness.posts(platform="meta", account=COFFEE_PAGE) == []


async def test_expired_token_is_refreshed_and_the_call_retried_once(
    harness: Any, tenant: str, page: str
) -> None:
    before = await harness.tokens.get(tenant, page)
    await harness.control(
        "POST",
        "/_sandbox/tokens/expire",
        json={"platform": "meta", "access_token": before.bundle.access_token.reveal()},
    )
    result = await _publish(harness, tenant, page, text="After expiry")
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    after = await harness.tokens.get(tenant, page)
    assert after.bundle.access_token.reveal() != before.bundle.access_token.reveal()
    assert after.version > before.version
    assert len(await harness.posts(platform="meta", account=COFFEE_PAGE)) == 1
    audit = await harness.stub().ListConnectionAudit(
        pb.ListConnectionAuditRequest(tenant_id=tenant, connection_id=page)
    )
    assert audit.entries[0].action == "refreshed"


async def test_expired_twice_is_not_retried_forever(harness: Any, tenant: str, page: str) -> None:
    await harness.fault(
        platform="meta", account=COFFEE_PAGE, kind="token_expired", times=2, path_contains="/feed"
    )
    result = await _publish(harness, tenant, page, text="Expired twice")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == common_pb2.ERROR_CATEGORY_AUTH_EXPIRED
    assert await harness.posts(platform="meta", account=COFFEE_PAGE) == []
    # One refresh happened between the two attempts, not more.
    audit = await harness.stub().ListConnectionAudit(
        pb.ListConnectionAuditRequest(tenant_id=tenant, connection_id=page)
    )
    assert [e.action for e in audit.entries].count("refreshed") == 1


async def test_lost_response_is_reconciled_not_duplicated(
    harness: Any, tenant: str, page: str, rpc_error: Any
) -> None:
    key = str(uuid.uuid4())
    await harness.fault(
        platform="meta", account=COFFEE_PAGE, kind="lost_response", path_contains="/feed"
    )
    error = await rpc_error(_publish(harness, tenant, page, key, text="Did it post?"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "FindPost" in error.details()
    found = await harness.stub("publisher").FindPost(
        pb.FindPostRequest(tenant_id=tenant, connection_id=page, idempotency_key=key)
    )
    assert found.found
    assert found.matched_by == pb.POST_MATCH_CONTENT_FINGERPRINT
    retry = await _publish(harness, tenant, page, key, text="Did it post?")
    assert retry.reconciled
    assert retry.platform_post_id == found.platform_post_id
    assert len(await harness.posts(platform="meta", account=COFFEE_PAGE)) == 1


async def test_timeout_then_retry_posts_exactly_once(
    harness: Any, tenant: str, page: str, rpc_error: Any
) -> None:
    key = str(uuid.uuid4())
    await harness.fault(platform="meta", account=COFFEE_PAGE, kind="timeout", path_contains="/feed")
    error = await rpc_error(_publish(harness, tenant, page, key, text="Slow platform"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    retry = await _publish(harness, tenant, page, key, text="Slow platform")
    assert retry.status == pb.PUBLISH_STATUS_PUBLISHED
    assert not retry.reconciled  # the sandbox never acted on the timed-out call
    assert len(await harness.posts(platform="meta", account=COFFEE_PAGE)) == 1


async def test_lost_instagram_publish_resumes_from_the_container(
    harness: Any, tenant: str, ig: str, media_server: str, rpc_error: Any
) -> None:
    key = str(uuid.uuid4())
    media = [{"url": f"{media_server}/media/square.jpg"}]
    await harness.fault(
        platform="meta", account=COFFEE_IG, kind="lost_response", path_contains="/media_publish"
    )
    error = await rpc_error(_publish(harness, tenant, ig, key, text="Lost publish", media=media))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    retry = await _publish(harness, tenant, ig, key, text="Lost publish", media=media)
    assert retry.status == pb.PUBLISH_STATUS_PUBLISHED
    assert retry.reconciled
    assert len(await harness.posts(platform="meta", account=COFFEE_IG)) == 1


async def test_slow_platform_within_the_timeout_publishes(
    harness: Any, tenant: str, page: str
) -> None:
    await harness.fault(platform="meta", account=COFFEE_PAGE, kind="slow", delay_ms=300)
    result = await _publish(harness, tenant, page, text="Slowly")
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED


async def test_delete_and_analytics(harness: Any, tenant: str, page: str) -> None:
    post = await _publish(harness, tenant, page, text="Measure me")
    stats = await harness.stub().GetPostAnalytics(
        pb.GetPostAnalyticsRequest(
            tenant_id=tenant, connection_id=page, platform_post_ids=[post.platform_post_id]
        )
    )
    (entry,) = stats.posts
    assert entry.platform_post_id == post.platform_post_id
    assert entry.metrics.HasField("impressions")
    assert entry.metrics.HasField("reach")
    deleted = await harness.stub("publisher").DeletePost(
        pb.DeletePostRequest(
            tenant_id=tenant, connection_id=page, platform_post_id=post.platform_post_id
        )
    )
    assert deleted.deleted
    (recorded,) = await harness.posts(platform="meta", account=COFFEE_PAGE)
    assert recorded["deleted"]


async def test_health_check_reports_a_revoked_token(harness: Any, tenant: str, page: str) -> None:
    ok = await harness.stub("health").CheckConnection(
        pb.CheckConnectionRequest(tenant_id=tenant, connection_id=page)
    )
    assert ok.result.ok
    await harness.control(
        "POST", "/_sandbox/tokens/revoke", json={"platform": "meta", "account": COFFEE_PAGE}
    )
    bad = await harness.stub("health").CheckConnection(
        pb.CheckConnectionRequest(tenant_id=tenant, connection_id=page)
    )
    assert not bad.result.ok
    assert bad.result.error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
