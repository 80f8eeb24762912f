"""OAuth state sealing and PKCE; the SSRF guard's address rules; configuration."""

from __future__ import annotations

import ipaddress

import pytest

from postd_common.config import ConfigError
from postd_connectors.config import default_linkedin_version, load_settings
from postd_connectors.domain import oauth
from postd_connectors.media.fetch import (
    GuardedFetcher,
    MediaRefused,
    _PinnedResolver,
    address_refusal,
)


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth.s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifier_opens_only_with_its_own_state() -> None:
    state, other = oauth.new_state(), oauth.new_state()
    verifier = oauth.new_verifier()
    sealed = oauth.seal_verifier(state, verifier)
    assert verifier.encode() not in sealed
    assert oauth.open_verifier(state, sealed) == verifier
    assert oauth.open_verifier(other, sealed) is None
    assert 43 <= len(verifier) <= 128
    assert oauth.state_hash(state) != oauth.state_hash(other)


@pytest.mark.parametrize(
    "address",
    [
        *("127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1"),
        *("100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "224.0.0.1"),
        *("::ffff:127.0.0.1", "::ffff:169.254.169.254"),
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1/a.jpg", "url_refused"),
        ("https://169.254.169.254/latest/meta-data/", "url_refused"),
        ("https://10.0.0.8/a.jpg", "url_refused"),
        ("https://[::ffff:10.0.0.8]/a.jpg", "url_refused"),
        ("https://localhost/a.jpg", "url_refused"),
        ("ftp://example.com/a.jpg", "url_refused"),
        ("https://user:pw@example.com/a.jpg", "url_refused"),
        ("http://example.com/a.jpg", "url_refused"),  # https only outside development
    ],
)
async def test_production_fetcher_refuses_before_connecting(url: str, code: str) -> None:
    fetcher = GuardedFetcher(timeout=2.0)
    with pytest.raises(MediaRefused) as info:
        await fetcher.fetch(url, max_bytes=1024)
    assert info.value.code == code


async def test_pinned_resolver_answers_only_the_checked_addresses() -> None:
    ip = ipaddress.ip_address("93.184.216.34")
    resolver = _PinnedResolver("cdn.example.com", [ip])
    (answer,) = await resolver.resolve("cdn.example.com", 443)
    assert answer["host"] == "93.184.216.34"
    with pytest.raises(OSError, match="unexpected host"):
        await resolver.resolve("evil.example.com", 443)


BASE = {"DATABASE_URL": "postgresql://x", "KAFKA_BOOTSTRAP": "127.0.0.1:9092"}


def test_dev_media_exemptions_are_refused_outside_development() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "POSTD_ENV": "production", "POSTD_MEDIA_ALLOW_SANDBOX": "1"})
    assert "development only" in str(info.value)


def test_platforms_without_credentials_use_the_sandbox_only_in_development() -> None:
    dev = load_settings(
        {**BASE, "POSTD_ENV": "development", "POSTD_SANDBOX_URL": "http://127.0.0.1:9999"}
    )
    assert dev.apps["meta"].sandbox
    assert dev.apps["meta"].url("graph") == "http://127.0.0.1:9999/meta/graph"
    assert not dev.disabled_apps
    prod = load_settings(
        {
            **BASE,
            "POSTD_ENV": "production",
            "POSTD_LINKEDIN_CLIENT_ID": "real-id",
            "POSTD_LINKEDIN_CLIENT_SECRET": "real-secret-value",
        }
    )
    assert prod.apps["linkedin"].url("api") == "https://api.linkedin.com"
    assert not prod.apps["linkedin"].sandbox
    assert "meta" in prod.disabled_apps
    assert "linkedin" not in prod.disabled_apps


def test_half_configured_credentials_are_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "POSTD_META_CLIENT_ID": "only-the-id"})
    assert "POSTD_META_CLIENT_SECRET" in str(info.value)


def test_linkedin_version_is_a_recent_month() -> None:
    from datetime import UTC, datetime

    assert default_linkedin_version(datetime(2026, 1, 15, tzinfo=UTC)) == "202511"
    assert default_linkedin_version(datetime(2026, 11, 28, tzinfo=UTC)) == "202609"
