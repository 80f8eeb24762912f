"""Settings of the webhook router: the only module that reads the environment.

Platform secrets come from ``POSTD_<PLATFORM>_CLIENT_SECRET`` (META, TIKTOK, LINKEDIN,
SHOPIFY), ``POSTD_SLACK_SIGNING_SECRET``, ``POSTD_META_VERIFY_TOKEN`` and
``POSTD_STANDARD_WEBHOOKS_SECRET``. Each may hold two secrets during a rotation: a
comma-separated list, or the new one in the variable and the old one in
``<NAME>_PREVIOUS``. In development and test an unset secret takes the sandbox's
development value, so ``python -m postd_webhook_router`` works against the sandbox
with no setup; elsewhere an unset secret switches that platform off (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from postd_common.config import EnvReader
from postd_common.logging import register_secret
from postd_common.secrets import Secret
from postd_common.settings import CommonSettings, load_common, service_addr

SERVICE = "webhook-router"

HMAC_PLATFORMS = ("meta", "tiktok", "linkedin", "shopify")
# The sandbox's development values (sandbox/postd_sandbox/config.py).
_DEV_DEFAULTS: Mapping[str, str] = {
    "POSTD_SLACK_SIGNING_SECRET": "dev-slack-signing-secret",
    "POSTD_META_VERIFY_TOKEN": "dev-meta-verify-token",
    "POSTD_STANDARD_WEBHOOKS_SECRET": "whsec_ZGV2LXN0YW5kYXJkLXdlYmhvb2tzLXNlY3JldA==",
    **{f"POSTD_{p.upper()}_CLIENT_SECRET": f"dev-{p}-client-secret" for p in HMAC_PLATFORMS},
}
DEV_PUBSUB_ACCOUNT = "pubsub-push@postd-sandbox.iam.gserviceaccount.com"


@dataclass(frozen=True)
class InboundSettings:
    client_secrets: Mapping[str, tuple[Secret, ...]]
    slack_signing_secrets: tuple[Secret, ...]
    meta_verify_token: Secret
    standard_webhooks_secrets: tuple[Secret, ...]
    google_audience: str
    google_service_account: str
    google_jwks_url: str
    jwks_ttl_seconds: float
    max_body_bytes: int
    tolerance_seconds: float
    dedupe_window_seconds: int
    commit_batch_rows: int
    commit_concurrency: int


@dataclass(frozen=True)
class ProcessingSettings:
    batch_size: int
    max_attempts: int
    retry_base_seconds: float
    poll_seconds: float
    resolve_cache_seconds: float
    linger_seconds: float


@dataclass(frozen=True)
class OutboundSettings:
    allow_loopback: bool
    allow_http: bool
    retry_base_seconds: float
    retry_max_delay_seconds: float
    retry_window_seconds: float
    disable_after_seconds: float
    disable_min_failures: int
    alert_after_failures: int
    request_timeout_seconds: float
    poll_seconds: float
    secret_overlap_seconds: float


# What one process runs: "all" (the API and the background work: processing, the
# outbox relay, outbound deliveries, the Kafka consumers), "api" (inbound and the API
# only; POSTD_WEBHOOKS_WORKERS=separate) or "worker" (the background work only:
# ``python -m postd_webhook_router worker``).
ROLES = ("all", "api", "worker")


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    inbound: InboundSettings
    processing: ProcessingSettings
    outbound: OutboundSettings
    connectors_addr: str
    vault_addr: str
    consumer_group: str
    role: str = "all"


def _secrets(env: EnvReader, name: str, development: bool) -> tuple[Secret, ...]:
    values = list(env.items(name))
    values += list(env.items(f"{name}_PREVIOUS"))
    if not values and development and name in _DEV_DEFAULTS:
        values = [_DEV_DEFAULTS[name]]
    for value in values:
        register_secret(value)
    return tuple(Secret(v) for v in values)


def load_settings(environ: Mapping[str, str], *, worker: bool = False) -> Settings:
    """Read every setting; raises ConfigError naming each bad variable. ``worker``:
    the settings of ``python -m postd_webhook_router worker`` (background work only)."""
    env = EnvReader(environ)
    common = load_common(env, SERVICE)
    dev = common.is_development
    verify = _secrets(env, "POSTD_META_VERIFY_TOKEN", dev)
    inbound = InboundSettings(
        client_secrets={
            p: _secrets(env, f"POSTD_{p.upper()}_CLIENT_SECRET", dev) for p in HMAC_PLATFORMS
        },
        slack_signing_secrets=_secrets(env, "POSTD_SLACK_SIGNING_SECRET", dev),
        meta_verify_token=verify[0] if verify else Secret(""),
        standard_webhooks_secrets=_secrets(env, "POSTD_STANDARD_WEBHOOKS_SECRET", dev),
        google_audience=env.text("POSTD_GOOGLE_PUBSUB_AUDIENCE", "postd-webhooks" if dev else ""),
        google_service_account=env.text(
            "POSTD_GOOGLE_PUBSUB_SERVICE_ACCOUNT", DEV_PUBSUB_ACCOUNT if dev else ""
        ),
        google_jwks_url=env.text(
            "POSTD_GOOGLE_JWKS_URL",
            "http://127.0.0.1:8090/google/oauth2/v3/certs"
            if dev
            else "https://www.googleapis.com/oauth2/v3/certs",
        ),
        jwks_ttl_seconds=env.number("POSTD_GOOGLE_JWKS_TTL_SECONDS", 3600.0, minimum=1.0),
        max_body_bytes=env.integer("POSTD_WEBHOOKS_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        tolerance_seconds=env.number("POSTD_WEBHOOKS_TOLERANCE_SECONDS", 300.0, minimum=1.0),
        dedupe_window_seconds=env.integer(
            "POSTD_WEBHOOKS_DEDUPE_WINDOW_SECONDS", 48 * 3600, minimum=60
        ),
        # Group commit: deliveries arriving while a commit is in flight share the next
        # one (1 = a transaction per delivery). Each is answered after its commit.
        commit_batch_rows=env.integer("POSTD_WEBHOOKS_COMMIT_BATCH_ROWS", 200, minimum=1),
        commit_concurrency=env.integer("POSTD_WEBHOOKS_COMMIT_CONCURRENCY", 1, minimum=1),
    )
    processing = ProcessingSettings(
        batch_size=env.integer("POSTD_WEBHOOKS_PROCESS_BATCH", 200, minimum=1),
        max_attempts=env.integer("POSTD_WEBHOOKS_PROCESS_MAX_ATTEMPTS", 8, minimum=1),
        retry_base_seconds=env.number("POSTD_WEBHOOKS_PROCESS_RETRY_SECONDS", 2.0, minimum=0.01),
        poll_seconds=env.number("POSTD_WEBHOOKS_POLL_SECONDS", 0.5, minimum=0.01),
        resolve_cache_seconds=env.number("POSTD_WEBHOOKS_RESOLVE_CACHE_SECONDS", 60.0, minimum=0),
        # Under load, stored deliveries are processed in batches at most this often
        # (one claim, one completion and one relay per batch, not per group commit).
        linger_seconds=env.number("POSTD_WEBHOOKS_PROCESS_LINGER_MS", 20.0, minimum=0) / 1000,
    )
    outbound = OutboundSettings(
        # Loopback targets only where tests need them; never in staging or production.
        allow_loopback=dev and env.flag("POSTD_WEBHOOKS_ALLOW_LOOPBACK", False),
        allow_http=dev,
        retry_base_seconds=env.number("POSTD_OUTBOUND_RETRY_BASE_SECONDS", 5.0, minimum=0.01),
        retry_max_delay_seconds=env.number(
            "POSTD_OUTBOUND_RETRY_MAX_DELAY_SECONDS", 10 * 3600.0, minimum=0.01
        ),
        retry_window_seconds=env.number(
            "POSTD_OUTBOUND_RETRY_WINDOW_SECONDS", 24 * 3600.0 + 600, minimum=0.01
        ),
        disable_after_seconds=env.number(
            "POSTD_OUTBOUND_DISABLE_AFTER_SECONDS", 5 * 24 * 3600.0, minimum=0.01
        ),
        disable_min_failures=env.integer("POSTD_OUTBOUND_DISABLE_MIN_FAILURES", 15, minimum=1),
        alert_after_failures=env.integer("POSTD_OUTBOUND_ALERT_AFTER_FAILURES", 3, minimum=1),
        request_timeout_seconds=env.number("POSTD_OUTBOUND_TIMEOUT_SECONDS", 15.0, minimum=0.1),
        poll_seconds=env.number("POSTD_OUTBOUND_POLL_SECONDS", 1.0, minimum=0.01),
        secret_overlap_seconds=env.number(
            "POSTD_OUTBOUND_SECRET_OVERLAP_SECONDS", 24 * 3600.0, minimum=0
        ),
    )
    settings = Settings(
        common=common,
        inbound=inbound,
        processing=processing,
        outbound=outbound,
        connectors_addr=service_addr(env, "connectors"),
        vault_addr=service_addr(env, "vault"),
        consumer_group=env.text("POSTD_WEBHOOKS_CONSUMER_GROUP", "webhook-router"),
        role="worker" if worker else _api_role(env),
    )
    env.check()
    return settings


def _api_role(env: EnvReader) -> str:
    workers = env.choice("POSTD_WEBHOOKS_WORKERS", "inline", ("inline", "separate"))
    return "api" if workers == "separate" else "all"
