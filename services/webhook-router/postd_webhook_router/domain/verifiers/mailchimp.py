"""Mailchimp: unsigned, so the URL carries a per-tenant secret path segment.

Mailchimp signs nothing. Each tenant's webhook URL ends in a random key POSTD issued
(stored hashed); the ingest step has already matched that key to a source before this
verifier runs, or answered 404. Mailchimp checks the URL with a GET when the webhook
is saved (answered 200, empty), then POSTs form-encoded bodies (``type``,
``fired_at``, ``data[...]``).
"""

from __future__ import annotations

from dataclasses import dataclass

from postd_webhook_router.domain.model import Challenge, InboundRequest, Outcome, Verified


@dataclass(frozen=True)
class MailchimpVerifier:
    audit_headers: tuple[str, ...] = ("User-Agent",)
    needs_source_key: bool = True

    async def verify(self, request: InboundRequest, now: float) -> Outcome:
        if request.method == "GET":
            return Challenge(b"", "", "Mailchimp URL validation answered")
        return Verified()
