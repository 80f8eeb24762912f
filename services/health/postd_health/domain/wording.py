"""Plain words for people: durations, dates and the reasons behind a status."""

from __future__ import annotations

from datetime import datetime, timedelta

from postd_health.domain.model import Category, Failure


def duration(delta: timedelta) -> str:
    """``timedelta(days=12, hours=3)`` → "12 days"; rounded to the largest unit."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        # 23 h 59 min reads as "1 day": the clock has moved on since it was computed.
        if seconds >= size * 0.95:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"


def until(moment: datetime, now: datetime) -> str:
    """ "in 12 days", or "3 days ago" once passed."""
    if moment >= now:
        return f"in {duration(moment - now)}"
    return f"{duration(now - moment)} ago"


def day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def subject(platform_name: str, account: str) -> str:
    """ "LinkedIn token for Acme" (or "the LinkedIn token" when the name is unknown)."""
    return f"{platform_name} token for {account}" if account else f"the {platform_name} token"


def failure_reason(platform_name: str, account: str, failure: Failure) -> str:
    """Why a failure moved a connection, in words; the catalogue's own message first."""
    who = account or "this account"
    said = failure.message.rstrip(".") + ". " if failure.message else ""
    if failure.category is Category.AUTH_REVOKED:
        return (
            f"{said or f'{platform_name} says access to {who} was withdrawn. '}"
            f"Reconnect {who} to resume publishing."
        )
    if failure.category is Category.PERMISSION_MISSING:
        scopes = ", ".join(failure.missing_scopes)
        missing = f" ({scopes})" if scopes else ""
        return (
            f"{said or f'{platform_name} says {who} lacks a permission POSTD needs. '}"
            f"Reconnect {who} and allow the missing permission{missing}."
        )
    if failure.category is Category.AUTH_EXPIRED:
        return f"{said or f'The {platform_name} token for {who} expired. '}Reconnect {who}."
    return said.strip() or f"{platform_name} failed ({failure.category.value})."
