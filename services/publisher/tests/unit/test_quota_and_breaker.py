"""The quota plan and the outage watch: pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postd_publisher.domain.breaker import BreakerPolicy, OutageWatch
from postd_publisher.domain.model import Approval, JobState, PostStatus, post_status
from postd_publisher.domain.quota import (
    QuotaBook,
    QuotaDemand,
    QuotaRule,
    parse_rules,
    plan_dispatch,
    window_words,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
RULE = QuotaRule("instagram", "publish_per_24h", 3, DAY, "Instagram allows 3 posts")


def demand(job: str, connection: str = "c1", platform: str = "instagram") -> QuotaDemand:
    return QuotaDemand(job, "t1", connection, platform)


def test_jobs_are_admitted_while_the_window_has_room_and_deferred_after() -> None:
    used = {("t1", "c1", "publish_per_24h"): [NOW - timedelta(hours=20)]}
    plan = plan_dispatch(
        [demand("a"), demand("b"), demand("c"), demand("d")], used, QuotaBook([RULE]), NOW
    )
    assert plan.admitted == {"a", "b"}
    # The slot used 20 h ago frees first, in 4 h; the account's later job waits with it.
    assert [(d.job_id, d.until) for d in plan.deferred] == [
        ("c", NOW + timedelta(hours=4)),
        ("d", NOW + timedelta(hours=4)),
    ]
    assert "Instagram allows 3 posts" in plan.deferred[0].reason
    assert [e.job_id for e in plan.entries] == ["a", "b"]


def test_old_usage_outside_the_window_does_not_count() -> None:
    used = {("t1", "c1", "publish_per_24h"): [NOW - timedelta(hours=25)] * 5}
    plan = plan_dispatch([demand("a")], used, QuotaBook([RULE]), NOW)
    assert plan.admitted == {"a"}


def test_accounts_and_unlimited_platforms_are_independent() -> None:
    used = {("t1", "c1", "publish_per_24h"): [NOW] * 3}
    plan = plan_dispatch(
        [demand("a"), demand("b", "c2"), demand("c", "c3", "facebook")],
        used,
        QuotaBook([RULE]),
        NOW,
    )
    assert plan.admitted == {"b", "c"}
    assert [d.job_id for d in plan.deferred] == ["a"]


def test_overrides_win_over_connectors_which_win_over_bundled_rules() -> None:
    book = QuotaBook(overrides=parse_rules("tiktok:video_init_per_minute:2:60"))
    assert book.for_platform("instagram")[0].limit == 50
    book.merge([QuotaRule("instagram", "publish_per_24h", 25, DAY, "x")])
    book.merge([QuotaRule("tiktok", "video_init_per_minute", 6, timedelta(minutes=1), "y")])
    assert book.for_platform("instagram")[0].limit == 25
    assert book.for_platform("tiktok")[0].limit == 2
    assert window_words(DAY) == "24 hours"
    assert window_words(timedelta(minutes=1)) == "minute"
    assert window_words(timedelta(minutes=10)) == "10 minutes"


def test_outage_watch_needs_several_tenants_failing() -> None:
    watch = OutageWatch(BreakerPolicy(window_seconds=60, min_failures=4, min_tenants=2))
    for i in range(10):
        assert not watch.record("meta", "one-tenant", failed=True, at=float(i))
    assert watch.record("meta", "another", failed=True, at=11.0)


def test_outage_watch_is_diluted_by_successes_and_forgets_old_samples() -> None:
    watch = OutageWatch(BreakerPolicy(window_seconds=10, min_failures=2, failure_ratio=0.5))
    for i in range(6):
        watch.record("meta", f"t{i}", failed=False, at=float(i))
    assert not watch.record("meta", "a", failed=True, at=6.0)
    assert not watch.record("meta", "b", failed=True, at=7.0)
    # Later, the successes have left the window: two tenants failing is an outage.
    assert not watch.record("meta", "a", failed=True, at=30.0)
    assert watch.record("meta", "b", failed=True, at=31.0)


def test_post_status_from_jobs_and_approval() -> None:
    s = JobState
    assert post_status(Approval.PENDING, [s.AWAITING_APPROVAL]) is PostStatus.AWAITING_APPROVAL
    assert post_status(Approval.REJECTED, [s.CANCELLED]) is PostStatus.REJECTED
    assert post_status(Approval.NONE, [s.SCHEDULED, s.SCHEDULED]) is PostStatus.SCHEDULED
    assert post_status(Approval.NONE, [s.PUBLISHED, s.RETRYING]) is PostStatus.PUBLISHING
    assert post_status(Approval.NONE, [s.PUBLISHED, s.PUBLISHED]) is PostStatus.PUBLISHED
    assert post_status(Approval.NONE, [s.PUBLISHED, s.FAILED]) is PostStatus.PARTIALLY_PUBLISHED
    assert post_status(Approval.NONE, [s.CANCELLED, s.FAILED]) is PostStatus.FAILED
    assert post_status(Approval.NONE, [s.CANCELLED]) is PostStatus.CANCELLED
