"""What every verifier is, and the constant-time helpers they share."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import parse_qsl

from postd_common.secrets import Secret
from postd_webhook_router.domain.model import InboundRequest, Outcome, Rejection, Verdict


class Verifier(Protocol):
    """Checks one platform's inbound requests.

    ``verify`` answers handshakes (Challenge), refuses forgeries and replays
    (Rejection) or vouches for the request (Verified). It never raises for anything
    a client sent; it may block only on a :class:`~postd_webhook_router.ports.KeySource`
    (Google's JWKS), which raises ``KeySourceUnavailable``.
    """

    @property
    def audit_headers(self) -> tuple[str, ...]:
        """Headers kept with the stored event (signatures kept for audit)."""
        ...

    async def verify(self, request: InboundRequest, now: float) -> Outcome: ...


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def matches_any(keys: Sequence[bytes], message: bytes, provided: bytes) -> bool:
    """True when HMAC-SHA256(key, message) equals ``provided`` for one of ``keys``.

    Every key is tried (no early exit), each comparison in constant time on raw bytes.
    """
    found = False
    for key in keys:
        if hmac.compare_digest(hmac_sha256(key, message), provided):
            found = True
    return found


def keys_of(secrets: Sequence[Secret]) -> tuple[bytes, ...]:
    return tuple(s.reveal_bytes() for s in secrets if s)


def hex_bytes(value: str) -> bytes | None:
    """Raw bytes of a hex digest, or None when it is not hex."""
    try:
        return bytes.fromhex(value.strip())
    except ValueError:
        return None


def b64_bytes(value: str, *, urlsafe: bool = False) -> bytes | None:
    """Raw bytes of a base64 value (padding optional for urlsafe), or None."""
    text = value.strip()
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def query(request: InboundRequest) -> dict[str, str]:
    return dict(parse_qsl(request.query_string, keep_blank_values=True))


def missing(header: str) -> Rejection:
    return Rejection(Verdict.REJECTED_SIGNATURE, f"missing {header} header")


def mismatch(header: str) -> Rejection:
    return Rejection(Verdict.REJECTED_SIGNATURE, f"{header} does not match the body")


def stale(header: str, skew: float, tolerance: float) -> Rejection:
    return Rejection(
        Verdict.REJECTED_STALE,
        f"{header} is {skew:.0f}s away from now (tolerance {tolerance:.0f}s)",
    )


def is_form(request: InboundRequest) -> bool:
    content_type = (request.header("content-type") or "").lower()
    return content_type.startswith("application/x-www-form-urlencoded")
