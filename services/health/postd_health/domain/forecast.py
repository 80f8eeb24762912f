"""When a connection will need a person, and why, in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from postd_health.domain import wording
from postd_health.domain.model import HEALS_ON_SUCCESS, Status, Watch
from postd_health.domain.rules import PlatformRule, person_deadline


@dataclass(frozen=True)
class Forecast:
    needs_person_at: datetime | None
    explanation: str
    reason_code: str
    next_refresh_at: datetime | None


def forecast(watch: Watch, rule: PlatformRule, now: datetime) -> Forecast:
    name = rule.display_name
    what = wording.subject(name, watch.account_name)
    refresh_at = watch.next_refresh_at if rule.can_refresh(watch) else None
    if watch.status is Status.DISCONNECTED:
        return Forecast(None, "This connection was disconnected.", "", None)
    if watch.status is Status.REVOKED:
        return Forecast(
            watch.status_since or now,
            watch.status_reason or f"{name} access was revoked; reconnect to resume publishing.",
            "revoked",
            None,
        )
    if watch.status is Status.ATTENTION:
        heals = watch.status_cause in HEALS_ON_SUCCESS
        return Forecast(
            None if heals else watch.status_since or now,
            watch.status_reason or "This connection needs attention.",
            "" if heals else "needs_attention",
            refresh_at,
        )
    deadline = person_deadline(watch, rule)
    if deadline is not None:
        if deadline.reason_code == "refresh_token_expires":
            text = (
                f"{name} sign-in for {watch.account_name or 'this account'} runs out "
                f"{wording.until(deadline.at, now)} ({wording.day(deadline.at)}); {name} then "
                "needs a person to sign in again."
            )
        else:
            text = (
                f"{what[0].upper()}{what[1:]} expires {wording.until(deadline.at, now)}; "
                f"{rule.explain_no_refresh()}"
            )
        return Forecast(deadline.at, text, deadline.reason_code, refresh_at)
    if refresh_at is not None:
        return Forecast(
            None,
            f"{what[0].upper()}{what[1:]} refreshes itself; next refresh "
            f"{wording.until(refresh_at, now)}.",
            "",
            refresh_at,
        )
    return Forecast(None, f"Nothing foreseeable needs a person for {what}.", "", None)
