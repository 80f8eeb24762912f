"""The vault's settings: defaults, the KMS choice and what each requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from postd_common.config import ConfigError
from postd_vault.config import load_admin_settings, load_settings

BASE = {"DATABASE_URL": "postgresql://db/postd"}
KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/k"


def test_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.kms == "local"
    assert settings.keyring_file == Path(".postd/vault-keyring.json")
    assert not settings.keyring_env
    assert settings.dek_cache_seconds == 60.0
    assert settings.create_missing_keyring  # development by default
    assert settings.common.grpc_listen == "127.0.0.1:50051"


def test_production_never_creates_a_keyring() -> None:
    assert not load_settings({**BASE, "POSTD_ENV": "production"}).create_missing_keyring


def test_gcp_needs_a_key_name_that_looks_like_one() -> None:
    with pytest.raises(ConfigError, match="POSTD_VAULT_GCP_KEY_NAME is required"):
        load_settings({**BASE, "POSTD_VAULT_KMS": "gcp"})
    with pytest.raises(ConfigError, match="must look like"):
        load_settings({**BASE, "POSTD_VAULT_KMS": "gcp", "POSTD_VAULT_GCP_KEY_NAME": "k"})
    settings = load_settings(
        {
            **BASE,
            "POSTD_VAULT_KMS": "gcp",
            "POSTD_VAULT_GCP_KEY_NAME": KEY,
            "POSTD_VAULT_GCP_ENDPOINT": "http://127.0.0.1:9999",
        }
    )
    assert (settings.gcp_key_name, settings.gcp_endpoint) == (KEY, "http://127.0.0.1:9999")


def test_the_deployment_name_of_the_key_is_accepted() -> None:
    settings = load_settings({**BASE, "POSTD_VAULT_KMS": "gcp", "POSTD_VAULT_KMS_KEY": KEY})
    assert settings.gcp_key_name == KEY


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as bad:
        load_settings(
            {
                "POSTD_VAULT_KMS": "aws",
                "POSTD_VAULT_DEK_CACHE_SECONDS": "-1",
                "POSTD_VAULT_REWRAP_BATCH_SIZE": "zero",
            }
        )
    text = str(bad.value)
    for name in (
        "DATABASE_URL",
        "POSTD_VAULT_KMS",
        "POSTD_VAULT_DEK_CACHE_SECONDS",
        "POSTD_VAULT_REWRAP_BATCH_SIZE",
    ):
        assert name in text


def test_the_cache_can_be_turned_off() -> None:
    assert load_settings({**BASE, "POSTD_VAULT_DEK_CACHE_SECONDS": "0"}).dek_cache_seconds == 0


def test_admin_settings() -> None:
    admin = load_admin_settings({"POSTD_VAULT_ADDR": "10.0.0.5:50051"})
    assert admin.vault_addr == "10.0.0.5:50051"
    assert admin.operator_key_file == Path(".postd/identity/operator.key")
