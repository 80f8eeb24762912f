"""Platform rules as data, and the planner: refresh ahead of expiry by each rule,
warnings where no refresh exists, the earliest time as the due time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postd_health.domain.forecast import forecast
from postd_health.domain.model import Cause, Status, Watch
from postd_health.domain.rules import PlatformRules, RefreshKind, next_warning, plan

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = PlatformRules.load()


def watch(platform: str, **kw: object) -> Watch:
    w = Watch("c1", "t1", platform, Status.HEALTHY, account_name="Acme", has_refresh_token=True)
    w.last_check_at = NOW
    for key, value in kw.items():
        setattr(w, key, value)
    return w


def test_google_one_hour_tokens_refresh_at_about_fifty_minutes() -> None:
    w = watch("google_business", token_issued_at=NOW, expires_at=NOW + timedelta(hours=1))
    p = plan(w, RULES.for_platform("google_business"), NOW)
    assert p.next_refresh_at == NOW + timedelta(minutes=50)
    assert p.due_at == p.next_refresh_at


def test_meta_long_lived_tokens_are_exchanged_well_before_sixty_days() -> None:
    rule = RULES.for_platform("facebook")
    assert rule.refresh is RefreshKind.EXCHANGE
    w = watch(
        "facebook",
        has_refresh_token=False,
        token_issued_at=NOW,
        expires_at=NOW + timedelta(days=60),
    )
    p = plan(w, rule, NOW)
    assert p.next_refresh_at == NOW + timedelta(days=30)


def test_a_short_token_refreshes_at_half_its_life() -> None:
    w = watch("tiktok", token_issued_at=NOW, expires_at=NOW + timedelta(minutes=20))
    p = plan(w, RULES.for_platform("tiktok"), NOW)
    assert p.next_refresh_at == NOW + timedelta(minutes=10)


def test_linkedin_without_partner_refresh_warns_at_14_7_and_1_days() -> None:
    rule = RULES.for_platform("linkedin")
    expires = NOW + timedelta(days=60)
    w = watch("linkedin", has_refresh_token=False, expires_at=expires)
    p = plan(w, rule, NOW)
    assert p.next_refresh_at is None
    assert p.next_warn_at == expires - timedelta(days=14)
    assert p.due_at == NOW + rule.check_interval  # the check comes first
    seen = []
    while (warning := next_warning(w, rule)) is not None:
        seen.append(warning[1])
        w.warned_days = (*w.warned_days, warning[1])
    assert seen == [14, 7, 1]


def test_linkedin_with_a_partner_refresh_token_refreshes_and_warns_before_it_runs_out() -> None:
    rule = RULES.for_platform("linkedin")
    w = watch(
        "linkedin",
        expires_at=NOW + timedelta(days=60),
        refresh_expires_at=NOW + timedelta(days=365),
        token_issued_at=NOW,
    )
    p = plan(w, rule, NOW)
    assert p.next_refresh_at == NOW + timedelta(days=53)
    assert p.next_warn_at == NOW + timedelta(days=365 - 14)


def test_a_revoked_connection_is_not_refreshed() -> None:
    w = watch("tiktok", status=Status.REVOKED, expires_at=NOW + timedelta(hours=1))
    assert plan(w, RULES.for_platform("tiktok"), NOW).next_refresh_at is None


def test_a_disconnected_connection_is_never_due() -> None:
    w = watch("tiktok", status=Status.DISCONNECTED, expires_at=NOW + timedelta(hours=1))
    assert plan(w, RULES.for_platform("tiktok"), NOW).due_at is None


def test_an_unknown_platform_gets_the_defaults() -> None:
    rule = RULES.for_platform("mastodon")
    assert rule.display_name == "Mastodon"
    assert rule.refresh is RefreshKind.STANDARD


def test_forecast_in_plain_words() -> None:
    rule = RULES.for_platform("linkedin")
    w = watch("linkedin", has_refresh_token=False, expires_at=NOW + timedelta(days=12))
    f = forecast(w, rule, NOW)
    assert f.explanation == (
        "LinkedIn token for Acme expires in 12 days; LinkedIn gives no refresh for this app."
    )
    assert f.reason_code == "token_expires_no_refresh"
    assert f.needs_person_at == NOW + timedelta(days=12)
    g = watch(
        "google_business",
        expires_at=NOW + timedelta(hours=1),
        next_refresh_at=NOW + timedelta(minutes=50),
    )
    f = forecast(g, RULES.for_platform("google_business"), NOW)
    assert f.needs_person_at is None
    assert "refreshes itself; next refresh in 50 minutes" in f.explanation
    r = watch("facebook", status=Status.REVOKED, status_cause=Cause.WEBHOOK, status_since=NOW)
    f = forecast(r, RULES.for_platform("facebook"), NOW)
    assert f.reason_code == "revoked"
    assert f.needs_person_at == NOW
