"""Bad configuration stops every service with one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from postd_common.devinfra import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = [p.parent.name for p in sorted(ROOT.glob("services/*/postd_*/__main__.py"))]

pytestmark = pytest.mark.e2e


def start(package: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("POSTD_") and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP")
    }
    return subprocess.run(
        [sys.executable, "-m", package],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("package", SERVICES)
def test_unknown_variable_value(package: str, identity_dir: Path) -> None:
    result = start(
        package,
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postd",
            "KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "POSTD_LOG_LEVEL": "loud",
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        },
    )
    assert_one_clear_line(result, "cannot start", "POSTD_LOG_LEVEL", "'loud'")


@pytest.mark.parametrize("package", SERVICES)
def test_missing_required_variables(package: str) -> None:
    result = start(package, {})
    assert_one_clear_line(result, "cannot start", "DATABASE_URL is required")


@pytest.mark.parametrize("package", SERVICES)
def test_unreachable_database(package: str, identity_dir: Path, infra) -> None:
    service = package.removeprefix("postd_").replace("_", "-")
    result = start(
        package,
        {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postd",
            "KAFKA_BOOTSTRAP": infra.bootstrap,
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / f"{service}.key"),
            "POSTD_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "POSTD_GATEWAY_PORT": str(free_port()),
        },
    )
    assert_one_clear_line(result, "cannot start", "database")
