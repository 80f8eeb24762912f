"""Metrics are never on the public listener in production; /livez is always there."""

from __future__ import annotations

from pathlib import Path

import pytest

from postd_gateway.app import create_app
from postd_gateway.config import load_settings


def routes(environment: str, tmp_path: Path, **extra: str) -> set[str]:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://db/postd",
            "KAFKA_BOOTSTRAP": "kafka:9092",
            "POSTD_ENV": environment,
            "POSTD_PUBLIC_URL": "https://api.postd.example",
            "POSTD_IDENTITY_TRUST_DIR": str(tmp_path),
            **extra,
        }
    )
    app = create_app(settings)
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


@pytest.mark.parametrize(
    ("environment", "extra", "public"),
    [
        ("production", {}, False),
        ("staging", {}, False),
        ("development", {}, True),
        ("production", {"POSTD_GATEWAY_PUBLIC_METRICS": "1"}, True),
    ],
)
def test_public_metrics_only_where_asked(
    environment: str, extra: dict[str, str], public: bool, tmp_path: Path
) -> None:
    served = routes(environment, tmp_path, **extra)
    assert ("/metrics" in served) is public
    assert {"/livez", "/readyz", "/healthz"} <= served
