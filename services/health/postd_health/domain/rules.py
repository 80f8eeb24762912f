"""Per-platform token rules, read from ``data/platform_rules.toml``, and the planner
that turns a watched connection plus its rule into the next times to act.

Nothing here knows a platform by name: what differs is data.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from postd_health.domain.model import Status, Watch

RULES_FILE = Path(__file__).resolve().parent.parent / "data" / "platform_rules.toml"


class RefreshKind(StrEnum):
    STANDARD = "standard"
    ROTATING = "rotating"
    EXCHANGE = "exchange"
    NONE = "none"


class RulesError(ValueError):
    """The rules file is malformed."""


@dataclass(frozen=True)
class PlatformRule:
    platform: str
    display_name: str
    refresh: RefreshKind
    refresh_lead: timedelta
    warn_days: tuple[int, ...]
    expiring_soon_within: timedelta
    check_interval: timedelta
    no_refresh_explanation: str

    def can_refresh(self, watch: Watch) -> bool:
        """Whether POSTD can renew this connection's access without a person."""
        if self.refresh is RefreshKind.NONE:
            return False
        if self.refresh is RefreshKind.EXCHANGE:
            return True
        return watch.has_refresh_token

    def refresh_lead_for(self, watch: Watch) -> timedelta:
        """How long before expiry to refresh: the rule's lead, or half the token's
        life when the whole life is shorter than that."""
        if watch.expires_at is None or watch.token_issued_at is None:
            return self.refresh_lead
        life = watch.expires_at - watch.token_issued_at
        if life <= timedelta(0):
            return self.refresh_lead
        return min(self.refresh_lead, life / 2)

    def explain_no_refresh(self) -> str:
        return self.no_refresh_explanation.format(platform=self.display_name)


class PlatformRules:
    """Rules by platform; an unknown platform gets the defaults under its own name."""

    def __init__(self, rules: Mapping[str, PlatformRule], default: Mapping[str, Any]) -> None:
        self._rules = dict(rules)
        self._default = dict(default)

    @classmethod
    def load(cls, path: Path = RULES_FILE) -> PlatformRules:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
        default = raw.get("default", {})
        rules = {
            name: _rule(name, {**default, **table})
            for name, table in raw.get("platforms", {}).items()
        }
        _rule("default", default)  # validate the defaults too
        return cls(rules, default)

    def for_platform(self, platform: str) -> PlatformRule:
        rule = self._rules.get(platform)
        if rule is None:
            rule = _rule(platform, self._default)
            self._rules[platform] = rule
        return rule

    def display_name(self, platform: str) -> str:
        return self.for_platform(platform).display_name


def _rule(name: str, table: Mapping[str, Any]) -> PlatformRule:
    try:
        warn = tuple(sorted((int(d) for d in table.get("warn_days", ())), reverse=True))
        return PlatformRule(
            platform=name,
            display_name=str(table.get("display_name") or name.replace("_", " ").title()),
            refresh=RefreshKind(str(table.get("refresh", "standard"))),
            refresh_lead=timedelta(minutes=float(table.get("refresh_lead_minutes", 30))),
            warn_days=warn,
            expiring_soon_within=timedelta(days=float(table.get("expiring_soon_days", 14))),
            check_interval=timedelta(minutes=float(table.get("check_interval_minutes", 360))),
            no_refresh_explanation=str(table.get("no_refresh_explanation", "")),
        )
    except (TypeError, ValueError) as exc:
        raise RulesError(f"platform rule {name!r} is malformed: {exc}") from exc


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Deadline:
    """When a person must act, and why (a code from Forecast.reason_code)."""

    at: datetime
    reason_code: str


def person_deadline(watch: Watch, rule: PlatformRule) -> Deadline | None:
    """When this connection will stop working unless a person reconnects."""
    if watch.status is Status.DISCONNECTED:
        return None
    if not rule.can_refresh(watch):
        if watch.expires_at is None:
            return None
        return Deadline(watch.expires_at, "token_expires_no_refresh")
    if watch.refresh_expires_at is not None and rule.refresh is not RefreshKind.EXCHANGE:
        return Deadline(watch.refresh_expires_at, "refresh_token_expires")
    return None


def next_warning(watch: Watch, rule: PlatformRule) -> tuple[datetime, int] | None:
    """The next "N days left" warning not yet given for the current deadline."""
    if watch.status is Status.REVOKED:
        return None
    deadline = person_deadline(watch, rule)
    if deadline is None:
        return None
    for days in rule.warn_days:  # largest first
        if days not in watch.warned_days:
            return deadline.at - timedelta(days=days), days
    return None


@dataclass(frozen=True)
class Plan:
    next_refresh_at: datetime | None
    next_check_at: datetime | None
    next_warn_at: datetime | None
    due_at: datetime | None


def plan(watch: Watch, rule: PlatformRule, now: datetime) -> Plan:
    """The next times to refresh, check and warn, and the earliest of them (``due_at``,
    the indexed column the scheduler claims by)."""
    if watch.status is Status.DISCONNECTED:
        return Plan(None, None, None, None)
    refresh_at: datetime | None = None
    if rule.can_refresh(watch) and watch.status is not Status.REVOKED:
        if watch.expires_at is not None:
            refresh_at = watch.expires_at - rule.refresh_lead_for(watch)
        if watch.refresh_requested_at is not None:
            # Asked for sooner: an expired token seen on a call, or a failed refresh's retry.
            asked = watch.refresh_requested_at
            refresh_at = asked if refresh_at is None else min(refresh_at, asked)
    check_at = (watch.last_check_at or now) + rule.check_interval
    if watch.status is Status.REVOKED:
        # Nothing a check can change: only a reconnect (a connection event) revives it.
        check_at = (watch.last_check_at or now) + rule.check_interval * 4
    elif watch.retry_at is not None:
        # A check that failed for a passing reason, or asked for by a webhook.
        check_at = min(check_at, watch.retry_at)
    warning = next_warning(watch, rule)
    warn_at = warning[0] if warning else None
    candidates = [t for t in (refresh_at, check_at, warn_at) if t is not None]
    return Plan(refresh_at, check_at, warn_at, min(candidates) if candidates else None)


def apply_plan(watch: Watch, rule: PlatformRule, now: datetime) -> Watch:
    p = plan(watch, rule, now)
    watch.next_refresh_at = p.next_refresh_at
    watch.next_check_at = p.next_check_at
    watch.next_warn_at = p.next_warn_at
    watch.due_at = p.due_at
    return watch
