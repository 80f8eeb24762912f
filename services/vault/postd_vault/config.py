"""The vault's settings: the only module that reads the environment.

=====================================  ===============================================
``POSTD_VAULT_KMS``                    ``local`` (default) or ``gcp``
``POSTD_VAULT_KEYRING_FILE``           local keyring path (``.postd/vault-keyring.json``);
                                       created on first start in development/test, a
                                       start-up error when missing elsewhere
``POSTD_VAULT_KEYRING``                a read-only local keyring, base64 of its JSON
                                       (takes precedence over the file)
``POSTD_VAULT_GCP_KEY_NAME``           ``projects/P/locations/L/keyRings/R/cryptoKeys/K``
                                       (``POSTD_VAULT_KMS_KEY``, as deploy/k8s sets it,
                                       is accepted too)
``POSTD_VAULT_GCP_ENDPOINT``           Cloud KMS endpoint; ``http://...`` = a local stand-in
``POSTD_VAULT_KMS_TIMEOUT_SECONDS``    deadline of one KMS call, retries included (5)
``POSTD_VAULT_DEK_CACHE_SECONDS``      data-key cache TTL; ``0`` turns the cache off (60)
``POSTD_VAULT_DEK_CACHE_ENTRIES``      data-key cache bound (10000)
``POSTD_VAULT_REWRAP_BATCH_SIZE``      default rewrap batch (500)
``POSTD_VAULT_KEY_SYNC_SECONDS``       how often key versions are re-read from the KMS (60)
=====================================  ===============================================

Plus the common settings (``DATABASE_URL``, ``POSTD_GRPC_LISTEN``, identity files, ...;
see :mod:`postd_common.settings`). The vault needs no Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from postd_common.config import EnvReader
from postd_common.secrets import Secret
from postd_common.settings import CommonSettings, load_common, service_addr

SERVICE: Final = "vault"
DEFAULT_KEYRING: Final = Path(".postd/vault-keyring.json")
_GCP_KEY = (
    "projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}"  # for messages
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    kms: str
    keyring_file: Path
    keyring_env: Secret
    gcp_key_name: str
    gcp_endpoint: str | None
    kms_timeout_seconds: float
    dek_cache_seconds: float
    dek_cache_entries: int
    rewrap_batch_size: int
    key_sync_seconds: float

    @property
    def create_missing_keyring(self) -> bool:
        """Only development and test environments may generate a keyring."""
        return self.common.is_development


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read and check every setting; raises ConfigError naming each problem."""
    env = EnvReader(environ)
    common = load_common(env, SERVICE, needs_kafka=False)
    kms = env.choice("POSTD_VAULT_KMS", "local", ("local", "gcp"))
    alias = env.optional("POSTD_VAULT_KMS_KEY")
    gcp_key = env.text("POSTD_VAULT_GCP_KEY_NAME", alias, required=kms == "gcp")
    if gcp_key and not _looks_like_key(gcp_key):
        env.problems.append(f"POSTD_VAULT_GCP_KEY_NAME must look like {_GCP_KEY}")
    settings = Settings(
        common=common,
        kms=kms,
        keyring_file=env.path("POSTD_VAULT_KEYRING_FILE", DEFAULT_KEYRING),
        keyring_env=env.secret("POSTD_VAULT_KEYRING"),
        gcp_key_name=gcp_key,
        gcp_endpoint=env.optional("POSTD_VAULT_GCP_ENDPOINT"),
        kms_timeout_seconds=env.number("POSTD_VAULT_KMS_TIMEOUT_SECONDS", 5.0, minimum=0.1),
        dek_cache_seconds=env.number("POSTD_VAULT_DEK_CACHE_SECONDS", 60.0, minimum=0.0),
        dek_cache_entries=env.integer("POSTD_VAULT_DEK_CACHE_ENTRIES", 10_000, minimum=0),
        rewrap_batch_size=env.integer("POSTD_VAULT_REWRAP_BATCH_SIZE", 500, minimum=1),
        key_sync_seconds=env.number("POSTD_VAULT_KEY_SYNC_SECONDS", 60.0, minimum=1.0),
    )
    env.check()
    return settings


def _looks_like_key(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 8
        and parts[0::2] == ["projects", "locations", "keyRings", "cryptoKeys"]
        and all(parts[1::2])
    )


@dataclass(frozen=True)
class AdminSettings:
    """What the admin CLI needs: where the vault is and the operator's signing key."""

    vault_addr: str
    operator_key_file: Path
    timeout_seconds: float


def load_admin_settings(environ: Mapping[str, str]) -> AdminSettings:
    env = EnvReader(environ)
    settings = AdminSettings(
        vault_addr=service_addr(env, SERVICE),
        operator_key_file=env.path("POSTD_OPERATOR_KEY_FILE", Path(".postd/identity/operator.key")),
        timeout_seconds=env.number("POSTD_ADMIN_TIMEOUT_SECONDS", 600.0, minimum=1.0),
    )
    env.check()
    return settings
