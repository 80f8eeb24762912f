"""Meta (Facebook Pages, Instagram): ``X-Hub-Signature-256`` and the subscribe handshake.

- POST: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``.
- GET: ``hub.mode=subscribe&hub.verify_token=<ours>&hub.challenge=<n>`` is answered
  with the challenge as plain text; a wrong verify token is refused (403).
- The Deauthorize Callback is a form POST ``signed_request=<sig>.<payload>``, both
  base64url without padding, ``sig`` = HMAC-SHA256(app secret, ``<payload>`` as sent)
  and the payload's ``algorithm`` "HMAC-SHA256". It carries no X-Hub signature.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from postd_common.secrets import Secret
from postd_webhook_router.domain.model import (
    Challenge,
    InboundRequest,
    Outcome,
    Rejection,
    Verdict,
    Verified,
)
from postd_webhook_router.domain.verifiers.base import (
    b64_bytes,
    hex_bytes,
    is_form,
    keys_of,
    matches_any,
    mismatch,
    missing,
    query,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"


@dataclass(frozen=True)
class MetaVerifier:
    app_secrets: Sequence[Secret]
    verify_token: Secret
    audit_headers: tuple[str, ...] = (SIGNATURE_HEADER, "X-Hub-Signature")

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        if request.method == "GET":
            return self._handshake(request)
        if is_form(request):
            return self._signed_request(request)
        header = request.header(SIGNATURE_HEADER)
        if not header:
            return missing(SIGNATURE_HEADER)
        scheme, _, digest = header.partition("=")
        provided = hex_bytes(digest) if scheme.strip().lower() == "sha256" else None
        if provided is None or not matches_any(keys_of(self.app_secrets), request.body, provided):
            return mismatch(SIGNATURE_HEADER)
        return Verified()

    def _handshake(self, request: InboundRequest) -> Outcome:
        params = query(request)
        mode, token = params.get("hub.mode"), params.get("hub.verify_token")
        challenge = params.get("hub.challenge")
        if mode != "subscribe" or token is None or challenge is None:
            return Rejection(Verdict.REJECTED_MALFORMED, "GET without a hub.* subscribe handshake")
        expected = self.verify_token.reveal_bytes()
        if not expected or not hmac.compare_digest(token.encode(), expected):
            return Rejection(Verdict.REJECTED_CHALLENGE, "hub.verify_token does not match")
        return Challenge(challenge.encode(), "text/plain", "hub.challenge answered")

    def _signed_request(self, request: InboundRequest) -> Outcome:
        try:
            form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            return Rejection(Verdict.REJECTED_MALFORMED, "form body is not UTF-8")
        signed = form.get("signed_request")
        if not signed:
            return missing("signed_request")
        encoded_sig, dot, encoded_payload = signed.partition(".")
        provided = b64_bytes(encoded_sig, urlsafe=True) if dot else None
        if provided is None or not matches_any(
            keys_of(self.app_secrets), encoded_payload.encode(), provided
        ):
            return mismatch("signed_request")
        raw = b64_bytes(encoded_payload, urlsafe=True)
        try:
            payload = json.loads(raw) if raw is not None else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return Rejection(Verdict.REJECTED_MALFORMED, "signed_request payload is not JSON")
        if str(payload.get("algorithm", "")).upper() != "HMAC-SHA256":
            return Rejection(
                Verdict.REJECTED_SIGNATURE, "signed_request algorithm is not HMAC-SHA256"
            )
        return Verified(decoded={"signed_request": payload})
