"""Webhook signing as each platform does it: small pure functions.

The sandbox uses these to sign the webhooks it sends, and the product's verifier tests
use them as "the platform side". Each function takes the raw body bytes exactly as
they go on the wire.

Doc facts relied on:
- Meta: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.
- TikTok: `TikTok-Signature: t=<unix seconds>,s=<hex HMAC-SHA256(client secret,
  "<t>.<raw body>")>`.
- LinkedIn: `X-LI-Signature`: hex HMAC-SHA256 of the raw body keyed by the client
  secret; endpoint validation answers `challengeCode` with `challengeResponse` =
  hex HMAC-SHA256(client secret, challengeCode).
- Shopify: `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256(client secret, raw body).
- Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
  "v0:<X-Slack-Request-Timestamp>:<body>")>`.
- Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>`
  where key is the base64 part of a `whsec_` secret, decoded.
- Google Pub/Sub push: `Authorization: Bearer <OIDC JWT>` signed RS256 by Google,
  `iss` https://accounts.google.com, `aud` as configured on the subscription,
  `email` / `email_verified` of the push service account; the body is
  `{"message": {"data": base64, "attributes", "messageId", "publishTime"},
  "subscription"}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GOOGLE_ISSUER = "https://accounts.google.com"


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def meta_signature(app_secret: str, body: bytes) -> str:
    """Value of Meta's `X-Hub-Signature-256` header."""
    return "sha256=" + _hmac_sha256(app_secret.encode(), body).hex()


def tiktok_signature(client_secret: str, body: bytes, timestamp: int) -> str:
    """Value of TikTok's `TikTok-Signature` header."""
    signed = str(timestamp).encode() + b"." + body
    return f"t={timestamp},s={_hmac_sha256(client_secret.encode(), signed).hex()}"


def linkedin_signature(client_secret: str, body: bytes) -> str:
    """Value of LinkedIn's `X-LI-Signature` header (hex digest)."""
    return _hmac_sha256(client_secret.encode(), body).hex()


def linkedin_challenge_response(client_secret: str, challenge_code: str) -> str:
    """What a LinkedIn webhook endpoint must answer to a `challengeCode`."""
    return _hmac_sha256(client_secret.encode(), challenge_code.encode()).hex()


def shopify_hmac(client_secret: str, body: bytes) -> str:
    """Value of Shopify's `X-Shopify-Hmac-Sha256` header (base64, not hex)."""
    return base64.b64encode(_hmac_sha256(client_secret.encode(), body)).decode()


def slack_signature(signing_secret: str, timestamp: int, body: bytes) -> str:
    """Value of Slack's `X-Slack-Signature` header for `X-Slack-Request-Timestamp`."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + _hmac_sha256(signing_secret.encode(), base).hex()


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` Standard Webhooks secret."""
    encoded = secret.removeprefix("whsec_")
    return base64.b64decode(encoded)


def standard_webhooks_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Value of the `webhook-signature` header (a single `v1,<base64>` entry)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = _hmac_sha256(standard_webhooks_key(secret), signed)
    return "v1," + base64.b64encode(digest).decode()


def generate_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    """The public half of `key` as a JWK, as Google lists them in its JWKS."""
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
    }


def google_oidc_token(
    key: rsa.RSAPrivateKey,
    kid: str,
    *,
    audience: str,
    email: str,
    email_verified: bool = True,
    issued_at: int | None = None,
    lifetime: int = 3600,
    issuer: str = GOOGLE_ISSUER,
    subject: str | None = None,
) -> str:
    """An OIDC ID token shaped like the one Pub/Sub push puts in `Authorization`."""
    iat = int(time.time()) if issued_at is None else issued_at
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "azp": subject or "100000000000000000000",
        "sub": subject or "100000000000000000000",
        "email": email,
        "email_verified": email_verified,
        "iat": iat,
        "exp": iat + lifetime,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


def pubsub_push_envelope(
    data: bytes,
    *,
    subscription: str,
    message_id: str,
    publish_time: str,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body Pub/Sub POSTs to a push endpoint (data is base64)."""
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    if attributes:
        message["attributes"] = dict(attributes)
    return {"message": message, "subscription": subscription}


def canonical_json(payload: Any) -> bytes:
    """Compact JSON bytes, the way the platforms put bodies on the wire."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
