"""LinkedIn: ``X-LI-Signature`` and the ``challengeCode`` endpoint validation.

- POST: ``X-LI-Signature`` = hex HMAC-SHA256(client secret, raw body).
- GET ``?challengeCode=<uuid>``: answer JSON ``{"challengeCode", "challengeResponse"}``
  with ``challengeResponse`` = hex HMAC-SHA256(client secret, challengeCode), within
  3 seconds; LinkedIn repeats it every 2 hours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

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
    hex_bytes,
    hmac_sha256,
    keys_of,
    matches_any,
    mismatch,
    missing,
    query,
)

SIGNATURE_HEADER = "X-LI-Signature"


@dataclass(frozen=True)
class LinkedInVerifier:
    client_secrets: Sequence[Secret]
    audit_headers: tuple[str, ...] = (SIGNATURE_HEADER,)

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        keys = keys_of(self.client_secrets)
        if request.method == "GET":
            code = query(request).get("challengeCode")
            if not code or not keys:
                return Rejection(Verdict.REJECTED_MALFORMED, "GET without challengeCode")
            # The current secret answers; LinkedIn holds only one at a time.
            response = hmac_sha256(keys[0], code.encode()).hex()
            body = json.dumps({"challengeCode": code, "challengeResponse": response}).encode()
            return Challenge(body, "application/json", "challengeCode answered")
        header = request.header(SIGNATURE_HEADER)
        if not header:
            return missing(SIGNATURE_HEADER)
        provided = hex_bytes(header.removeprefix("hmacsha256="))
        if provided is None or not matches_any(keys, request.body, provided):
            return mismatch(SIGNATURE_HEADER)
        return Verified()
