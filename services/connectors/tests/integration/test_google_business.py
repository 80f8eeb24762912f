"""Google Business Profile against the sandbox over real HTTP: Google OAuth (offline,
consent prompt, PKCE), accounts and locations, local posts (standard, event, offer
with call-to-action), reviews and replies, the one-hour token, error categories."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_connectors import convert
from postd_connectors.domain.oauth import s256_challenge

pytestmark = pytest.mark.integration

DOWNTOWN = "locations/2000000000000000001"
HARBOUR = "locations/2000000000000000002"
BUSINESS = "https://www.googleapis.com/auth/business.manage"


async def _connect(harness: Any, tenant: str, **consent: Any) -> dict[str, pb.Connection]:
    result = await harness.connect(
        tenant, "google_business", capabilities=("publish", "reviews"), **consent
    )
    return {c.connection.external_id: c.connection for c in result.connections}


async def _publish(
    harness: Any, tenant: str, connection_id: str, key: str | None = None, **content: Any
) -> Any:
    media = [common_pb2.MediaItem(**m) for m in content.pop("media", [])]
    return await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=connection_id,
            idempotency_key=key or str(uuid.uuid4()),
            content=common_pb2.PostContent(media=media, **content),
        )
    )


async def test_dance_lists_every_location(harness: Any, tenant: str, rpc_error: Any) -> None:
    start = await harness.stub().StartAuth(
        pb.StartAuthRequest(
            tenant_id=tenant,
            user_id="u",
            platform="google_business",
            capabilities=["publish", "reviews"],
            redirect_uri="https://app.postd.test/oauth/callback",
        )
    )
    query = parse_qs(urlsplit(start.authorize_url).query)
    assert query["access_type"] == ["offline"]
    assert query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"]
    assert BUSINESS in query["scope"][0].split()
    await harness.consent(platform="google")
    params = await harness.authorize(start.authorize_url)
    result = await harness.stub().CompleteAuth(
        pb.CompleteAuthRequest(
            platform="google_business", state=params["state"], code=params["code"], params=params
        )
    )
    locations = {c.connection.external_id: c.connection for c in result.connections}
    assert set(locations) == {DOWNTOWN, HARBOUR}
    downtown = locations[DOWNTOWN]
    assert downtown.account_kind == "location"
    assert downtown.account_name == "Sandbox Coffee Co — Downtown"
    assert downtown.has_refresh_token
    lifetime = convert.dt(downtown.expires_at) - datetime.now(UTC)
    assert timedelta(minutes=58) < lifetime <= timedelta(hours=1)


async def test_pkce_mismatch_and_missing_scope(harness: Any, tenant: str, rpc_error: Any) -> None:
    start = await harness.stub().StartAuth(
        pb.StartAuthRequest(
            tenant_id=tenant,
            user_id="u",
            platform="google_business",
            redirect_uri="https://app.postd.test/oauth/callback",
        )
    )
    parts = urlsplit(start.authorize_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["code_challenge"] = s256_challenge("not-ours-" + "q" * 40)
    await harness.consent(platform="google")
    params = await harness.authorize(urlunsplit(parts._replace(query=urlencode(query))))
    error = await rpc_error(
        harness.stub().CompleteAuth(
            pb.CompleteAuthRequest(
                platform="google_business", state=params["state"], code=params["code"]
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await harness.stored_bundles(tenant) == 0
    # A person who unticks the Business Profile permission: nothing to list.
    refused = await rpc_error(_connect(harness, tenant, scopes=["openid", "email"]))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "did not give POSTD permission" in refused.details()


async def test_standard_event_and_offer_posts(harness: Any, tenant: str, media_server: str) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    standard = await _publish(
        harness,
        tenant,
        location.id,
        text="Pumpkin latte is back",
        link="https://sandbox-coffee.example.com/menu",
        media=[{"url": f"{media_server}/media/square.jpg"}],
        options={"google_business.cta_type": "ORDER"},
    )
    when = {
        "google_business.event_start": "2026-12-24T18:00:00Z",
        "google_business.event_end": "2026-12-24T22:00:00Z",
    }
    event = await _publish(
        harness,
        tenant,
        location.id,
        text="Carols and cocoa",
        title="Christmas Eve",
        options={"google_business.topic_type": "EVENT", **when},
    )
    offer = await _publish(
        harness,
        tenant,
        location.id,
        text="Two for one",
        title="Winter offer",
        options={
            "google_business.topic_type": "OFFER",
            "google_business.coupon_code": "WINTER2",
            **when,
        },
    )
    for result in (standard, event, offer):
        assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
        assert result.platform_post_id.startswith(
            "accounts/100000000000000000001/" + DOWNTOWN + "/localPosts/"
        )
    posts = {
        p["kind"]: p for p in await harness.posts(platform="google", account=DOWNTOWN.split("/")[1])
    }
    assert posts["gbp_standard"]["request_fields"]["callToAction"] == {
        "actionType": "ORDER",
        "url": "https://sandbox-coffee.example.com/menu",
    }
    assert posts["gbp_standard"]["media"] == [f"{media_server}/media/square.jpg"]
    assert posts["gbp_event"]["request_fields"]["event"]["title"] == "Christmas Eve"
    assert posts["gbp_event"]["request_fields"]["event"]["schedule"]["startDate"] == {
        "year": 2026,
        "month": 12,
        "day": 24,
    }
    assert posts["gbp_offer"]["request_fields"]["offer"] == {"couponCode": "WINTER2"}
    deleted = await harness.stub("publisher").DeletePost(
        pb.DeletePostRequest(
            tenant_id=tenant, connection_id=location.id, platform_post_id=event.platform_post_id
        )
    )
    assert deleted.deleted


async def test_reviews_are_listed_and_answered(harness: Any, tenant: str, rpc_error: Any) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    page = await harness.stub().ListReviews(
        pb.ListReviewsRequest(tenant_id=tenant, connection_id=location.id)
    )
    assert len(page.reviews) == 3
    assert page.next_page_token == ""
    assert page.average_rating == pytest.approx(3.7, abs=0.01)
    worst = min(page.reviews, key=lambda r: r.star_rating)
    assert worst.comment == "Too busy."
    for _ in range(2):  # idempotent
        done = await harness.stub().ReplyToReview(
            pb.ReplyToReviewRequest(
                tenant_id=tenant,
                connection_id=location.id,
                review_id=worst.review_id,
                comment="Sorry! Try us before 8am.",
            )
        )
        assert done.replied
    again = await harness.stub().ListReviews(
        pb.ListReviewsRequest(tenant_id=tenant, connection_id=location.id)
    )
    replied = next(r for r in again.reviews if r.review_id == worst.review_id)
    assert replied.reply == "Sorry! Try us before 8am."
    other = await rpc_error(
        harness.stub().ListReviews(
            pb.ListReviewsRequest(tenant_id="someone-else", connection_id=location.id)
        )
    )
    assert other.code() == grpc.StatusCode.NOT_FOUND
    facebook = await harness.connect(tenant, "facebook")
    none = await rpc_error(
        harness.stub().ListReviews(
            pb.ListReviewsRequest(
                tenant_id=tenant, connection_id=facebook.connections[0].connection.id
            )
        )
    )
    assert none.code() == grpc.StatusCode.FAILED_PRECONDITION


class TestTokenRefreshedAhead:
    @pytest.fixture
    def harness_env(self) -> dict[str, str]:
        # Refresh whenever under an hour is left: every call refreshes first.
        return {"POSTD_REFRESH_AHEAD_SECONDS": "3600"}

    async def test_one_hour_token_refreshed_before_the_call(
        self, harness: Any, tenant: str
    ) -> None:
        location = (await _connect(harness, tenant))[DOWNTOWN]
        before = await harness.tokens.get(tenant, location.id)
        result = await _publish(harness, tenant, location.id, text="Fresh token")
        assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
        after = await harness.tokens.get(tenant, location.id)
        assert after.bundle.access_token.reveal() != before.bundle.access_token.reveal()
        # Google sends no new refresh token; the stored one is kept.
        assert after.bundle.refresh_token.reveal() == before.bundle.refresh_token.reveal()
        audit = await harness.stub().ListConnectionAudit(
            pb.ListConnectionAuditRequest(tenant_id=tenant, connection_id=location.id)
        )
        assert audit.entries[0].action == "refreshed"


async def test_revoked_at_google_is_auth_revoked(harness: Any, tenant: str) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    await harness.control(
        "POST",
        "/_sandbox/tokens/revoke",
        json={"platform": "google", "account": "100000000000000000001"},
    )
    result = await _publish(harness, tenant, location.id, text="After revocation")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
    assert result.error.action == common_pb2.ERROR_ACTION_RECONNECT


FAULTS: list[tuple[dict[str, Any], int]] = [
    ({"kind": "rate_limit", "retry_after": 20}, common_pb2.ERROR_CATEGORY_RATE_LIMITED),
    ({"kind": "server_error"}, common_pb2.ERROR_CATEGORY_TRANSIENT),
    ({"kind": "outage"}, common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE),
    ({"kind": "permission_removed"}, common_pb2.ERROR_CATEGORY_PERMISSION_MISSING),
    (
        {"kind": "platform_error", "error": "google_caller_denied"},
        common_pb2.ERROR_CATEGORY_PERMISSION_MISSING,
    ),
    ({"kind": "platform_error", "error": "not_found"}, common_pb2.ERROR_CATEGORY_NOT_FOUND),
]


@pytest.mark.parametrize(
    ("fault", "category"), FAULTS, ids=[f[0].get("error", f[0]["kind"]) for f in FAULTS]
)
async def test_faults_map_to_categories(
    harness: Any, tenant: str, fault: dict[str, Any], category: int
) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    await harness.fault(platform="google", path_contains="/localPosts", **fault)
    result = await _publish(harness, tenant, location.id, text="Hello")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == category, result.error


async def test_token_expired_fault_is_refreshed_and_retried(harness: Any, tenant: str) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    await harness.fault(platform="google", kind="token_expired", path_contains="/localPosts")
    result = await _publish(harness, tenant, location.id, text="Retried once")
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    assert len(await harness.posts(platform="google", account="2000000000000000001")) == 1


async def test_refused_content_carries_googles_reason(harness: Any, tenant: str) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    result = await _publish(harness, tenant, location.id, text="x" * 1600)
    assert result.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert "summary must be at most 1500 characters" in result.error.message


async def test_lost_response_is_reconciled(harness: Any, tenant: str, rpc_error: Any) -> None:
    location = (await _connect(harness, tenant))[DOWNTOWN]
    key = str(uuid.uuid4())
    await harness.fault(platform="google", kind="lost_response", path_contains="/localPosts")
    error = await rpc_error(
        _publish(harness, tenant, location.id, key, text="Once", link="https://x.example/a")
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    retry = await _publish(
        harness, tenant, location.id, key, text="Once", link="https://x.example/a"
    )
    assert retry.reconciled
    assert len(await harness.posts(platform="google", account="2000000000000000001")) == 1


async def test_validation_messages(harness: Any, tenant: str) -> None:
    report = (
        await harness.stub("publisher").ValidatePost(
            pb.ValidatePostRequest(
                tenant_id=tenant,
                targets=[pb.ValidationTarget(platform="google_business")],
                content=common_pb2.PostContent(
                    text="y" * 1600, options={"google_business.topic_type": "EVENT"}
                ),
            )
        )
    ).report
    messages = [v.message for v in report.targets[0].violations]
    assert (
        "Google Business Profile posts are limited to 1,500 characters; this one has 1,600."
        in messages
    )
    assert "Google Business Profile needs a title for this post." in messages
    assert (
        "Google Business Profile needs the option google_business.event_start for event posts."
        in messages
    )
