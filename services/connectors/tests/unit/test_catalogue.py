"""The error catalogue: data files load, the most specific entry wins, and no
network error or 5xx is ever read as a revoked token."""

from __future__ import annotations

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
