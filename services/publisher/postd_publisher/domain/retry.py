"""What happens after a failed attempt: retry (when), pause the connection, or give up.

Categories come from connectors' error catalogue. Retryable ones back off
exponentially with jitter and never earlier than the platform asked (Retry-After,
usage headers). AUTH_EXPIRED is retried once (connectors refreshes the token); if
it comes back, the token cannot be refreshed and a person must reconnect, as for
AUTH_REVOKED and PERMISSION_MISSING: the connection's jobs pause, kept. Quota
exhaustion waits for the quota to free and does not use up attempts. The rest fail
at once with the platform's reason; failures a replay may fix go to the DLQ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from postd.common.v1.common_pb2 import PlatformError
from postd_publisher.domain.model import Category

RETRYABLE = frozenset(
    {Category.RATE_LIMITED, Category.TRANSIENT, Category.PLATFORM_OUTAGE, Category.AUTH_EXPIRED}
)
PAUSING = frozenset({Category.AUTH_REVOKED, Category.PERMISSION_MISSING})
# A replay cannot help: the target is gone.
FINAL = frozenset({Category.NOT_FOUND})
# After the last attempt's outcome is unknown: lookups (never a new post) before the
# job is dead-lettered as unconfirmed.
LAST_LOOKS = 3
# Waiting for a long-window quota, with no hint from the platform.
QUOTA_DEFAULT_WAIT = timedelta(hours=1)


class Step(StrEnum):
    RETRY = "retry"
    PAUSE = "pause"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str
    retry_at: datetime | None = None
    # Whether the attempt uses up one of the round's attempts.
    counts: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with "equal jitter": half the delay fixed, half random."""

    base_delay: float = 2.0
    max_delay: float = 900.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        exp = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return exp / 2 + self.rng.uniform(0, exp / 2)

    def decide(
        self,
        error: PlatformError,
        *,
        platform_name: str,
        budget_used: int,
        max_attempts: int,
        last_category: str,
        now: datetime,
        wait_at_least: float = 0.0,
    ) -> Decision:
        """The step after an attempt that failed with ``error``.

        ``budget_used`` counts this round's attempts including this one;
        ``last_category`` is the previous attempt's category ('' if none);
        ``wait_at_least`` (seconds) comes from usage headers that say the account is
        spent until then.
        """
        category = Category.of(error)
        said = error.message or f"{platform_name} failed without a reason"
        hinted = max(wait_at_least, _seconds(error))
        if category is Category.QUOTA_EXCEEDED:
            wait = hinted if hinted > 0 else QUOTA_DEFAULT_WAIT.total_seconds()
            at = now + timedelta(seconds=wait)
            return Decision(
                Step.RETRY,
                f"Deferred until {at:%Y-%m-%d %H:%M:%S} UTC, when the quota frees: {said}",
                at,
                counts=False,
            )
        if category in PAUSING or (
            category is Category.AUTH_EXPIRED and last_category == Category.AUTH_EXPIRED
        ):
            return Decision(
                Step.PAUSE,
                f"Paused: {said} {error.action_message}".strip(),
            )
        if category in RETRYABLE:
            if budget_used >= max_attempts:
                return Decision(
                    Step.DEAD_LETTER,
                    f"Gave up after {budget_used} attempts: {said}",
                )
            delay = max(self.backoff(budget_used), hinted)
            at = now + timedelta(seconds=delay)
            return Decision(
                Step.RETRY,
                f"Attempt {budget_used} of {max_attempts} failed; retrying at "
                f"{at:%H:%M:%S} UTC: {said}",
                at,
            )
        if category in FINAL:
            return Decision(Step.FAIL, f"Failed: {said}")
        return Decision(Step.DEAD_LETTER, f"Not retried: {said}")

    def after_unknown(
        self, *, budget_used: int, max_attempts: int, now: datetime, what: str
    ) -> Decision:
        """The step after an attempt whose outcome is unknown (lost response, timeout,
        a lookup that failed): retry — the next attempt looks the post up before
        publishing again.

        Once the attempts are used up the job is not dead-lettered blind, since the
        post may well be on the platform: it is looked up (only, never posted again)
        up to ``LAST_LOOKS`` times, each failed look counting past ``max_attempts``.
        """
        if budget_used < max_attempts:
            at = now + timedelta(seconds=self.backoff(budget_used))
            return Decision(
                Step.RETRY,
                f"Attempt {budget_used} of {max_attempts}: {what}; the next attempt, at "
                f"{at:%H:%M:%S} UTC, first checks whether the post went out.",
                at,
            )
        looks_failed = budget_used - max_attempts
        if looks_failed < LAST_LOOKS:
            at = now + timedelta(seconds=self.backoff(max_attempts))
            return Decision(
                Step.RETRY,
                f"Attempt {max_attempts} of {max_attempts}: {what}; at {at:%H:%M:%S} UTC "
                "POSTD checks whether the post went out before giving up (it is not "
                "posted again).",
                at,
            )
        return Decision(
            Step.DEAD_LETTER,
            f"Gave up after {max_attempts} attempts: {what}. Whether the post went out "
            f"could not be confirmed in {LAST_LOOKS} lookups; a replay looks it up on the "
            "platform before publishing again.",
        )


def _seconds(error: PlatformError) -> float:
    if not error.HasField("retry_after"):
        return 0.0
    return max(0.0, error.retry_after.ToTimedelta().total_seconds())
