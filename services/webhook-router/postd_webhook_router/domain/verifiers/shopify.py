"""Shopify: ``X-Shopify-Hmac-Sha256`` = base64 (not hex) HMAC-SHA256 of the raw body.

Shopify retries (8 times over 4 hours) with the same ``X-Shopify-Event-Id``, which is
what duplicates are recognised by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postd_common.secrets import Secret
from postd_webhook_router.domain.model import InboundRequest, Outcome, Verified
from postd_webhook_router.domain.verifiers.base import (
    b64_bytes,
    keys_of,
    matches_any,
    mismatch,
    missing,
)

SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"


@dataclass(frozen=True)
class ShopifyVerifier:
    client_secrets: Sequence[Secret]
    audit_headers: tuple[str, ...] = (
        SIGNATURE_HEADER,
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-Event-Id",
        "X-Shopify-Webhook-Id",
        "X-Shopify-Triggered-At",
        "X-Shopify-API-Version",
    )

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        header = request.header(SIGNATURE_HEADER)
        if not header:
            return missing(SIGNATURE_HEADER)
        provided = b64_bytes(header)
        if provided is None or not matches_any(
            keys_of(self.client_secrets), request.body, provided
        ):
            return mismatch(SIGNATURE_HEADER)
        event_id = request.header("X-Shopify-Event-Id") or request.header("X-Shopify-Webhook-Id")
        return Verified(platform_event_id=event_id or "")
