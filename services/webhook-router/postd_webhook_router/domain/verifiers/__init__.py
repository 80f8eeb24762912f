"""One verifier per platform scheme, and the table of which path serves which."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postd_common.secrets import Secret
from postd_webhook_router.domain.verifiers.base import Verifier
from postd_webhook_router.domain.verifiers.google_pubsub import GooglePubSubVerifier
from postd_webhook_router.domain.verifiers.linkedin import LinkedInVerifier
from postd_webhook_router.domain.verifiers.mailchimp import MailchimpVerifier
from postd_webhook_router.domain.verifiers.meta import MetaVerifier
from postd_webhook_router.domain.verifiers.shopify import ShopifyVerifier
from postd_webhook_router.domain.verifiers.slack import SlackVerifier
from postd_webhook_router.domain.verifiers.standard_webhooks import StandardWebhooksVerifier
from postd_webhook_router.domain.verifiers.tiktok import TikTokVerifier
from postd_webhook_router.ports import KeySource

__all__ = ["PlatformSecrets", "Verifier", "build_verifiers"]


@dataclass(frozen=True)
class PlatformSecrets:
    client_secrets: Mapping[str, Sequence[Secret]]
    slack_signing_secrets: Sequence[Secret]
    meta_verify_token: Secret
    standard_webhooks_secrets: Sequence[Secret]
    google_audience: str
    google_service_account: str
    tolerance_seconds: float


def build_verifiers(secrets: PlatformSecrets, google_keys: KeySource) -> dict[str, Verifier]:
    """``{path platform: verifier}`` for every platform whose secrets are configured."""
    table: dict[str, Verifier] = {"mailchimp": MailchimpVerifier()}
    tolerance = secrets.tolerance_seconds
    meta = secrets.client_secrets.get("meta", ())
    if meta:
        verifier = MetaVerifier(tuple(meta), secrets.meta_verify_token)
        for name in ("facebook", "instagram", "meta"):
            table[name] = verifier
    if tiktok := secrets.client_secrets.get("tiktok", ()):
        table["tiktok"] = TikTokVerifier(tuple(tiktok), tolerance)
    if linkedin := secrets.client_secrets.get("linkedin", ()):
        table["linkedin"] = LinkedInVerifier(tuple(linkedin))
    if shopify := secrets.client_secrets.get("shopify", ()):
        table["shopify"] = ShopifyVerifier(tuple(shopify))
    if secrets.slack_signing_secrets:
        table["slack"] = SlackVerifier(tuple(secrets.slack_signing_secrets), tolerance)
    if secrets.google_audience and secrets.google_service_account:
        google = GooglePubSubVerifier(
            google_keys, secrets.google_audience, secrets.google_service_account
        )
        table["google"] = google
        table["google_business"] = google
    if secrets.standard_webhooks_secrets:
        standard = StandardWebhooksVerifier(tuple(secrets.standard_webhooks_secrets), tolerance)
        table["custom"] = standard
        table["standard_webhooks"] = standard
    return table
