"""Sandbox settings: the only place that reads the environment.

Every platform app credential has a development default so `python -m postd_sandbox`
runs with no setup; `make up` may hand in generated values through the same variables
the product's services read (`POSTD_<PLATFORM>_CLIENT_ID` / `_CLIENT_SECRET`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PLATFORMS: tuple[str, ...] = (
    "meta",
    "linkedin",
    "tiktok",
    "google",
    "mailchimp",
    "shopify",
    "slack",
)

DEFAULT_PORT = 8090
DEFAULT_HOST = "127.0.0.1"


class SettingsError(ValueError):
    """A sandbox environment variable holds a value that cannot be used."""


@dataclass(frozen=True)
class AppCredentials:
    """One platform app registration as the sandbox knows it."""

    client_id: str
    client_secret: str


@dataclass(frozen=True)
class SandboxSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Base of every URL the sandbox hands out (upload URLs, api_endpoint, ...).
    public_url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    auto_approve: bool = False
    apps: Mapping[str, AppCredentials] = field(default_factory=dict)
    slack_signing_secret: str = "dev-slack-signing-secret"
    meta_verify_token: str = "dev-meta-verify-token"
    standard_webhooks_secret: str = "whsec_ZGV2LXN0YW5kYXJkLXdlYmhvb2tzLXNlY3JldA=="
    # Redirect URIs registered with every sandbox app; empty means any http(s) URI
    # is accepted at the authorize endpoint (the token endpoint still demands the
    # exact same URI as the authorize request).
    registered_redirect_uris: tuple[str, ...] = ()
    # LinkedIn hands out refresh tokens to approved partners only.
    linkedin_partner: bool = False
    # TikTok restricts unaudited clients to SELF_ONLY posts.
    tiktok_audited: bool = False
    # Google apps in "testing" publishing status get refresh tokens that die in 7 days.
    google_testing_app: bool = False
    # How long an Instagram container stays IN_PROGRESS, and a TikTok post in
    # PROCESSING_UPLOAD after its last chunk.
    ig_container_delay_ms: int = 1500
    tiktok_processing_delay_ms: int = 1500
    # How long the `timeout` fault hangs before answering 504 (longer than any
    # sane client timeout).
    timeout_hang_seconds: float = 300.0
    # Meta's hourly app allowance behind X-App-Usage (see platforms/meta.py).
    meta_app_calls_per_hour: int = 2_000
    # `GET /_sandbox/tokens?reveal=1` answers the token values too (leak scans in tests
    # look for them in logs and spans); off, the values never leave the sandbox.
    reveal_tokens: bool = False
    # Email of the service account that signs Pub/Sub push requests.
    google_pubsub_service_account: str = "pubsub-push@postd-sandbox.iam.gserviceaccount.com"

    def app(self, platform: str) -> AppCredentials:
        try:
            return self.apps[platform]
        except KeyError:
            return default_app(platform)


def default_app(platform: str) -> AppCredentials:
    return AppCredentials(
        client_id=f"dev-{platform}-client-id",
        client_secret=f"dev-{platform}-client-secret",
    )


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be 1/0/true/false, got {raw!r}")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def load_settings(environ: Mapping[str, str]) -> SandboxSettings:
    """Build the settings from an environment mapping (normally `os.environ`)."""
    port = _int(environ, "POSTD_SANDBOX_PORT", DEFAULT_PORT)
    if not 0 < port < 65536:
        raise SettingsError(f"POSTD_SANDBOX_PORT out of range: {port}")
    meta_calls = _int(environ, "POSTD_SANDBOX_META_APP_CALLS_PER_HOUR", 2_000)
    if meta_calls < 1:
        raise SettingsError(
            f"POSTD_SANDBOX_META_APP_CALLS_PER_HOUR must be at least 1: {meta_calls}"
        )
    public_url = environ.get("POSTD_SANDBOX_PUBLIC_URL", "").strip().rstrip("/")
    if not public_url:
        public_url = f"http://{DEFAULT_HOST}:{port}"
    if not public_url.startswith(("http://", "https://")):
        raise SettingsError("POSTD_SANDBOX_PUBLIC_URL must start with http:// or https://")

    apps: dict[str, AppCredentials] = {}
    for platform in PLATFORMS:
        upper = platform.upper()
        default = default_app(platform)
        apps[platform] = AppCredentials(
            client_id=environ.get(f"POSTD_{upper}_CLIENT_ID", "").strip() or default.client_id,
            client_secret=environ.get(f"POSTD_{upper}_CLIENT_SECRET", "").strip()
            or default.client_secret,
        )

    redirect_uris = tuple(
        uri.strip()
        for uri in environ.get("POSTD_SANDBOX_REDIRECT_URIS", "").split(",")
        if uri.strip()
    )
    base = SandboxSettings()
    return SandboxSettings(
        host=DEFAULT_HOST,
        port=port,
        public_url=public_url,
        auto_approve=_flag(environ, "POSTD_SANDBOX_AUTO_APPROVE", False),
        apps=apps,
        slack_signing_secret=environ.get("POSTD_SLACK_SIGNING_SECRET", "").strip()
        or base.slack_signing_secret,
        meta_verify_token=environ.get("POSTD_META_VERIFY_TOKEN", "").strip()
        or base.meta_verify_token,
        standard_webhooks_secret=environ.get("POSTD_SANDBOX_STANDARD_WEBHOOKS_SECRET", "").strip()
        or base.standard_webhooks_secret,
        registered_redirect_uris=redirect_uris,
        linkedin_partner=_flag(environ, "POSTD_SANDBOX_LINKEDIN_PARTNER", False),
        tiktok_audited=_flag(environ, "POSTD_SANDBOX_TIKTOK_AUDITED", False),
        google_testing_app=_flag(environ, "POSTD_SANDBOX_GOOGLE_TESTING", False),
        ig_container_delay_ms=_int(
            environ, "POSTD_SANDBOX_IG_CONTAINER_DELAY_MS", base.ig_container_delay_ms
        ),
        tiktok_processing_delay_ms=_int(
            environ, "POSTD_SANDBOX_TIKTOK_PROCESSING_DELAY_MS", base.tiktok_processing_delay_ms
        ),
        timeout_hang_seconds=_float(
            environ, "POSTD_SANDBOX_TIMEOUT_HANG_SECONDS", base.timeout_hang_seconds
        ),
        meta_app_calls_per_hour=meta_calls,
        reveal_tokens=_flag(environ, "POSTD_SANDBOX_REVEAL_TOKENS", False),
        google_pubsub_service_account=environ.get(
            "POSTD_SANDBOX_PUBSUB_SERVICE_ACCOUNT", ""
        ).strip()
        or base.google_pubsub_service_account,
    )
