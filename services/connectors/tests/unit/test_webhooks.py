"""Webhook signature checks, with the sandbox's signing functions as the platform
side: constant-time comparisons on the raw bytes, tampering refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from postd_connectors.app import build_connectors, load_platform_data
from postd_connectors.config import load_settings
from postd_connectors.media.fetch import GuardedFetcher
from postd_sandbox import signing

BODY = (
    b'{"object":"page","entry":[{"id":"200000000000001","time":1800000000,"changes":'
    b'[{"field":"feed","value":{"item":"comment","post_id":"200000000000001_1"}}]}]}'
)


@pytest.fixture
async def connectors() -> AsyncIterator[dict[str, Any]]:
    settings = load_settings({"DATABASE_URL": "postgresql://x", "KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    async with aiohttp.ClientSession() as session:
        yield build_connectors(settings, session, GuardedFetcher(), load_platform_data())


def test_meta_signature(connectors: dict[str, Any]) -> None:
    facebook = connectors["facebook"]
    good = {"X-Hub-Signature-256": signing.meta_signature("dev-meta-client-secret", BODY)}
    assert facebook.verify_webhook(good, BODY)
    assert not facebook.verify_webhook(good, BODY.replace(b"comment", b"c0mment"))
    assert not facebook.verify_webhook({"X-Hub-Signature-256": "sha256=zz"}, BODY)
    assert not facebook.verify_webhook({}, BODY)
    wrong_key = {"X-Hub-Signature-256": signing.meta_signature("another-secret", BODY)}
    assert not facebook.verify_webhook(wrong_key, BODY)
    (event,) = facebook.parse_webhook(good, BODY)
    assert event.account_id == "200000000000001"
    assert event.kind == "page.feed.comment"


def test_linkedin_signature(connectors: dict[str, Any]) -> None:
    linkedin = connectors["linkedin"]
    signature = signing.linkedin_signature("dev-linkedin-client-secret", BODY)
    assert linkedin.verify_webhook({"X-LI-Signature": signature}, BODY)
    assert linkedin.verify_webhook({"x-li-signature": "hmacsha256=" + signature}, BODY)
    assert not linkedin.verify_webhook({"X-LI-Signature": signature}, BODY + b"\n")
    assert linkedin.challenge_response("890e4665") == signing.linkedin_challenge_response(
        "dev-linkedin-client-secret", "890e4665"
    )


def test_tiktok_signature_and_staleness(connectors: dict[str, Any]) -> None:
    tiktok = connectors["tiktok"]
    header = {
        "TikTok-Signature": signing.tiktok_signature(
            "dev-tiktok-client-secret", BODY, 1_800_000_000
        )
    }
    assert tiktok.verify_webhook(header, BODY, now=1_800_000_100)
    assert not tiktok.verify_webhook(header, BODY, now=1_800_001_000)
    assert not tiktok.verify_webhook(header, BODY + b" ", now=1_800_000_100)
