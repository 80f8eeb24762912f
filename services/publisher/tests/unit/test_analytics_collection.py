"""Collection as data: content types, deltas between snapshots, the decaying schedule,
and analytics' share of an account's call budget (publishing keeps the rest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postd.common.v1.common_pb2 import MEDIA_KIND_VIDEO, MediaItem, PostContent
from postd_publisher.domain.analytics import (
    AnalyticsShare,
    CollectionDemand,
    CollectionSchedule,
    Figures,
    content_type,
    max_posts_per_round,
    parse_schedule,
    parse_shares,
    plan_collections,
    round_cost,
)
from postd_publisher.domain.quota import ANALYTICS, PUBLISH, QuotaBook, parse_rules

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_content_types() -> None:
    assert content_type(PostContent(text="hi", link="https://x")) == "text"
    assert content_type(PostContent(media=[MediaItem(url="a.jpg")])) == "image"
    assert content_type(PostContent(media=[MediaItem(url="a", kind=MEDIA_KIND_VIDEO)])) == "video"
    assert content_type(PostContent(media=[MediaItem(url="a", mime_type="video/mp4")])) == "video"
    assert content_type(PostContent(media=[MediaItem(url="a"), MediaItem(url="b")])) == "carousel"


def test_deltas_between_snapshots_and_reactions_as_likes() -> None:
    first = Figures.from_platform(
        {"impressions": 100, "reach": 80, "engagements": 9},
        {"like": 5, "love": 2, "comments": 1},
    )
    assert first.likes == 7
    assert first.comments == 1
    assert first.saves is None
    second = Figures.from_platform(
        {"impressions": 150, "reach": 110, "engagements": 8}, {"like": 6, "love": 2}
    )
    delta = second.minus(first)
    assert (delta.impressions, delta.reach, delta.engagements, delta.likes) == (50, 30, -1, 1)
    assert delta.video_views is None  # never reported: not a zero
    assert delta.comments is None
    assert second.minus(None).impressions == 150


def test_the_schedule_decays_and_stops() -> None:
    schedule = CollectionSchedule()
    published = NOW
    assert schedule.first_post_run(published) == published + timedelta(hours=1)
    assert schedule.next_post_run(published, published + timedelta(hours=3)) == (
        published + timedelta(hours=4)
    )
    day3 = published + timedelta(days=3)
    assert schedule.next_post_run(published, day3) == day3 + timedelta(days=1)
    # The last snapshot is at the stop age exactly, then none.
    late = published + timedelta(days=29, hours=12)
    assert schedule.next_post_run(published, late) == published + timedelta(days=30)
    assert schedule.next_post_run(published, published + timedelta(days=30)) is None
    assert parse_schedule("60:5, 600:60") == (
        (timedelta(seconds=60), timedelta(seconds=5)),
        (timedelta(seconds=600), timedelta(seconds=60)),
    )
    with pytest.raises(ValueError, match="increasing"):
        parse_schedule("600:60,60:5")


def test_costs_and_round_sizes_follow_the_platforms() -> None:
    assert round_cost("facebook", "post", 7) == 7  # one insights call per post
    assert round_cost("tiktok", "post", 41) == 3  # 20 videos a call
    assert round_cost("linkedin", "account", 0) == 1
    every_call = frozenset({PUBLISH, ANALYTICS})
    book = QuotaBook(call_overrides=parse_rules("facebook:calls_per_hour:10:3600", every_call))
    assert max_posts_per_round("facebook", book, AnalyticsShare()) == 5
    assert parse_shares("facebook:0.3, 0.6").of("facebook") == 0.3
    assert parse_shares("facebook:0.3, 0.6").of("tiktok") == 0.6


def test_analytics_backs_off_past_its_share_and_publishing_keeps_the_rest() -> None:
    rules = parse_rules("facebook:calls_per_hour:10:3600", frozenset({PUBLISH, ANALYTICS}))
    book = QuotaBook(call_overrides=rules)
    key = ("t", "page", "calls_per_hour")
    # Four calls in the window: analytics may take one more (half of 10 is 5).
    used = {key: [NOW - timedelta(minutes=m) for m in (50, 40, 30, 20)]}
    plan = plan_collections(
        [
            CollectionDemand("r1", "t", "page", "facebook", 1),
            CollectionDemand("r2", "t", "page", "facebook", 1),
        ],
        used,
        book,
        AnalyticsShare(),
        NOW,
    )
    assert plan.admitted == {"r1"}
    (deferral,) = plan.deferred
    assert deferral.job_id == "r2"
    # When the oldest call leaves the hour, there is room again.
    assert deferral.until == NOW - timedelta(minutes=50) + timedelta(hours=1)
    assert deferral.reason.startswith("Analytics backs off")
    assert "50%" in deferral.reason
    assert [e.limit_name for e in plan.entries] == ["calls_per_hour"]
    # A platform without call budgets is not held back.
    free = plan_collections(
        [CollectionDemand("r3", "t", "org", "unknown", 5)], {}, book, AnalyticsShare(), NOW
    )
    assert free.admitted == {"r3"}
    # Publishing spends the same budget, and may use all of it.
    assert [r.name for r in book.spent_by("facebook", PUBLISH)] == ["calls_per_hour"]
