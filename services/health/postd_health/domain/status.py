"""The status machine: healthy → expiring_soon → attention → revoked, and back.

Pure functions over a :class:`Watch`. :func:`observe` takes one signal (a check, a
refresh, a publish outcome, a webhook), updates the watch's failure counters in
place and returns the transition it calls for, if any. :func:`judge_expiry` looks
at the clock. Neither talks to anyone: the caller asks connectors to make the
change (with the current status as the expected one) and connectors announces it.

The rule that matters most: a passing failure (timeout, 5xx, outage) is never read
as a revoked token. Only a budget of consecutive failures spanning a minimum time
moves a connection to attention; ``AUTH_REVOKED`` moves it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from postd_health.domain import wording
from postd_health.domain.model import (
    HEALS_ON_SUCCESS,
    Category,
    Cause,
    Failure,
    Source,
    Status,
    Watch,
)
from postd_health.domain.rules import PlatformRule, person_deadline


@dataclass(frozen=True)
class TransientBudget:
    """Passing failures tolerated before a connection needs attention: at least
    ``failures`` in a row, the first at least ``span`` before the last."""

    failures: int = 5
    span: timedelta = timedelta(minutes=15)

    def exhausted(self, count: int, first: datetime | None, now: datetime) -> bool:
        return count >= self.failures and first is not None and now - first >= self.span


class SignalKind(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DEAUTHORIZED = "deauthorized"
    PERMISSIONS_CHANGED = "permissions_changed"


@dataclass(frozen=True)
class Signal:
    """One thing health learned about a connection."""

    kind: SignalKind
    source: Source
    at: datetime
    failure: Failure | None = None

    @classmethod
    def success(cls, source: Source, at: datetime) -> Signal:
        return cls(SignalKind.SUCCESS, source, at)

    @classmethod
    def failed(cls, source: Source, at: datetime, failure: Failure) -> Signal:
        return cls(SignalKind.FAILURE, source, at, failure)


@dataclass(frozen=True)
class Transition:
    """A status change the machine asks for."""

    target: Status
    reason: str
    cause: Cause
    source: Source
    category: Category | None = None
    failure: Failure | None = None


# Categories that say nothing about the connection's access: the content, a quota or
# one post was the problem. They neither count against nor reset the budget.
_NEUTRAL = frozenset(
    {
        Category.RATE_LIMITED,
        Category.CONTENT_REJECTED,
        Category.INVALID_REQUEST,
        Category.QUOTA_EXCEEDED,
        Category.NOT_FOUND,
    }
)


def observe(
    watch: Watch,
    signal: Signal,
    rule: PlatformRule,
    budget: TransientBudget,
) -> Transition | None:
    """Update ``watch``'s counters for ``signal`` and return the transition it calls
    for (None: stay). Sets ``watch.retry_at`` when a refresh or check should run
    again soon."""
    if watch.status is Status.DISCONNECTED:
        return None
    name = rule.display_name
    if signal.kind is SignalKind.DEAUTHORIZED:
        return Transition(
            Status.REVOKED,
            f"{name} says POSTD's access to {watch.account_name or 'this account'} was "
            "removed (the app was deauthorized). Reconnect to resume publishing.",
            Cause.WEBHOOK,
            signal.source,
            Category.AUTH_REVOKED,
        )
    if signal.kind is SignalKind.PERMISSIONS_CHANGED:
        # The platform does not always say which permission; a check right away will.
        watch.retry_at = signal.at
        return None
    if signal.kind is SignalKind.SUCCESS:
        return _on_success(watch, signal, rule)
    failure = signal.failure
    assert failure is not None
    return _on_failure(watch, signal, failure, rule, budget)


def _on_success(watch: Watch, signal: Signal, rule: PlatformRule) -> Transition | None:
    healed = watch.consecutive_failures > 0 or watch.refresh_failures > 0
    watch.consecutive_failures = 0
    watch.first_failure_at = None
    watch.last_failure_category = None
    watch.retry_at = None
    if signal.source is Source.REFRESH:
        watch.refresh_failures = 0
        watch.refresh_requested_at = None
    if watch.status in (Status.ATTENTION, Status.EXPIRING_SOON) and (
        watch.status_cause in HEALS_ON_SUCCESS
    ):
        expiry = judge_expiry(watch, rule, signal.at)
        if expiry is not None and expiry.target is not Status.HEALTHY:
            return expiry if expiry.target is not watch.status else None
        return Transition(
            Status.HEALTHY,
            f"{rule.display_name} answers normally again"
            + (" after passing failures." if healed else "."),
            Cause.NONE,
            signal.source,
        )
    return None


def _on_failure(
    watch: Watch,
    signal: Signal,
    failure: Failure,
    rule: PlatformRule,
    budget: TransientBudget,
) -> Transition | None:
    category = failure.category
    name = rule.display_name
    account = watch.account_name
    if category in _NEUTRAL:
        return None
    if category is Category.AUTH_REVOKED:
        if watch.status is Status.REVOKED:
            return None
        return Transition(
            Status.REVOKED,
            wording.failure_reason(name, account, failure),
            Cause.AUTH,
            signal.source,
            category,
            failure,
        )
    if category is Category.PERMISSION_MISSING:
        if watch.status in (Status.ATTENTION, Status.REVOKED) and watch.status_cause in (
            Cause.PERMISSION,
            Cause.AUTH,
            Cause.WEBHOOK,
        ):
            return None
        return Transition(
            Status.ATTENTION,
            wording.failure_reason(name, account, failure),
            Cause.PERMISSION,
            signal.source,
            category,
            failure,
        )
    if category is Category.AUTH_EXPIRED:
        if rule.can_refresh(watch) and signal.source is not Source.REFRESH:
            watch.refresh_requested_at = signal.at  # refresh now; no status change yet
            return None
        if watch.status is Status.ATTENTION and watch.status_cause is Cause.EXPIRY:
            return None
        return Transition(
            Status.ATTENTION,
            wording.failure_reason(name, account, failure)
            + ("" if rule.can_refresh(watch) else f" {rule.explain_no_refresh()}"),
            Cause.EXPIRY,
            signal.source,
            category,
            failure,
        )
    # A passing failure: count it against the budget.
    if watch.consecutive_failures == 0 or watch.first_failure_at is None:
        watch.first_failure_at = signal.at
    watch.consecutive_failures += 1
    watch.last_failure_category = category
    if signal.source is Source.REFRESH:
        watch.refresh_failures += 1
    retry = signal.at + _retry_delay(watch.consecutive_failures, failure)
    if signal.source is Source.REFRESH:
        watch.refresh_requested_at = retry
    else:
        watch.retry_at = retry
    if watch.status in (Status.ATTENTION, Status.REVOKED):
        return None
    if not budget.exhausted(watch.consecutive_failures, watch.first_failure_at, signal.at):
        return None
    assert watch.first_failure_at is not None
    span = wording.duration(signal.at - watch.first_failure_at)
    last = failure.message.rstrip(".") if failure.message else category.value.replace("_", " ")
    cause = Cause.REFRESH_FAILED if watch.refresh_failures else Cause.TRANSIENT_BUDGET
    return Transition(
        Status.ATTENTION,
        f"{watch.consecutive_failures} calls to {name} in a row failed over {span} "
        f"(last: {last}). POSTD keeps trying and clears this by itself once {name} "
        "answers again.",
        cause,
        signal.source,
        category,
        failure,
    )


def _retry_delay(failures: int, failure: Failure) -> timedelta:
    if failure.retry_after is not None:
        return max(failure.retry_after, timedelta(seconds=30))
    return timedelta(seconds=min(1800, 60 * 2 ** min(failures - 1, 5)))


def judge_expiry(watch: Watch, rule: PlatformRule, now: datetime) -> Transition | None:
    """The status the clock calls for: expiring soon when a person will be needed
    within the rule's window, attention once the access has lapsed; healthy again
    when neither holds for a connection that was only expiring."""
    if watch.status in (Status.DISCONNECTED, Status.REVOKED):
        return None
    deadline = person_deadline(watch, rule)
    name = rule.display_name
    what = wording.subject(name, watch.account_name)
    if deadline is not None and deadline.at <= now:
        if watch.status is Status.ATTENTION:
            return None
        return Transition(
            Status.ATTENTION,
            f"The {what} expired {wording.until(deadline.at, now)}; "
            f"{_why_person(rule, deadline.reason_code)} Reconnect to resume publishing.",
            Cause.EXPIRY,
            Source.HEALTH_CHECK,
            Category.AUTH_EXPIRED,
        )
    if deadline is not None and deadline.at - now <= rule.expiring_soon_within:
        if watch.status is not Status.HEALTHY:
            return None
        return Transition(
            Status.EXPIRING_SOON,
            f"{what[0].upper()}{what[1:]} expires {wording.until(deadline.at, now)}; "
            f"{_why_person(rule, deadline.reason_code)}",
            Cause.EXPIRY,
            Source.HEALTH_CHECK,
        )
    if watch.status is Status.EXPIRING_SOON and watch.status_cause is Cause.EXPIRY:
        return Transition(
            Status.HEALTHY,
            f"The {what} no longer expires soon.",
            Cause.NONE,
            Source.HEALTH_CHECK,
        )
    return None


def _why_person(rule: PlatformRule, reason_code: str) -> str:
    if reason_code == "refresh_token_expires":
        return f"{rule.display_name} then needs a person to sign in again."
    return rule.explain_no_refresh()
