"""What the devstack hands its services: addresses follow POSTD_PORT_OFFSET."""

from __future__ import annotations

from pathlib import Path

from postd_common.devstack.__main__ import Stack
from postd_common.devstack.config import load


def test_google_keys_come_from_the_sandbox_on_its_shifted_port(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    env = Stack(load(tmp_path, {"POSTD_PORT_OFFSET": "1000"})).child_env("dsn", "bootstrap")
    assert env["POSTD_SANDBOX_URL"] == "http://127.0.0.1:9090"
    assert env["POSTD_GOOGLE_JWKS_URL"] == "http://127.0.0.1:9090/google/oauth2/v3/certs"


def test_real_google_keeps_its_own_keys(tmp_path: Path) -> None:
    given = {"POSTD_GOOGLE_CLIENT_ID": "real-id", "POSTD_GOOGLE_CLIENT_SECRET": "real-secret"}
    env = Stack(load(tmp_path, given)).child_env("dsn", "bootstrap")
    assert "google" not in env["POSTD_SANDBOX_PLATFORMS"].split(",")
    assert "POSTD_GOOGLE_JWKS_URL" not in env
    chosen = {"POSTD_GOOGLE_JWKS_URL": "https://keys.example/certs"}
    env = Stack(load(tmp_path, chosen)).child_env("dsn", "bootstrap")
    assert env["POSTD_GOOGLE_JWKS_URL"] == "https://keys.example/certs"
