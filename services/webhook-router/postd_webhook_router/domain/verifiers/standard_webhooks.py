"""Standard Webhooks (custom connectors): ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``.

The signed content is ``"<webhook-id>.<webhook-timestamp>.<raw body>"``; the key is the
base64 part of a ``whsec_`` secret, decoded. ``webhook-signature`` holds space-separated
``v1,<base64>`` entries (several while the sender rotates); one match is enough. A
timestamp more than the tolerance (5 minutes) from now is refused as stale.
The signing functions here are also what POSTD uses for its own outbound deliveries.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from postd_common.secrets import Secret
from postd_webhook_router.domain.model import InboundRequest, Outcome, Verified
from postd_webhook_router.domain.verifiers.base import (
    b64_bytes,
    hmac_sha256,
    matches_any,
    mismatch,
    missing,
    stale,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class InvalidSecret(ValueError):
    """A signing secret that is not ``whsec_`` + base64."""


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_<base64>`` secret."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("a Standard Webhooks secret is whsec_ followed by base64") from exc
    if not key:
        raise InvalidSecret("a Standard Webhooks secret must not be empty")
    return key


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, as ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature entry."""
    digest = hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one entry per key, current key first."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


@dataclass(frozen=True)
class StandardWebhooksVerifier:
    secrets: Sequence[Secret]
    tolerance_seconds: float = 300.0
    audit_headers: tuple[str, ...] = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    needs_source_key: bool = True

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        msg_id = request.header(ID_HEADER)
        timestamp = request.header(TIMESTAMP_HEADER)
        signature = request.header(SIGNATURE_HEADER)
        for name, value in ((ID_HEADER, msg_id), (TIMESTAMP_HEADER, timestamp)):
            if not value:
                return missing(name)
        if not signature:
            return missing(SIGNATURE_HEADER)
        assert msg_id is not None
        assert timestamp is not None
        timestamp = timestamp.strip()
        if not timestamp.isdigit():
            return mismatch(SIGNATURE_HEADER)
        keys = []
        for secret in self.secrets:
            try:
                keys.append(secret_key(secret.reveal()))
            except InvalidSecret:
                continue
        signed = f"{msg_id}.{timestamp}.".encode() + request.body
        ok = False
        for entry in signature.split():
            version, _, encoded = entry.partition(",")
            provided = b64_bytes(encoded) if version == "v1" else None
            if provided is not None and matches_any(keys, signed, provided):
                ok = True
        if not ok:
            return mismatch(SIGNATURE_HEADER)
        skew = abs(now - int(timestamp))
        if skew > self.tolerance_seconds:
            return stale(TIMESTAMP_HEADER, skew, self.tolerance_seconds)
        return Verified(platform_event_id=msg_id)
