"""The error catalogue: data files load, the most specific entry wins, and no
network error or 5xx is ever read as a revoked token."""

from __future__ import annotations

from typing import Any

import pytest

from postd_connectors.app import load_platform_data
from postd_connectors.domain.catalogue import RawFailure
from postd_connectors.domain.model import ErrorAction, ErrorCategory

DATA = load_platform_data()


def classify(catalogue: str, raw: RawFailure) -> ErrorCategory:
    return DATA.catalogues[catalogue].classify(raw, platform="x", display_name="X").category


@pytest.mark.parametrize(
    ("code", "subcode", "category"),
    [
        ("190", "463", ErrorCategory.AUTH_EXPIRED),
        ("190", "460", ErrorCategory.AUTH_REVOKED),
        ("190", "458", ErrorCategory.AUTH_REVOKED),
        ("190", "", ErrorCategory.AUTH_REVOKED),
        ("4", "", ErrorCategory.RATE_LIMITED),
        ("17", "", ErrorCategory.RATE_LIMITED),
        ("32", "", ErrorCategory.RATE_LIMITED),
        ("613", "", ErrorCategory.RATE_LIMITED),
        ("10", "", ErrorCategory.PERMISSION_MISSING),
        ("200", "", ErrorCategory.PERMISSION_MISSING),
        ("100", "", ErrorCategory.INVALID_REQUEST),
        ("100", "33", ErrorCategory.NOT_FOUND),
        ("368", "", ErrorCategory.CONTENT_REJECTED),
        ("1", "", ErrorCategory.TRANSIENT),
        ("2", "", ErrorCategory.TRANSIENT),
        ("9", "2207042", ErrorCategory.QUOTA_EXCEEDED),
        ("4", "2207051", ErrorCategory.CONTENT_REJECTED),
    ],
)
def test_meta_codes(code: str, subcode: str, category: ErrorCategory) -> None:
    assert classify("meta", RawFailure(400, code=code, subcode=subcode)) is category


@pytest.mark.parametrize("status", [0, 500, 502, 503, 504])
@pytest.mark.parametrize("catalogue", ["meta", "linkedin"])
def test_no_answer_or_5xx_is_never_an_auth_problem(catalogue: str, status: int) -> None:
    for code in ("190", "REVOKED_ACCESS_TOKEN", "INVALID_ACCESS_TOKEN", "200", "10"):
        category = classify(catalogue, RawFailure(status, code=code, subcode="460"))
        assert category in (ErrorCategory.TRANSIENT, ErrorCategory.PLATFORM_OUTAGE), (code, status)


def test_fallbacks_by_status_when_the_code_is_unknown() -> None:
    assert classify("linkedin", RawFailure(429)) is ErrorCategory.RATE_LIMITED
    assert classify("linkedin", RawFailure(503)) is ErrorCategory.PLATFORM_OUTAGE
    assert classify("linkedin", RawFailure(500)) is ErrorCategory.TRANSIENT
    assert classify("meta", RawFailure(418, code="99999")) is ErrorCategory.UNKNOWN


def test_messages_are_words_with_the_retry_hint() -> None:
    error = DATA.catalogues["meta"].classify(
        RawFailure(
            400, code="32", retry_after=120, platform_message="(#32) Page request limit reached"
        ),
        platform="facebook",
        display_name="Facebook",
        account="Acme Coffee",
    )
    assert (
        error.message
        == "Facebook's limit on calls for Acme Coffee was reached; retrying in 2 minutes."
    )
    assert error.action is ErrorAction.RETRY_LATER
    assert error.retryable
    assert error.platform_message == "(#32) Page request limit reached"


def test_content_rejection_carries_the_platforms_reason() -> None:
    error = DATA.catalogues["linkedin"].classify(
        RawFailure(422, platform_message="/commentary :: length 3100 exceeds the maximum"),
        platform="linkedin",
        display_name="LinkedIn",
    )
    assert error.category is ErrorCategory.CONTENT_REJECTED
    assert "exceeds the maximum" in error.message


def test_every_data_file_loads_and_names_its_default_capabilities() -> None:
    assert set(DATA.capabilities) == {
        "facebook",
        "instagram",
        "linkedin",
        "tiktok",
        "google_business",
        "mailchimp",
    }
    for caps in DATA.capabilities.values():
        # Mailchimp alone has no OAuth scopes.
        assert caps.scopes_for([]) or caps.platform == "mailchimp", caps.platform
        assert caps.formats, caps.platform


C = ErrorCategory


def R(status: int, code: str = "", subcode: str = "", message: str = "") -> RawFailure:
    return RawFailure(status, code=code, subcode=subcode, platform_message=message)


EXPIRED = "The access token has expired."
UNAUDITED = "unaudited_client_can_only_post_to_private_accounts"
SCOPE = "ACCESS_TOKEN_SCOPE_INSUFFICIENT"


@pytest.mark.parametrize(
    ("catalogue", "raw", "category"),
    [
        ("tiktok", R(401, "access_token_invalid", message=EXPIRED), C.AUTH_EXPIRED),
        ("tiktok", R(401, "access_token_invalid", message="revoked"), C.AUTH_REVOKED),
        ("tiktok", R(403, "spam_risk_too_many_posts"), C.QUOTA_EXCEEDED),
        ("tiktok", R(403, UNAUDITED), C.CONTENT_REJECTED),
        ("tiktok", R(400, "invalid_grant", message="Refresh token is invalid"), C.AUTH_REVOKED),
        ("tiktok", R(200, "file_format_check_failed"), C.CONTENT_REJECTED),
        ("google", R(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"), C.AUTH_EXPIRED),
        ("google", R(403, "PERMISSION_DENIED", SCOPE), C.PERMISSION_MISSING),
        ("google", R(429, "RESOURCE_EXHAUSTED"), C.RATE_LIMITED),
        ("google", R(400, "invalid_grant", message="expired or revoked"), C.AUTH_REVOKED),
        ("mailchimp", R(401, "API Key Invalid"), C.AUTH_REVOKED),
        ("mailchimp", R(400, "Invalid Resource"), C.CONTENT_REJECTED),
    ],
)  # fmt: skip
def test_other_platforms(catalogue: str, raw: RawFailure, category: ErrorCategory) -> None:
    assert classify(catalogue, raw) is category


def test_meta_usage_headers_pause_at_the_allowance() -> None:
    from postd_connectors.platforms.http import PlatformResponse
    from postd_connectors.platforms.meta import APP_USAGE_PAUSE_SECONDS, usage_from_headers

    def usage(headers: dict[str, str]) -> Any:
        return usage_from_headers(PlatformResponse(200, headers, b"{}", 0.01))

    (low,) = usage({"X-App-Usage": '{"call_count": 12, "total_cputime": 3, "total_time": 40}'})
    assert (low.name, low.used_percent, low.retry_after) == ("app_calls_per_hour", 40.0, None)
    (full,) = usage({"x-app-usage": '{"call_count": 100, "total_cputime": 20, "total_time": 20}'})
    assert full.retry_after == APP_USAGE_PAUSE_SECONDS
    buc = '{"1": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 7}]}'
    (page,) = usage({"X-Business-Use-Case-Usage": buc})
    assert (page.scope, page.retry_after) == ("account", 420.0)
