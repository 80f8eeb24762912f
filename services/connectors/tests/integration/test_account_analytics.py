"""GetAccountAnalytics against the sandbox over real HTTP: each platform's documented
account insights endpoint, mapped to normalized figures per day (or lifetime totals
where the platform has no daily ones), with the posts' own growth inside them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"
COFFEE_IG = "17841400000000001"
ORG = "urn:li:organization:90000001"
MEMBER = "urn:li:person:SbxM1mbr01"


def _window(days: int, now: datetime | None = None) -> common_pb2.TimeRange:
    end = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    start, stop = Timestamp(), Timestamp()
    start.FromDatetime(end - timedelta(days=days))
    stop.FromDatetime(end)
    return common_pb2.TimeRange(start_time=start, end_time=stop)


async def _account(
    harness: Any, tenant: str, connection_id: str, window: common_pb2.TimeRange | None = None
) -> pb.GetAccountAnalyticsResponse:
    request = pb.GetAccountAnalyticsRequest(tenant_id=tenant, connection_id=connection_id)
    if window is not None:
        request.window.CopyFrom(window)
    reply: pb.GetAccountAnalyticsResponse = await harness.stub("publisher").GetAccountAnalytics(
        request
    )
    return reply


async def _connections(harness: Any, tenant: str, platform: str, **kw: Any) -> dict[str, str]:
    result = await harness.connect(tenant, platform, capabilities=("publish", "analytics"), **kw)
    return {c.connection.external_id: c.connection.id for c in result.connections}


async def test_facebook_page_insights_per_day_include_the_posts(harness: Any, tenant: str) -> None:
    page = (await _connections(harness, tenant, "facebook"))[COFFEE_PAGE]
    published = await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=page,
            idempotency_key=str(uuid.uuid4()),
            content=common_pb2.PostContent(text=f"Account figures {uuid.uuid4().hex[:6]}"),
        )
    )
    assert published.status == pb.PUBLISH_STATUS_PUBLISHED
    before = await _account(harness, tenant, page, _window(3))
    assert not before.HasField("error"), before.error
    assert len(before.days) == 3
    assert [d.date for d in before.days] == sorted(d.date for d in before.days)
    await harness.control("POST", "/_sandbox/clock", json={"advance_seconds": 2 * 86400})
    after = await _account(harness, tenant, page, _window(2, datetime.now(UTC) + timedelta(days=2)))
    # The day after the post went out carries its impressions on top of the page's own.
    assert len(after.days) == 2
    assert all(d.metrics.HasField("impressions") and d.metrics.impressions > 0 for d in after.days)
    assert all(d.metrics.HasField("reach") for d in after.days)
    assert "page_likes_added" in after.days[0].metrics.breakdown


async def test_instagram_account_insights(harness: Any, tenant: str) -> None:
    ig = (await _connections(harness, tenant, "instagram"))[COFFEE_IG]
    reply = await _account(harness, tenant, ig, _window(1))
    assert not reply.HasField("error"), reply.error
    (day,) = reply.days
    assert day.metrics.reach > 0
    assert day.metrics.HasField("engagements")
    assert "profile_visits" in day.metrics.breakdown


async def test_linkedin_organization_statistics_by_day(harness: Any, tenant: str) -> None:
    accounts = await _connections(harness, tenant, "linkedin")
    org, member = accounts[ORG], accounts[MEMBER]
    made = await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=org,
            idempotency_key=str(uuid.uuid4()),
            content=common_pb2.PostContent(text=f"Organization news {uuid.uuid4().hex[:6]}"),
        )
    )
    assert made.status == pb.PUBLISH_STATUS_PUBLISHED
    await harness.control("POST", "/_sandbox/clock", json={"advance_seconds": 2 * 86400})
    now = datetime.now(UTC) + timedelta(days=2)
    reply = await _account(harness, tenant, org, _window(3, now))
    assert not reply.HasField("error"), reply.error
    assert len(reply.days) == 3
    assert sum(d.metrics.impressions for d in reply.days) > 0
    assert all(set(d.metrics.breakdown) == {"likes", "comments", "shares"} for d in reply.days)
    # A member's profile has no statistics: said so in plain words, not a failed call.
    refused = await _account(harness, tenant, member, _window(1))
    assert refused.error.category == common_pb2.ERROR_CATEGORY_INVALID_REQUEST
    assert "organization pages only" in refused.error.message


async def test_tiktok_reports_lifetime_totals(harness: Any, tenant: str) -> None:
    (creator,) = (await _connections(harness, tenant, "tiktok")).values()
    reply = await _account(harness, tenant, creator)
    assert not reply.HasField("error"), reply.error
    assert list(reply.days) == []
    assert reply.totals["followers"] > 0
    assert reply.totals["likes"] >= 24_000
    assert "videos" in reply.totals


async def test_business_profile_performance(harness: Any, tenant: str) -> None:
    locations = await _connections(harness, tenant, "google_business")
    location = next(iter(locations.values()))
    reply = await _account(harness, tenant, location, _window(7))
    assert not reply.HasField("error"), reply.error
    assert len(reply.days) == 7
    assert all(d.metrics.impressions > 0 for d in reply.days)
    assert {"website_clicks", "call_clicks", "direction_requests"} <= set(
        reply.days[0].metrics.breakdown
    )


async def test_mailchimp_audience_activity(harness: Any, tenant: str) -> None:
    (account,) = (await _connections(harness, tenant, "mailchimp")).values()
    reply = await _account(harness, tenant, account, _window(5))
    assert not reply.HasField("error"), reply.error
    assert len(reply.days) >= 5
    assert reply.totals["subscribers"] >= 1200
    assert all("subscribed" in d.metrics.breakdown for d in reply.days)


async def test_window_longer_than_ninety_days_is_refused(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    page = (await _connections(harness, tenant, "facebook"))[COFFEE_PAGE]
    error = await rpc_error(_account(harness, tenant, page, _window(120)))
    assert error.code().name == "INVALID_ARGUMENT"
