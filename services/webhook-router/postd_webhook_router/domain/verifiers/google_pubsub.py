"""Google Pub/Sub push (Business Profile notifications): an OIDC JWT in ``Authorization``.

Pub/Sub signs a Google ID token (RS256) with ``iss`` https://accounts.google.com,
``aud`` as configured on the push subscription, ``email`` of the push service
account and ``email_verified`` true. The keys are Google's JWKS (fetched and cached
by a :class:`~postd_webhook_router.ports.KeySource`). An expired token is a replay or
a skewed clock: stale. The body is ``{"message": {"data", "messageId", ...},
"subscription"}``; ``messageId`` is what redeliveries share.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt

from postd_webhook_router.domain.model import InboundRequest, Outcome, Rejection, Verdict, Verified
from postd_webhook_router.domain.verifiers.base import missing
from postd_webhook_router.ports import KeySource

ISSUERS = ("https://accounts.google.com", "accounts.google.com")
AUTH_HEADER = "Authorization"


@dataclass(frozen=True)
class GooglePubSubVerifier:
    keys: KeySource
    audience: str
    service_account_email: str
    leeway_seconds: float = 30.0
    audit_headers: tuple[str, ...] = ("User-Agent", "From")

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        header = request.header(AUTH_HEADER) or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return missing(AUTH_HEADER)
        token = token.strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return Rejection(Verdict.REJECTED_SIGNATURE, "Authorization is not a JWT")
        jwk = await self.keys.key(str(kid)) if kid else None
        if jwk is None:
            return Rejection(Verdict.REJECTED_SIGNATURE, "JWT signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                jwt.PyJWK(dict(jwk)).key,
                algorithms=["RS256"],
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud"], "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            return Rejection(Verdict.REJECTED_STALE, "OIDC token expired")
        except jwt.InvalidAudienceError:
            return Rejection(Verdict.REJECTED_SIGNATURE, "OIDC token audience does not match")
        except jwt.PyJWTError as exc:
            return Rejection(
                Verdict.REJECTED_SIGNATURE, f"OIDC token rejected: {type(exc).__name__}"
            )
        if claims.get("iss") not in ISSUERS:
            return Rejection(Verdict.REJECTED_SIGNATURE, "OIDC token issuer is not Google")
        email = str(claims.get("email", ""))
        if not hmac.compare_digest(email.encode(), self.service_account_email.encode()):
            return Rejection(Verdict.REJECTED_SIGNATURE, "OIDC token email is not the push account")
        if claims.get("email_verified") is not True:
            return Rejection(Verdict.REJECTED_SIGNATURE, "OIDC token email is not verified")
        try:
            envelope = json.loads(request.body)
            message_id = str(
                envelope["message"].get("messageId") or envelope["message"]["message_id"]
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return Rejection(Verdict.REJECTED_MALFORMED, "body is not a Pub/Sub push envelope")
        return Verified(platform_event_id=message_id)
