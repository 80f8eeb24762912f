"""Settings every service shares, read through :class:`~postd_common.config.EnvReader`.

A service's ``config`` module calls :func:`load_common` and adds its own fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from postd_common.config import EnvReader
from postd_common.identity import IdentitySettings
from postd_common.kafka import KafkaSettings
from postd_common.logging import LEVELS, register_secret

# Default gRPC ports, one per service; ``make up`` shifts them all by POSTD_PORT_OFFSET.
GRPC_PORTS: Final = {
    "vault": 50051,
    "connectors": 50052,
    "publisher": 50053,
    "webhook-router": 50054,
    "health": 50055,
}
METRICS_PORTS: Final = {
    "gateway": 9100,
    "vault": 9101,
    "connectors": 9102,
    "publisher": 9103,
    "webhook-router": 9104,
    "health": 9105,
}
ENVIRONMENTS: Final = ("development", "test", "staging", "production")


def addr_var(service: str) -> str:
    """Environment variable holding the gRPC target of ``service``."""
    return f"POSTD_{service.upper().replace('-', '_')}_ADDR"


@dataclass(frozen=True)
class CommonSettings:
    service: str
    environment: str
    log_level: str
    database_url: str
    kafka: KafkaSettings
    grpc_listen: str
    metrics_listen: str
    identity: IdentitySettings
    otlp_endpoint: str | None

    @property
    def is_development(self) -> bool:
        return self.environment in ("development", "test")


def load_common(
    env: EnvReader, service: str, *, needs_database: bool = True, needs_kafka: bool = True
) -> CommonSettings:
    grpc_default = f"127.0.0.1:{GRPC_PORTS.get(service, 50050)}"
    metrics_default = f"127.0.0.1:{METRICS_PORTS.get(service, 9109)}"
    key_dir = Path(".postd/identity")
    return CommonSettings(
        service=service,
        environment=env.choice("POSTD_ENV", "development", ENVIRONMENTS),
        log_level=env.choice("POSTD_LOG_LEVEL", "info", LEVELS),
        database_url=env.text("DATABASE_URL", required=needs_database),
        kafka=KafkaSettings(
            bootstrap=env.text("KAFKA_BOOTSTRAP", required=needs_kafka),
            client_id=f"postd-{service}",
            session_timeout_ms=env.integer("POSTD_KAFKA_SESSION_TIMEOUT_MS", 6000, minimum=1000),
            heartbeat_interval_ms=env.integer("POSTD_KAFKA_HEARTBEAT_MS", 1000, minimum=100),
            extra=kafka_security(env),
        ),
        grpc_listen=env.address("POSTD_GRPC_LISTEN", grpc_default),
        metrics_listen=env.address("POSTD_METRICS_LISTEN", metrics_default),
        identity=IdentitySettings(
            service=service,
            private_key_file=env.path("POSTD_IDENTITY_KEY_FILE", key_dir / f"{service}.key"),
            trust_dir=env.path("POSTD_IDENTITY_TRUST_DIR", key_dir),
        ),
        otlp_endpoint=env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )


def kafka_security(env: EnvReader) -> dict[str, str]:
    """TLS / SASL settings for a managed Kafka (librdkafka property names).

    ``POSTD_KAFKA_SECURITY_PROTOCOL`` (plaintext, ssl, sasl_plaintext, sasl_ssl),
    ``POSTD_KAFKA_SASL_MECHANISM``, ``POSTD_KAFKA_SASL_USERNAME``,
    ``POSTD_KAFKA_SASL_PASSWORD``, ``POSTD_KAFKA_SSL_CA_LOCATION``.
    """
    protocol = env.choice(
        "POSTD_KAFKA_SECURITY_PROTOCOL",
        "plaintext",
        ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"),
    )
    extra: dict[str, str] = {}
    if protocol != "plaintext":
        extra["security.protocol"] = protocol
    for var, prop in (
        ("POSTD_KAFKA_SASL_MECHANISM", "sasl.mechanism"),
        ("POSTD_KAFKA_SASL_USERNAME", "sasl.username"),
        ("POSTD_KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
    ):
        value = env.optional(var)
        if value:
            extra[prop] = value
    password = env.optional("POSTD_KAFKA_SASL_PASSWORD")
    if password:
        register_secret(password)
        extra["sasl.password"] = password
    if protocol.startswith("sasl") and "sasl.mechanism" not in extra:
        env.problems.append("POSTD_KAFKA_SASL_MECHANISM is required with a SASL protocol")
    return extra


def service_addr(env: EnvReader, service: str) -> str:
    """Where to reach ``service`` over gRPC (``POSTD_<SERVICE>_ADDR``)."""
    return env.address(addr_var(service), f"127.0.0.1:{GRPC_PORTS[service]}")
