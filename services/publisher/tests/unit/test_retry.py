"""The retry policy: what each error category leads to."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from postd.common.v1.common_pb2 import PlatformError
from postd_publisher.domain.model import Category
from postd_publisher.domain.retry import LAST_LOOKS, Decision, RetryPolicy, Step

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def error(category: Category, retry_after: float | None = None) -> PlatformError:
    err = PlatformError(category=category.proto(), platform="x", message="X says no.")
    if retry_after is not None:
        err.retry_after.CopyFrom(Duration(seconds=int(retry_after)))
    return err


def decide(category: Category, budget: int = 1, last: str = "", **kw: float) -> Decision:
    policy = RetryPolicy(base_delay=2.0, max_delay=60.0, rng=random.Random(7))
    return policy.decide(
        error(category, kw.get("retry_after")),
        platform_name="x",
        budget_used=budget,
        max_attempts=4,
        last_category=last,
        now=NOW,
        wait_at_least=kw.get("wait", 0.0),
    )


@pytest.mark.parametrize(
    "category", [Category.TRANSIENT, Category.PLATFORM_OUTAGE, Category.RATE_LIMITED]
)
def test_retryable_categories_back_off_then_dead_letter(category: Category) -> None:
    first = decide(category, budget=1)
    assert first.step is Step.RETRY
    assert first.retry_at is not None
    assert NOW + timedelta(seconds=1) <= first.retry_at <= NOW + timedelta(seconds=2)
    third = decide(category, budget=3)
    assert third.retry_at is not None
    assert NOW + timedelta(seconds=4) <= third.retry_at <= NOW + timedelta(seconds=8)
    last = decide(category, budget=4)
    assert last.step is Step.DEAD_LETTER
    assert last.reason.startswith("Gave up after 4 attempts: X says no.")


def test_retry_after_and_usage_hints_win_over_a_shorter_backoff() -> None:
    assert decide(Category.RATE_LIMITED, retry_after=90).retry_at == NOW + timedelta(seconds=90)
    assert decide(Category.TRANSIENT, wait=30).retry_at == NOW + timedelta(seconds=30)


def test_auth_expired_is_retried_once_then_pauses() -> None:
    assert decide(Category.AUTH_EXPIRED).step is Step.RETRY
    again = decide(Category.AUTH_EXPIRED, budget=2, last="AUTH_EXPIRED")
    assert again.step is Step.PAUSE


@pytest.mark.parametrize("category", [Category.AUTH_REVOKED, Category.PERMISSION_MISSING])
def test_revoked_or_missing_permission_pauses(category: Category) -> None:
    decision = decide(category)
    assert decision.step is Step.PAUSE
    assert decision.reason.startswith("Paused: X says no.")


def test_quota_exhaustion_waits_for_the_window_without_using_attempts() -> None:
    decision = decide(Category.QUOTA_EXCEEDED, budget=4, retry_after=3600)
    assert decision.step is Step.RETRY
    assert not decision.counts
    assert decision.retry_at == NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("category", "step"),
    [
        (Category.CONTENT_REJECTED, Step.DEAD_LETTER),
        (Category.INVALID_REQUEST, Step.DEAD_LETTER),
        (Category.UNKNOWN, Step.DEAD_LETTER),
        (Category.NOT_FOUND, Step.FAIL),
    ],
)
def test_the_rest_fail_at_once_with_the_platforms_words(category: Category, step: Step) -> None:
    decision = decide(category)
    assert decision.step is step
    assert "X says no." in decision.reason


def test_an_unknown_outcome_is_retried_and_looked_up_later() -> None:
    policy = RetryPolicy(base_delay=1.0, rng=random.Random(1))
    retry = policy.after_unknown(budget_used=1, max_attempts=3, now=NOW, what="answer lost")
    assert retry.step is Step.RETRY
    assert retry.retry_at is not None
    assert retry.retry_at > NOW
    assert "first checks whether the post went out" in retry.reason


def test_an_unknown_last_attempt_is_looked_up_before_giving_up() -> None:
    policy = RetryPolicy(base_delay=1.0, rng=random.Random(1))
    # The last attempt's outcome unknown, then each lookup failing: looked up
    # LAST_LOOKS times (each counted past the attempts), then dead-lettered.
    steps = [
        policy.after_unknown(budget_used=used, max_attempts=3, now=NOW, what="answer lost")
        for used in range(3, 3 + LAST_LOOKS + 1)
    ]
    for look in steps[:-1]:
        assert look.step is Step.RETRY
        assert look.retry_at is not None
        assert look.retry_at > NOW
        assert "checks whether the post went out before giving up" in look.reason
        assert "not posted again" in look.reason
    done = steps[-1]
    assert done.step is Step.DEAD_LETTER
    assert done.reason.startswith("Gave up after 3 attempts: answer lost.")
    assert f"could not be confirmed in {LAST_LOOKS} lookups" in done.reason


def test_unspecified_category_reads_as_unknown() -> None:
    assert Category.of(PlatformError()) is Category.UNKNOWN
