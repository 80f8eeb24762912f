"""Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<ts>:<body>")>``.

``X-Slack-Request-Timestamp`` more than 5 minutes from now is refused as stale. The
``url_verification`` handshake is signed like any event and answered with its
``challenge``. Retries carry the same ``event_id``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from postd_common.secrets import Secret
from postd_webhook_router.domain.model import Challenge, InboundRequest, Outcome, Verified
from postd_webhook_router.domain.verifiers.base import (
    hex_bytes,
    keys_of,
    matches_any,
    mismatch,
    missing,
    stale,
)

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"


@dataclass(frozen=True)
class SlackVerifier:
    signing_secrets: Sequence[Secret]
    tolerance_seconds: float = 300.0
    audit_headers: tuple[str, ...] = (
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        "X-Slack-Retry-Num",
        "X-Slack-Retry-Reason",
    )

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        signature = request.header(SIGNATURE_HEADER)
        timestamp = request.header(TIMESTAMP_HEADER)
        if not signature:
            return missing(SIGNATURE_HEADER)
        if not timestamp:
            return missing(TIMESTAMP_HEADER)
        timestamp = timestamp.strip()
        version, _, digest = signature.partition("=")
        provided = hex_bytes(digest) if version == "v0" and timestamp.isdigit() else None
        base = b"v0:" + timestamp.encode() + b":" + request.body
        if provided is None or not matches_any(keys_of(self.signing_secrets), base, provided):
            return mismatch(SIGNATURE_HEADER)
        skew = abs(now - int(timestamp))
        if skew > self.tolerance_seconds:
            return stale(TIMESTAMP_HEADER, skew, self.tolerance_seconds)
        try:
            document = json.loads(request.body)
        except ValueError:
            return Verified()  # interactive payloads are form-encoded
        if not isinstance(document, dict):
            return Verified()
        if document.get("type") == "url_verification":
            challenge = str(document.get("challenge", ""))
            return Challenge(challenge.encode(), "text/plain", "url_verification answered")
        return Verified(platform_event_id=str(document.get("event_id", "")))
