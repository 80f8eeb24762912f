"""The status machine on plain watches: passing failures need a budget over time,
a revoked token moves at once, healing, expiry without refresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postd_health.domain.model import Category, Cause, Failure, Source, Status, Watch
from postd_health.domain.rules import PlatformRules
from postd_health.domain.status import Signal, SignalKind, TransientBudget, judge_expiry, observe

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = PlatformRules.load()
BUDGET = TransientBudget(failures=5, span=timedelta(minutes=15))


def watch(platform: str = "tiktok", **kw: object) -> Watch:
    w = Watch(
        connection_id="c1",
        tenant_id="t1",
        platform=platform,
        status=Status.HEALTHY,
        account_name="Acme",
        has_refresh_token=True,
    )
    for key, value in kw.items():
        setattr(w, key, value)
    return w


def fail(category: Category, at: datetime, status: int = 0, source: Source = Source.HEALTH_CHECK):
    return Signal.failed(source, at, Failure(category, http_status=status, message="It failed."))


def test_a_burst_of_passing_failures_within_the_span_changes_nothing() -> None:
    w = watch()
    rule = RULES.for_platform(w.platform)
    for i in range(20):
        assert (
            observe(w, fail(Category.TRANSIENT, NOW + timedelta(seconds=i), 503), rule, BUDGET)
            is None
        )
    assert w.consecutive_failures == 20
    assert w.status is Status.HEALTHY
    assert w.retry_at is not None
    assert w.retry_at > NOW


def test_the_budget_needs_both_count_and_span() -> None:
    w = watch()
    rule = RULES.for_platform(w.platform)
    moments = [NOW + timedelta(minutes=m) for m in (0, 4, 8, 12)]
    for at in moments:
        assert observe(w, fail(Category.TRANSIENT, at, 502), rule, BUDGET) is None
    # Fifth failure but only 14 minutes after the first: still within budget.
    assert observe(w, fail(Category.TRANSIENT, NOW + timedelta(minutes=14)), rule, BUDGET) is None
    t = observe(w, fail(Category.PLATFORM_OUTAGE, NOW + timedelta(minutes=16)), rule, BUDGET)
    assert t is not None
    assert t.target is Status.ATTENTION
    assert t.cause is Cause.TRANSIENT_BUDGET
    assert "6 calls to TikTok in a row failed" in t.reason


def test_a_success_resets_the_budget() -> None:
    w = watch()
    rule = RULES.for_platform(w.platform)
    for m in range(4):
        observe(w, fail(Category.TRANSIENT, NOW + timedelta(minutes=5 * m)), rule, BUDGET)
    assert (
        observe(w, Signal.success(Source.PUBLISH_RESULT, NOW + timedelta(minutes=19)), rule, BUDGET)
        is None
    )
    assert w.consecutive_failures == 0
    assert w.first_failure_at is None
    assert observe(w, fail(Category.TRANSIENT, NOW + timedelta(minutes=30)), rule, BUDGET) is None


def test_auth_revoked_moves_to_revoked_at_once() -> None:
    w = watch()
    t = observe(w, fail(Category.AUTH_REVOKED, NOW, 401), RULES.for_platform("tiktok"), BUDGET)
    assert t is not None
    assert t.target is Status.REVOKED
    assert t.cause is Cause.AUTH
    assert t.category is Category.AUTH_REVOKED
    assert "Reconnect Acme" in t.reason


def test_permission_missing_moves_to_attention_at_once() -> None:
    w = watch()
    signal = Signal.failed(
        Source.PUBLISH_RESULT,
        NOW,
        Failure(Category.PERMISSION_MISSING, http_status=403, missing_scopes=("video.publish",)),
    )
    t = observe(w, signal, RULES.for_platform("tiktok"), BUDGET)
    assert t is not None
    assert t.target is Status.ATTENTION
    assert t.cause is Cause.PERMISSION
    assert "video.publish" in t.reason


@pytest.mark.parametrize(
    "category",
    [Category.RATE_LIMITED, Category.CONTENT_REJECTED, Category.QUOTA_EXCEEDED, Category.NOT_FOUND],
)
def test_failures_about_content_or_quota_leave_the_connection_alone(category: Category) -> None:
    w = watch()
    for m in range(10):
        assert (
            observe(
                w,
                fail(category, NOW + timedelta(minutes=5 * m)),
                RULES.for_platform("tiktok"),
                BUDGET,
            )
            is None
        )
    assert w.consecutive_failures == 0


def test_expired_token_asks_for_a_refresh_where_one_exists() -> None:
    w = watch()
    t = observe(
        w,
        fail(Category.AUTH_EXPIRED, NOW, 401, Source.PUBLISH_RESULT),
        RULES.for_platform("tiktok"),
        BUDGET,
    )
    assert t is None
    assert w.refresh_requested_at == NOW


def test_expired_token_without_refresh_needs_attention() -> None:
    w = watch("linkedin", has_refresh_token=False)
    t = observe(w, fail(Category.AUTH_EXPIRED, NOW, 401), RULES.for_platform("linkedin"), BUDGET)
    assert t is not None
    assert t.target is Status.ATTENTION
    assert t.cause is Cause.EXPIRY
    assert "LinkedIn gives no refresh for this app." in t.reason


def test_attention_from_passing_failures_heals_on_the_next_success() -> None:
    w = watch(status=Status.ATTENTION, status_cause=Cause.TRANSIENT_BUDGET, consecutive_failures=7)
    t = observe(w, Signal.success(Source.HEALTH_CHECK, NOW), RULES.for_platform("tiktok"), BUDGET)
    assert t is not None
    assert t.target is Status.HEALTHY


def test_attention_that_needs_a_person_does_not_heal_on_a_check() -> None:
    w = watch(status=Status.ATTENTION, status_cause=Cause.PERMISSION)
    assert (
        observe(w, Signal.success(Source.HEALTH_CHECK, NOW), RULES.for_platform("tiktok"), BUDGET)
        is None
    )


def test_deauthorized_webhook_revokes() -> None:
    w = watch("facebook")
    t = observe(
        w,
        Signal(SignalKind.DEAUTHORIZED, Source.WEBHOOK, NOW),
        RULES.for_platform("facebook"),
        BUDGET,
    )
    assert t is not None
    assert t.target is Status.REVOKED
    assert t.cause is Cause.WEBHOOK


def test_permissions_changed_asks_for_a_check_now() -> None:
    w = watch("facebook")
    t = observe(
        w,
        Signal(SignalKind.PERMISSIONS_CHANGED, Source.WEBHOOK, NOW),
        RULES.for_platform("facebook"),
        BUDGET,
    )
    assert t is None
    assert w.retry_at == NOW


def test_linkedin_without_refresh_is_expiring_soon_within_14_days_then_attention() -> None:
    rule = RULES.for_platform("linkedin")
    w = watch("linkedin", has_refresh_token=False, expires_at=NOW + timedelta(days=12))
    t = judge_expiry(w, rule, NOW)
    assert t is not None
    assert t.target is Status.EXPIRING_SOON
    assert t.reason == (
        "LinkedIn token for Acme expires in 12 days; LinkedIn gives no refresh for this app."
    )
    far = watch("linkedin", has_refresh_token=False, expires_at=NOW + timedelta(days=40))
    assert judge_expiry(far, rule, NOW) is None
    expired = watch("linkedin", has_refresh_token=False, expires_at=NOW - timedelta(hours=2))
    t = judge_expiry(expired, rule, NOW)
    assert t is not None
    assert t.target is Status.ATTENTION
    assert t.cause is Cause.EXPIRY


def test_a_refreshable_token_never_expires_soon() -> None:
    rule = RULES.for_platform("google_business")
    w = watch("google_business", expires_at=NOW + timedelta(minutes=5))
    assert judge_expiry(w, rule, NOW) is None
