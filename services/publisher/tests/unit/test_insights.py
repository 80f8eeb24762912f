"""Insights on known inputs: findings when the data is clear, "no clear difference"
when it is not, "not enough data" below the minimum sample, never a claim without n."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from postd_publisher.domain.insights import (
    DayFigure,
    InsightRules,
    Kind,
    PostFigure,
    Verdict,
    best_hours,
    content_types,
    insights,
    standout_posts,
    week_over_week,
)

RULES = InsightRules(min_posts=10, bootstrap=400)
BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def post(
    i: int,
    reach: int,
    *,
    ctype: str = "image",
    platform: str = "instagram",
    connection: str = "ig-1",
    at: datetime | None = None,
    engagements: int | None = None,
) -> PostFigure:
    return PostFigure(
        post_id=f"p{i}",
        connection_id=connection,
        platform=platform,
        content_type=ctype,
        published_at=at or BASE + timedelta(hours=i),
        impressions=reach * 2,
        reach=reach,
        engagements=engagements if engagements is not None else reach // 20,
        video_views=None,
    )


def spread(i: int) -> int:
    """A deterministic wobble of about ±20 %."""
    return [0, 7, -5, 12, -9, 3, -14, 9, -2, 16, -11, 5, -7, 10, -3, 14][i % 16]


def test_carousels_that_reach_twice_as_far_are_a_finding_with_n_and_interval() -> None:
    images = [post(i, 1000 + 10 * spread(i)) for i in range(14)]
    carousels = [post(100 + i, 2100 + 20 * spread(i), ctype="carousel") for i in range(12)]
    found = content_types(images + carousels, RULES)
    reach = next(i for i in found if i.metric == "reach")
    assert reach.verdict is Verdict.FINDING
    assert (reach.subject, reach.baseline) == ("carousel", "image")
    assert (reach.n, reach.baseline_n) == (12, 14)
    assert 1.9 < reach.ratio < 2.3
    assert reach.ci_low > 1.0
    assert reach.p_value < 0.01
    assert reach.confidence == "high"
    assert reach.summary.startswith("On Instagram your carousels get 2.")
    assert "n = 12 and 14" in reach.summary
    # The same engagement per person reached: no claim about the rate.
    rate = next(i for i in found if i.metric == "engagement_rate")
    assert rate.verdict is Verdict.NO_CLEAR_DIFFERENCE
    assert "no clear difference" in rate.summary


def test_too_few_posts_of_a_type_is_not_enough_data() -> None:
    images = [post(i, 1000 + spread(i)) for i in range(20)]
    videos = [post(50 + i, 9000, ctype="video") for i in range(4)]
    (short,) = content_types(images + videos, RULES)
    assert short.verdict is Verdict.NOT_ENOUGH_DATA
    assert (short.n, short.baseline_n) == (4, 20)
    assert short.summary.startswith("Not enough data yet to compare videos with images")
    assert short.ratio == 0.0


def test_similar_groups_are_no_clear_difference() -> None:
    texts = [post(i, 1000 + 30 * spread(i), ctype="text", platform="facebook") for i in range(15)]
    images = [post(40 + i, 1000 + 30 * spread(i + 3), platform="facebook") for i in range(15)]
    found = content_types(texts + images, RULES)
    assert {i.verdict for i in found} == {Verdict.NO_CLEAR_DIFFERENCE}


def test_best_hours_in_the_tenants_zone_half_an_hour_off_utc() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    # 12:30 UTC is 18:00 in Kolkata: the evening window; the rest in the morning.
    evening = [
        post(i, 3000 + 30 * spread(i), at=datetime(2026, 3, 2 + i, 12, 30, tzinfo=UTC))
        for i in range(12)
    ]
    morning = [
        post(50 + i, 1000 + 10 * spread(i), at=datetime(2026, 3, 2 + i, 3, 30, tzinfo=UTC))
        for i in range(12)
    ]
    (best,) = best_hours(evening + morning, kolkata, RULES)
    assert best.verdict is Verdict.FINDING
    assert best.subject == "18:00\u201321:00"
    assert (best.n, best.baseline_n) == (12, 12)
    assert best.ratio > 2.5
    # Read in UTC the same posts fall in 12:00 to 15:00.
    (in_utc,) = best_hours(evening + morning, ZoneInfo("UTC"), RULES)
    assert in_utc.subject == "12:00\u201315:00"


def test_best_hours_needs_enough_posts_at_other_hours() -> None:
    (few,) = best_hours([post(i, 1000) for i in range(6)], ZoneInfo("UTC"), RULES)
    assert few.verdict is Verdict.NOT_ENOUGH_DATA
    assert few.n == 6


def test_week_over_week_doubling_is_worth_a_look_and_short_weeks_are_not() -> None:
    today = date(2026, 3, 16)
    days = [
        DayFigure(today - timedelta(days=d), "instagram", None, 2000 + 40 * spread(d), None)
        for d in range(1, 8)
    ] + [
        DayFigure(today - timedelta(days=d), "instagram", None, 1000 + 20 * spread(d), None)
        for d in range(8, 15)
    ]
    days += [DayFigure(today - timedelta(days=d), "facebook", None, 500, None) for d in (1, 2, 9)]
    found = {i.platform: i for i in week_over_week(days, today, RULES)}
    rose = found["instagram"]
    assert rose.verdict is Verdict.FINDING
    assert (rose.n, rose.baseline_n) == (7, 7)
    assert 1.8 < rose.ratio < 2.2
    assert rose.summary.startswith("Worth a look: your reach on Instagram rose")
    assert found["facebook"].verdict is Verdict.NOT_ENOUGH_DATA


def test_a_post_far_above_its_account_stands_out() -> None:
    usual = [
        post(i, 1000 + 10 * spread(i), connection="page-1", platform="facebook") for i in range(12)
    ]
    star = post(99, 30_000, connection="page-1", platform="facebook")
    (found,) = standout_posts([*usual, star], RULES)
    assert found.kind is Kind.STANDOUT_POST
    assert found.post_id == "p99"
    assert found.baseline_n == 13
    assert found.ratio > 20
    assert found.p_value < 0.05
    (none,) = standout_posts(usual[:5], RULES)
    assert none.verdict is Verdict.NOT_ENOUGH_DATA


def test_everything_orders_findings_first() -> None:
    images = [post(i, 1000 + 10 * spread(i)) for i in range(14)]
    carousels = [post(100 + i, 2100 + 20 * spread(i), ctype="carousel") for i in range(12)]
    every = insights(
        images + carousels, [], zone=ZoneInfo("UTC"), today=date(2026, 3, 20), rules=RULES
    )
    verdicts = [i.verdict for i in every]
    assert verdicts[0] is Verdict.FINDING
    assert verdicts == sorted(
        verdicts,
        key=[Verdict.FINDING, Verdict.NO_CLEAR_DIFFERENCE, Verdict.NOT_ENOUGH_DATA].index,
    )
    assert all(i.summary for i in every)
