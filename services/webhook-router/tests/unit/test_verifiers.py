"""Each verifier against its platform's signing, as the sandbox (the platform side) signs."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from postd_common.secrets import Secret
from postd_sandbox import signing
from postd_sandbox.platforms.meta import meta_signed_request
from postd_webhook_router.domain.model import (
    Challenge,
    InboundRequest,
    Rejection,
    Verdict,
    Verified,
)
from postd_webhook_router.domain.verifiers.google_pubsub import GooglePubSubVerifier
from postd_webhook_router.domain.verifiers.linkedin import LinkedInVerifier
from postd_webhook_router.domain.verifiers.mailchimp import MailchimpVerifier
from postd_webhook_router.domain.verifiers.meta import MetaVerifier
from postd_webhook_router.domain.verifiers.shopify import ShopifyVerifier
from postd_webhook_router.domain.verifiers.slack import SlackVerifier
from postd_webhook_router.domain.verifiers.standard_webhooks import (
    StandardWebhooksVerifier,
    new_secret,
)
from postd_webhook_router.domain.verifiers.tiktok import TikTokVerifier

NOW = int(time.time())
BODY = signing.canonical_json({"object": "page", "entry": [{"id": "1", "time": NOW}]})
SECRET = "app-secret-current"
OLD = "app-secret-previous"


def req(
    body: bytes = BODY,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    query: str = "",
) -> InboundRequest:
    return InboundRequest(
        method=method,
        platform="x",
        path_key="",
        body=body,
        headers=list((headers or {}).items()),
        query_string=query,
        remote_addr="203.0.113.9",
        received_at=datetime.now(UTC),
    )


def verdict(outcome: Any) -> Verdict | str:
    return outcome.verdict if isinstance(outcome, Rejection) else type(outcome).__name__


# ----------------------------------------------------------------------------- Meta

meta = MetaVerifier((Secret(SECRET), Secret(OLD)), Secret("verify-me"))


async def test_meta_signature_current_and_previous_secret_pass() -> None:
    for secret in (SECRET, OLD):
        sig = signing.meta_signature(secret, BODY)
        assert isinstance(
            await meta.verify(req(headers={"X-Hub-Signature-256": sig}), NOW), Verified
        )


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, BODY),  # missing
        ({"X-Hub-Signature-256": signing.meta_signature("forged", BODY)}, BODY),
        ({"X-Hub-Signature-256": signing.meta_signature(SECRET, BODY)}, BODY + b" "),  # tampered
        ({"X-Hub-Signature-256": "sha256=nothex"}, BODY),
        ({"X-Hub-Signature-256": "sha1=" + "0" * 40}, BODY),
    ],
)
async def test_meta_bad_signatures_rejected(headers: dict[str, str], body: bytes) -> None:
    assert verdict(await meta.verify(req(body, headers), NOW)) == Verdict.REJECTED_SIGNATURE


async def test_meta_handshake() -> None:
    ok = await meta.verify(
        req(method="GET", query="hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=42"),
        NOW,
    )
    assert isinstance(ok, Challenge)
    assert ok.body == b"42"
    wrong = await meta.verify(
        req(method="GET", query="hub.mode=subscribe&hub.verify_token=nope&hub.challenge=42"), NOW
    )
    assert verdict(wrong) == Verdict.REJECTED_CHALLENGE


async def test_meta_deauthorize_signed_request() -> None:
    payload = {"algorithm": "HMAC-SHA256", "issued_at": NOW, "user_id": "10001"}
    body = ("signed_request=" + meta_signed_request(SECRET, payload)).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ok = await meta.verify(req(body, form), NOW)
    assert isinstance(ok, Verified)
    assert ok.decoded == {"signed_request": payload}
    forged = ("signed_request=" + meta_signed_request("forged", payload)).encode()
    assert verdict(await meta.verify(req(forged, form), NOW)) == Verdict.REJECTED_SIGNATURE


# ----------------------------------------------------------------------------- TikTok

tiktok = TikTokVerifier((Secret(SECRET),), tolerance_seconds=300)


async def test_tiktok_fresh_forged_and_stale() -> None:
    good = {"TikTok-Signature": signing.tiktok_signature(SECRET, BODY, NOW)}
    assert isinstance(await tiktok.verify(req(headers=good), NOW), Verified)
    forged = {"TikTok-Signature": signing.tiktok_signature("forged", BODY, NOW)}
    assert verdict(await tiktok.verify(req(headers=forged), NOW)) == Verdict.REJECTED_SIGNATURE
    assert verdict(await tiktok.verify(req(BODY + b"x", good), NOW)) == Verdict.REJECTED_SIGNATURE
    old = {"TikTok-Signature": signing.tiktok_signature(SECRET, BODY, NOW - 3600)}
    assert verdict(await tiktok.verify(req(headers=old), NOW)) == Verdict.REJECTED_STALE
    # The timestamp is signed: moving it forward breaks the signature.
    moved = {"TikTok-Signature": old["TikTok-Signature"].replace(str(NOW - 3600), str(NOW))}
    assert verdict(await tiktok.verify(req(headers=moved), NOW)) == Verdict.REJECTED_SIGNATURE


# ----------------------------------------------------------------------------- LinkedIn

linkedin = LinkedInVerifier((Secret(SECRET),))


async def test_linkedin_signature_and_challenge() -> None:
    good = {"X-LI-Signature": signing.linkedin_signature(SECRET, BODY)}
    assert isinstance(await linkedin.verify(req(headers=good), NOW), Verified)
    bad = {"X-LI-Signature": signing.linkedin_signature("forged", BODY)}
    assert verdict(await linkedin.verify(req(headers=bad), NOW)) == Verdict.REJECTED_SIGNATURE
    code = "5f3c2b1a-0000-4000-8000-000000000001"
    answer = await linkedin.verify(req(method="GET", query=urlencode({"challengeCode": code})), NOW)
    assert isinstance(answer, Challenge)
    assert json.loads(answer.body) == {
        "challengeCode": code,
        "challengeResponse": signing.linkedin_challenge_response(SECRET, code),
    }


# ----------------------------------------------------------------------------- Shopify

shopify = ShopifyVerifier((Secret(SECRET),))


async def test_shopify_base64_hmac_and_event_id() -> None:
    headers = {
        "X-Shopify-Hmac-Sha256": signing.shopify_hmac(SECRET, BODY),
        "X-Shopify-Event-Id": "evt-1",
    }
    ok = await shopify.verify(req(headers=headers), NOW)
    assert isinstance(ok, Verified)
    assert ok.platform_event_id == "evt-1"
    hexed = {"X-Shopify-Hmac-Sha256": signing.linkedin_signature(SECRET, BODY)}  # hex, not b64
    assert verdict(await shopify.verify(req(headers=hexed), NOW)) == Verdict.REJECTED_SIGNATURE


# ----------------------------------------------------------------------------- Slack

slack = SlackVerifier((Secret(SECRET),))


def slack_headers(body: bytes, ts: int, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signing.slack_signature(secret, ts, body),
    }


async def test_slack_event_challenge_stale_forged() -> None:
    body = signing.canonical_json({"type": "event_callback", "event_id": "Ev1", "event": {}})
    ok = await slack.verify(req(body, slack_headers(body, NOW)), NOW)
    assert isinstance(ok, Verified)
    assert ok.platform_event_id == "Ev1"
    challenge = signing.canonical_json({"type": "url_verification", "challenge": "c-9"})
    answered = await slack.verify(req(challenge, slack_headers(challenge, NOW)), NOW)
    assert isinstance(answered, Challenge)
    assert answered.body == b"c-9"
    stale = await slack.verify(req(body, slack_headers(body, NOW - 301)), NOW)
    assert verdict(stale) == Verdict.REJECTED_STALE
    forged = await slack.verify(req(body, slack_headers(body, NOW, "forged")), NOW)
    assert verdict(forged) == Verdict.REJECTED_SIGNATURE
    # An unsigned url_verification is not answered.
    unsigned = await slack.verify(req(challenge, {}), NOW)
    assert verdict(unsigned) == Verdict.REJECTED_SIGNATURE


# ----------------------------------------------------------------------------- Standard Webhooks


async def test_standard_webhooks_rotation_multiple_signatures_and_staleness() -> None:
    current, previous = new_secret(), new_secret()
    verifier = StandardWebhooksVerifier((Secret(current), Secret(previous)))
    body = b'{"type":"thing.happened"}'

    def headers(secret: str, ts: int, msg: str = "msg_1") -> dict[str, str]:
        return {
            "webhook-id": msg,
            "webhook-timestamp": str(ts),
            "webhook-signature": signing.standard_webhooks_signature(secret, msg, ts, body),
        }

    for secret in (current, previous):
        ok = await verifier.verify(req(body, headers(secret, NOW)), NOW)
        assert isinstance(ok, Verified)
        assert ok.platform_event_id == "msg_1"
    several = headers(new_secret(), NOW)
    several["webhook-signature"] += " " + headers(current, NOW)["webhook-signature"]
    assert isinstance(await verifier.verify(req(body, several), NOW), Verified)
    forged = await verifier.verify(req(body, headers(new_secret(), NOW)), NOW)
    assert verdict(forged) == Verdict.REJECTED_SIGNATURE
    stale = await verifier.verify(req(body, headers(current, NOW - 600)), NOW)
    assert verdict(stale) == Verdict.REJECTED_STALE
    swapped_id = headers(current, NOW)
    swapped_id["webhook-id"] = "msg_2"
    assert verdict(await verifier.verify(req(body, swapped_id), NOW)) == Verdict.REJECTED_SIGNATURE


async def test_mailchimp_answers_get_and_accepts_post() -> None:
    verifier = MailchimpVerifier()
    assert isinstance(await verifier.verify(req(method="GET"), NOW), Challenge)
    assert isinstance(await verifier.verify(req(b"type=subscribe"), NOW), Verified)


# ----------------------------------------------------------------------------- Google


class FakeKeys:
    """A KeySource fake (unit tests only): a fixed JWKS."""

    def __init__(self, jwks: dict[str, dict[str, str]]) -> None:
        self.jwks = jwks
        self.asked: list[str] = []

    async def key(self, kid: str) -> Mapping[str, Any] | None:
        self.asked.append(kid)
        return self.jwks.get(kid)


ACCOUNT = "push@project.iam.gserviceaccount.com"
AUDIENCE = "https://hooks.postd.test/webhooks/google"


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return signing.generate_rsa_key()


def google_req(token: str) -> InboundRequest:
    body = signing.canonical_json(
        signing.pubsub_push_envelope(
            b'{"type":"NEW_REVIEW"}', subscription="s", message_id="m-1", publish_time="t"
        )
    )
    return req(body, {"Authorization": f"Bearer {token}"})


async def test_google_oidc_checks(rsa_key: Any) -> None:
    keys = FakeKeys({"k1": signing.public_jwk(rsa_key, "k1")})
    verifier = GooglePubSubVerifier(keys, AUDIENCE, ACCOUNT)

    def token(**kw: Any) -> str:
        args = {"audience": AUDIENCE, "email": ACCOUNT, **kw}
        return signing.google_oidc_token(rsa_key, "k1", **args)

    ok = await verifier.verify(google_req(token()), NOW)
    assert isinstance(ok, Verified)
    assert ok.platform_event_id == "m-1"
    cases = {
        Verdict.REJECTED_SIGNATURE: [
            token(audience="https://elsewhere"),
            token(email="someone@else.com"),
            token(email_verified=False),
            token(issuer="https://evil.example"),
            signing.google_oidc_token(
                signing.generate_rsa_key(), "k1", audience=AUDIENCE, email=ACCOUNT
            ),
            signing.google_oidc_token(rsa_key, "unknown", audience=AUDIENCE, email=ACCOUNT),
        ],
        Verdict.REJECTED_STALE: [token(issued_at=NOW - 7200, lifetime=3600)],
    }
    for expected, tokens in cases.items():
        for bad in tokens:
            assert verdict(await verifier.verify(google_req(bad), NOW)) == expected
    missing = await verifier.verify(req(google_req(token()).body, {}), NOW)
    assert verdict(missing) == Verdict.REJECTED_SIGNATURE
