"""TikTok: ``TikTok-Signature: t=<unix>,s=<hex HMAC-SHA256(client secret, "<t>.<body>")>``.

The timestamp is signed, so a replay outside the tolerance is refused as stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postd_common.secrets import Secret
from postd_webhook_router.domain.model import InboundRequest, Outcome, Verified
from postd_webhook_router.domain.verifiers.base import (
    hex_bytes,
    keys_of,
    matches_any,
    mismatch,
    missing,
    stale,
)

SIGNATURE_HEADER = "TikTok-Signature"


@dataclass(frozen=True)
class TikTokVerifier:
    client_secrets: Sequence[Secret]
    tolerance_seconds: float = 300.0
    audit_headers: tuple[str, ...] = (SIGNATURE_HEADER,)

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        header = request.header(SIGNATURE_HEADER)
        if not header:
            return missing(SIGNATURE_HEADER)
        parts: dict[str, list[str]] = {}
        for element in header.split(","):
            prefix, _, value = element.strip().partition("=")
            parts.setdefault(prefix, []).append(value)
        timestamps = parts.get("t", [])
        if len(timestamps) != 1 or not timestamps[0].isdigit():
            return mismatch(SIGNATURE_HEADER)
        signed = timestamps[0].encode() + b"." + request.body
        keys = keys_of(self.client_secrets)
        ok = False
        for candidate in parts.get("s", []):
            provided = hex_bytes(candidate)
            if provided is not None and matches_any(keys, signed, provided):
                ok = True
        if not ok:
            return mismatch(SIGNATURE_HEADER)
        skew = abs(now - int(timestamps[0]))
        if skew > self.tolerance_seconds:
            return stale(SIGNATURE_HEADER, skew, self.tolerance_seconds)
        return Verified()
