"""Gateway settings; the only gateway module that reads the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from postd_common.config import EnvReader
from postd_common.settings import GRPC_PORTS, CommonSettings, load_common, service_addr

BACKENDS = tuple(GRPC_PORTS)

# Asymmetric algorithms only: a JWKS publishes public keys, and HS* would let anyone
# who can read the JWKS forge tokens. "none" is never accepted.
ALLOWED_JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")


@dataclass(frozen=True)
class JwtSettings:
    """The external identity provider (Supabase-compatible). ``jwks_url`` empty: off."""

    jwks_url: str
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks_ttl_seconds: float
    # The least time between two fetches caused by an unknown ``kid``, so a flood of
    # forged tokens cannot turn the gateway into a JWKS hammer.
    jwks_min_refetch_seconds: float
    leeway_seconds: float

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_url)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    http_host: str
    http_port: int
    public_url: str
    backends: Mapping[str, str]
    max_body_bytes: int
    webhook_max_body_bytes: int
    backend_timeout_seconds: float
    oauth_timeout_seconds: float
    # How long an API key or session lookup is trusted from memory: the bound on how
    # long a revoked credential keeps working on a replica that did not revoke it.
    auth_cache_seconds: float
    last_used_flush_seconds: float
    session_ttl_seconds: int
    rate_limit_per_window: int
    rate_limit_window_seconds: int
    # Each replica takes this share of a tenant's window from PostgreSQL at a time, so
    # the shared counter is written once per lease, not once per request.
    rate_limit_lease_fraction: float
    idempotency_ttl_seconds: int
    dashboard_path: str
    jwt: JwtSettings
    # /metrics on the public listener too (development); in production Prometheus
    # scrapes the metrics listener (POSTD_METRICS_LISTEN) and the public port has none.
    public_metrics: bool = False
    # Webhooks received together go to the router in one IngestWebhooks call of at
    # most this many (1: one IngestWebhook call each), after waiting at most the
    # linger (0: none; they leave at the end of the event loop's turn), with at most
    # this many calls in flight (postd_webhook_router.http_passthrough.BatchPolicy).
    webhook_batch_max: int = 64
    webhook_batch_linger_seconds: float = 0.0
    webhook_batch_calls: int = 2
    # The backends /healthz asks; in a cluster whose NetworkPolicy keeps the vault out
    # of the gateway's reach, the vault is left out (POSTD_GATEWAY_HEALTH_BACKENDS).
    health_backends: tuple[str, ...] = BACKENDS

    @property
    def secure_cookies(self) -> bool:
        return not self.common.is_development

    def redirect_uri(self, platform: str) -> str:
        return f"{self.public_url}/oauth/callback/{platform}"


def _health_backends(env: EnvReader) -> tuple[str, ...]:
    names = env.items("POSTD_GATEWAY_HEALTH_BACKENDS", BACKENDS)
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        env.problems.append(
            f"POSTD_GATEWAY_HEALTH_BACKENDS names unknown services: {', '.join(unknown)}"
        )
    return tuple(n for n in names if n in BACKENDS)


def load_settings(environ: Mapping[str, str]) -> Settings:
    env = EnvReader(environ)
    common = load_common(env, "gateway")
    port = env.integer("POSTD_GATEWAY_PORT", 8080, minimum=1)
    algorithms = env.items("POSTD_AUTH_JWT_ALGORITHMS", ("RS256", "ES256"))
    for algorithm in algorithms:
        if algorithm not in ALLOWED_JWT_ALGORITHMS:
            env.problems.append(
                f"POSTD_AUTH_JWT_ALGORITHMS: {algorithm!r} is not allowed; use "
                + ", ".join(ALLOWED_JWT_ALGORITHMS)
            )
    jwks_url = env.text("POSTD_AUTH_JWKS_URL", "")
    issuer = env.text("POSTD_AUTH_JWT_ISSUER", "")
    if jwks_url and not issuer:
        env.problems.append("POSTD_AUTH_JWT_ISSUER is required when POSTD_AUTH_JWKS_URL is set")
    dashboard_path = env.text("POSTD_GATEWAY_DASHBOARD_PATH", "/")
    if not dashboard_path.startswith("/") or dashboard_path.startswith("//"):
        env.problems.append("POSTD_GATEWAY_DASHBOARD_PATH must be a path starting with one '/'")
    settings = Settings(
        common=common,
        http_host=env.text("POSTD_GATEWAY_HOST", "127.0.0.1"),
        http_port=port,
        public_url=env.text("POSTD_PUBLIC_URL", f"http://127.0.0.1:{port}").rstrip("/"),
        backends={name: service_addr(env, name) for name in BACKENDS},
        health_backends=_health_backends(env),
        max_body_bytes=env.integer("POSTD_GATEWAY_MAX_BODY_BYTES", 1_048_576, minimum=1024),
        webhook_max_body_bytes=env.integer(
            "POSTD_GATEWAY_WEBHOOK_MAX_BODY_BYTES", 1_048_576, minimum=1024
        ),
        webhook_batch_max=env.integer("POSTD_GATEWAY_WEBHOOK_BATCH", 64, minimum=1),
        webhook_batch_linger_seconds=env.number("POSTD_GATEWAY_WEBHOOK_LINGER_MS", 0.0, minimum=0.0)
        / 1000,
        webhook_batch_calls=env.integer("POSTD_GATEWAY_WEBHOOK_BATCH_CALLS", 2, minimum=1),
        backend_timeout_seconds=env.number("POSTD_GATEWAY_BACKEND_TIMEOUT", 5.0, minimum=0.05),
        oauth_timeout_seconds=env.number("POSTD_GATEWAY_OAUTH_TIMEOUT", 20.0, minimum=0.05),
        auth_cache_seconds=env.number("POSTD_GATEWAY_AUTH_CACHE_SECONDS", 5.0, minimum=0.0),
        last_used_flush_seconds=env.number("POSTD_GATEWAY_LAST_USED_FLUSH", 5.0, minimum=0.01),
        session_ttl_seconds=env.integer("POSTD_GATEWAY_SESSION_TTL", 12 * 3600, minimum=60),
        rate_limit_per_window=env.integer("POSTD_GATEWAY_RATE_LIMIT", 6000, minimum=1),
        rate_limit_window_seconds=env.integer("POSTD_GATEWAY_RATE_WINDOW", 60, minimum=1),
        rate_limit_lease_fraction=env.number(
            "POSTD_GATEWAY_RATE_LEASE_FRACTION", 0.02, minimum=0.0
        ),
        idempotency_ttl_seconds=env.integer("POSTD_GATEWAY_IDEMPOTENCY_TTL", 24 * 3600, minimum=60),
        dashboard_path=dashboard_path,
        public_metrics=env.flag("POSTD_GATEWAY_PUBLIC_METRICS", common.is_development),
        jwt=JwtSettings(
            jwks_url=jwks_url,
            issuer=issuer,
            audience=env.text("POSTD_AUTH_JWT_AUDIENCE", "authenticated"),
            algorithms=algorithms,
            jwks_ttl_seconds=env.number("POSTD_AUTH_JWKS_TTL", 300.0, minimum=1.0),
            jwks_min_refetch_seconds=env.number("POSTD_AUTH_JWKS_MIN_REFETCH", 10.0, minimum=0.0),
            leeway_seconds=env.number("POSTD_AUTH_JWT_LEEWAY", 30.0, minimum=0.0),
        ),
    )
    env.check()
    return settings
