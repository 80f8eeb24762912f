"""LinkedIn against the sandbox over real HTTP: the OAuth dance (with and without
partner refresh), member and organization posts, images, faults, reconciliation."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_connectors import convert

pytestmark = pytest.mark.integration

MEMBER = "urn:li:person:SbxM1mbr01"
ORG = "urn:li:organization:90000001"


async def _connect(harness: Any, tenant: str) -> dict[str, pb.Connection]:
    result = await harness.connect(tenant, "linkedin", capabilities=("publish", "analytics"))
    return {c.connection.external_id: c.connection for c in result.connections}


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
        )
    )


async def test_dance_connects_member_and_organization(harness: Any, tenant: str) -> None:
    connections = await _connect(harness, tenant)
    assert set(connections) == {MEMBER, ORG}
    member, org = connections[MEMBER], connections[ORG]
    assert member.account_kind == "member"
    assert member.account_name == "Sandbox Marketer"
    assert org.account_kind == "organization"
    assert org.account_name == "Sandbox Coffee Co"
    # No partner refresh: the 60-day expiry is a hard date, and it says so.
    assert not member.has_refresh_token
    expires = convert.dt(member.expires_at)
    assert timedelta(days=59) < expires - datetime.now(UTC) <= timedelta(days=60)
    assert "reconnect before" in member.status_reason
    soon = await harness.stub("health").ListExpiringConnections(
        pb.ListExpiringConnectionsRequest(
            tenant_id=tenant, expires_before=convert.ts(datetime.now(UTC) + timedelta(days=61))
        )
    )
    assert {c.external_id for c in soon.connections} == {MEMBER, ORG}
    later = await harness.stub("health").ListExpiringConnections(
        pb.ListExpiringConnectionsRequest(
            tenant_id=tenant, expires_before=convert.ts(datetime.now(UTC) + timedelta(days=59))
        )
    )
    assert list(later.connections) == []
    refresh = await harness.stub("health").RefreshConnection(
        pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=member.id, force=True)
    )
    # Nothing to refresh with: a health check runs instead.
    assert refresh.outcome == pb.REFRESH_OUTCOME_CHECKED
    assert refresh.check.ok


async def test_cancelled_consent_is_refused(harness: Any, tenant: str, rpc_error: Any) -> None:
    error = await rpc_error(harness.connect(tenant, "linkedin", deny=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cancelled" in error.details()
    assert await harness.stored_bundles(tenant) == 0


async def test_reused_code_and_state_are_refused(harness: Any, tenant: str, rpc_error: Any) -> None:
    start = await harness.stub().StartAuth(
        pb.StartAuthRequest(
            tenant_id=tenant,
            user_id="u",
            platform="linkedin",
            redirect_uri="https://app.postd.test/oauth/callback",
        )
    )
    assert "code_challenge" not in start.authorize_url  # LinkedIn web apps have no PKCE
    assert "scope=openid%20profile" in start.authorize_url
    await harness.consent(platform="linkedin")
    params = await harness.authorize(start.authorize_url)
    request = pb.CompleteAuthRequest(
        platform="linkedin", state=params["state"], code=params["code"]
    )
    await harness.stub().CompleteAuth(request)
    error = await rpc_error(harness.stub().CompleteAuth(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_member_text_post_escapes_little_text(harness: Any, tenant: str) -> None:
    member = (await _connect(harness, tenant))[MEMBER]
    text = "Fresh (roasted) beans #coffee @ 8am"
    result = await _publish(harness, tenant, member.id, text=text)
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED
    assert result.platform_post_id.startswith("urn:li:share:")
    (post,) = await harness.posts(platform="linkedin", account=MEMBER)
    assert post["id"] == result.platform_post_id
    assert post["text"] == r"Fresh \(roasted\) beans \#coffee \@ 8am"
    found = await harness.stub("publisher").FindPost(
        pb.FindPostRequest(
            tenant_id=tenant, connection_id=member.id, content=common_pb2.PostContent(text=text)
        )
    )
    assert found.found
    assert found.platform_post_id == result.platform_post_id


async def test_organization_image_post_uploads_the_bytes(
    harness: Any, tenant: str, media_server: str, media_dir: Path
) -> None:
    org = (await _connect(harness, tenant))[ORG]
    result = await _publish(
        harness,
        tenant,
        org.id,
        text="New cups",
        media=[{"url": f"{media_server}/media/square.jpg", "alt_text": "a red square"}],
    )
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    (post,) = await harness.posts(platform="linkedin", account=ORG)
    (image_urn,) = post["media"]
    upload = await harness.control("GET", f"/_sandbox/uploads/{image_urn}")
    assert upload["complete"]
    assert upload["sha256"] == hashlib.sha256((media_dir / "square.jpg").read_bytes()).hexdigest()
    assert post["request_fields"]["content"]["media"]["altText"] == "a red square"


async def test_multi_image_and_article_posts(harness: Any, tenant: str, media_server: str) -> None:
    org = (await _connect(harness, tenant))[ORG]
    media = [{"url": f"{media_server}/media/square.jpg?i={i}"} for i in range(3)]
    multi = await _publish(harness, tenant, org.id, text="Three", media=media)
    article = await _publish(
        harness, tenant, org.id, text="Read this", link="https://example.com/blog", title="Our blog"
    )
    assert multi.status == article.status == pb.PUBLISH_STATUS_PUBLISHED
    posts = {p["text"]: p for p in await harness.posts(platform="linkedin", account=ORG)}
    assert len(posts["Three"]["media"]) == 3
    assert posts["Read this"]["request_fields"]["content"]["article"] == {
        "source": "https://example.com/blog",
        "title": "Our blog",
    }


FAULTS: list[tuple[dict[str, Any], int]] = [
    ({"kind": "rate_limit", "retry_after": 45}, common_pb2.ERROR_CATEGORY_RATE_LIMITED),
    ({"kind": "server_error"}, common_pb2.ERROR_CATEGORY_TRANSIENT),
    ({"kind": "outage"}, common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE),
    ({"kind": "token_revoked"}, common_pb2.ERROR_CATEGORY_AUTH_REVOKED),
    ({"kind": "token_expired"}, common_pb2.ERROR_CATEGORY_AUTH_EXPIRED),
    ({"kind": "permission_removed"}, common_pb2.ERROR_CATEGORY_PERMISSION_MISSING),
    (
        {"kind": "platform_error", "error": "linkedin_duplicate"},
        common_pb2.ERROR_CATEGORY_CONTENT_REJECTED,
    ),
    (
        {"kind": "platform_error", "error": "linkedin_member_throttle"},
        common_pb2.ERROR_CATEGORY_RATE_LIMITED,
    ),
    ({"kind": "platform_error", "error": "invalid_token"}, common_pb2.ERROR_CATEGORY_AUTH_REVOKED),
    (
        {"kind": "platform_error", "error": "linkedin_version_inactive"},
        common_pb2.ERROR_CATEGORY_INVALID_REQUEST,
    ),
    (
        {"kind": "platform_error", "error": "revoked_token", "status": 500},
        common_pb2.ERROR_CATEGORY_TRANSIENT,
    ),
]


@pytest.mark.parametrize(
    ("fault", "category"), FAULTS, ids=[f[0].get("error", f[0]["kind"]) for f in FAULTS]
)
async def test_faults_map_to_categories(
    harness: Any, tenant: str, fault: dict[str, Any], category: int
) -> None:
    member = (await _connect(harness, tenant))[MEMBER]
    await harness.fault(platform="linkedin", account=MEMBER, path_contains="/rest/posts", **fault)
    result = await _publish(harness, tenant, member.id, text="Hello")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == category, result.error
    if category == common_pb2.ERROR_CATEGORY_AUTH_EXPIRED:
        # No refresh token: a person must reconnect, and the error says so.
        assert result.error.action == common_pb2.ERROR_ACTION_RECONNECT
        assert not result.error.retryable
    if "retry_after" in fault:
        assert result.error.retry_after.seconds == fault["retry_after"]
    assert await harness.posts(platform="linkedin", account=MEMBER) == []


async def test_lost_response_is_reconciled(harness: Any, tenant: str, rpc_error: Any) -> None:
    member = (await _connect(harness, tenant))[MEMBER]
    key = str(uuid.uuid4())
    await harness.fault(
        platform="linkedin", account=MEMBER, kind="lost_response", path_contains="/rest/posts"
    )
    error = await rpc_error(_publish(harness, tenant, member.id, key, text="Once only"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    retry = await _publish(harness, tenant, member.id, key, text="Once only")
    assert retry.reconciled
    posts = await harness.posts(platform="linkedin", account=MEMBER)
    assert [p["id"] for p in posts] == [retry.platform_post_id]


async def test_organization_analytics(harness: Any, tenant: str) -> None:
    connections = await _connect(harness, tenant)
    org, member = connections[ORG], connections[MEMBER]
    post = await _publish(harness, tenant, org.id, text="Count me")
    stats = await harness.stub().GetPostAnalytics(
        pb.GetPostAnalyticsRequest(
            tenant_id=tenant, connection_id=org.id, platform_post_ids=[post.platform_post_id]
        )
    )
    (entry,) = stats.posts
    assert entry.metrics.HasField("impressions")
    assert entry.metrics.HasField("clicks")
    assert "likes" in entry.metrics.breakdown
    mine = await _publish(harness, tenant, member.id, text="Mine")
    member_stats = await harness.stub().GetPostAnalytics(
        pb.GetPostAnalyticsRequest(
            tenant_id=tenant, connection_id=member.id, platform_post_ids=[mine.platform_post_id]
        )
    )
    assert "organization" in member_stats.posts[0].error.message


async def test_delete(harness: Any, tenant: str) -> None:
    member = (await _connect(harness, tenant))[MEMBER]
    post = await _publish(harness, tenant, member.id, text="Short-lived")
    deleted = await harness.stub("publisher").DeletePost(
        pb.DeletePostRequest(
            tenant_id=tenant, connection_id=member.id, platform_post_id=post.platform_post_id
        )
    )
    assert deleted.deleted
    (recorded,) = await harness.posts(platform="linkedin", account=MEMBER)
    assert recorded["deleted"]


class TestPartnerRefresh:
    """An app approved for programmatic refresh gets a refresh token."""

    @pytest.fixture
    def sandbox_overrides(self) -> dict[str, Any]:
        return {"linkedin_partner": True}

    async def test_refresh_keeps_the_refresh_expiry(self, harness: Any, tenant: str) -> None:
        member = (await _connect(harness, tenant))[MEMBER]
        assert member.has_refresh_token
        refresh_expiry = convert.dt(member.refresh_expires_at)
        assert timedelta(days=364) < refresh_expiry - datetime.now(UTC) <= timedelta(days=365)
        assert "reconnect before" not in member.status_reason
        before = await harness.tokens.get(tenant, member.id)
        result = await harness.stub("health").RefreshConnection(
            pb.RefreshConnectionRequest(
                tenant_id=tenant, connection_id=member.id, force=True, reason="test"
            )
        )
        assert result.outcome == pb.REFRESH_OUTCOME_REFRESHED
        after = await harness.tokens.get(tenant, member.id)
        assert after.bundle.access_token.reveal() != before.bundle.access_token.reveal()
        assert after.bundle.refresh_token.reveal() == before.bundle.refresh_token.reveal()
        # Refreshing does not extend LinkedIn's refresh token.
        new_expiry = convert.dt(result.connection.refresh_expires_at)
        assert abs((new_expiry - refresh_expiry).total_seconds()) < 5
        not_due = await harness.stub("health").RefreshConnection(
            pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=member.id)
        )
        assert not_due.outcome == pb.REFRESH_OUTCOME_NOT_DUE

    async def test_expired_token_refreshed_then_published(self, harness: Any, tenant: str) -> None:
        member = (await _connect(harness, tenant))[MEMBER]
        before = await harness.tokens.get(tenant, member.id)
        await harness.control(
            "POST",
            "/_sandbox/tokens/expire",
            json={"platform": "linkedin", "access_token": before.bundle.access_token.reveal()},
        )
        result = await _publish(harness, tenant, member.id, text="After refresh")
        assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
        assert len(await harness.posts(platform="linkedin", account=MEMBER)) == 1

    async def test_concurrent_refreshes_are_single_flight(self, harness: Any, tenant: str) -> None:
        member = (await _connect(harness, tenant))[MEMBER]
        await harness.fault(
            platform="linkedin", kind="slow", delay_ms=400, path_contains="/oauth/v2/accessToken"
        )
        before = await harness.control("GET", "/_sandbox/tokens", params={"platform": "linkedin"})
        request = pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=member.id, force=True)
        results = await asyncio.gather(
            *(harness.stub("health").RefreshConnection(request) for _ in range(3))
        )
        assert [r.outcome for r in results] == [pb.REFRESH_OUTCOME_REFRESHED] * 3
        assert sorted(r.joined_in_flight for r in results) == [False, True, True]
        after = await harness.control("GET", "/_sandbox/tokens", params={"platform": "linkedin"})
        issued = len(after["tokens"]) - len(before["tokens"])
        assert issued == 1  # one refresh call reached LinkedIn

    async def test_revoked_refresh_token_is_auth_revoked(self, harness: Any, tenant: str) -> None:
        member = (await _connect(harness, tenant))[MEMBER]
        await harness.control(
            "POST",
            "/_sandbox/tokens/revoke",
            json={"platform": "linkedin", "account": "SbxM1mbr01"},
        )
        result = await harness.stub("health").RefreshConnection(
            pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=member.id, force=True)
        )
        assert result.outcome == pb.REFRESH_OUTCOME_FAILED
        assert result.error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
        assert result.connection.last_error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
