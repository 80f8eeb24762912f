"""Wiring: the vault's adapters, domain and servicer, built from settings and a runtime."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

import grpc

from postd.vault.v1 import vault_pb2_grpc
from postd_common import errors
from postd_common.bootstrap import BackgroundTask, Runtime, ServiceParts, ServiceSpec
from postd_common.logging import get_logger, register_secret
from postd_common.service import StartupError
from postd_vault.adapters.postgres import PostgresSecretStore
from postd_vault.config import Settings
from postd_vault.domain.cache import DataKeyCache
from postd_vault.domain.vault import Vault
from postd_vault.kms import Kms
from postd_vault.kms.local import KeyringError, LocalKeyring
from postd_vault.servicer import POLICY, SERVICE_NAME, VaultServicer, refusal_auditor

log = get_logger(__name__)

MIGRATIONS: Final = Path(__file__).parent / "migrations"
# The vault keeps no session state on pooled connections (its only advisory lock is
# transaction-scoped), so releases skip the session reset query: a Get is then one
# round trip to PostgreSQL instead of two.
SPEC: Final = ServiceSpec(
    name="vault", schema="vault", migrations=MIGRATIONS, pool_session_reset=False
)


def open_kms(settings: Settings) -> Kms:
    """The configured KMS provider. Raises StartupError for a missing or bad keyring."""
    if settings.kms == "gcp":
        from postd_vault.kms.gcp import GcpKms

        return GcpKms.connect(
            settings.gcp_key_name, settings.gcp_endpoint, timeout=settings.kms_timeout_seconds
        )
    try:
        if settings.keyring_env:
            register_secret(settings.keyring_env)
            return LocalKeyring.from_env_value(settings.keyring_env.reveal())
        return LocalKeyring.open_file(
            settings.keyring_file, create_if_missing=settings.create_missing_keyring
        )
    except KeyringError as exc:
        raise StartupError(str(exc)) from None


def make_vault(store: PostgresSecretStore, kms: Kms, settings: Settings) -> Vault:
    return Vault(
        store,
        kms,
        DataKeyCache(settings.dek_cache_seconds, settings.dek_cache_entries),
        rewrap_batch_size=settings.rewrap_batch_size,
    )


def key_sync_task(vault: Vault, every_seconds: float) -> BackgroundTask:
    """Re-read the KMS's versions now and then, so a rotation made elsewhere (another
    replica, the cloud console's rotation schedule) is followed."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_seconds)
            if stop.is_set():
                return
            try:
                await vault.sync_key_versions()
            except errors.DomainError as exc:
                log.warning("key version sync failed; will retry", error=exc.message)

    return run


async def build(runtime: Runtime, settings: Settings, *, schema: str = "vault") -> ServiceParts:
    kms = open_kms(settings)
    store = PostgresSecretStore(runtime.require_pool(), schema=schema)
    vault = make_vault(store, kms, settings)
    try:
        await vault.start()
    except errors.DomainError as exc:
        await kms.close()
        raise StartupError(f"vault cannot start: {exc.message}") from None
    servicer = VaultServicer(vault)

    def register(server: grpc.aio.Server) -> None:
        vault_pb2_grpc.add_VaultServiceServicer_to_server(servicer, server)

    log.info(
        "vault ready",
        kms=kms.provider,
        # Not "dek_…": the log redaction masks any key naming a data key.
        data_key_cache_seconds=settings.dek_cache_seconds,
        data_key_cache_entries=settings.dek_cache_entries,
    )
    return ServiceParts(
        register=[register],
        service_names=[SERVICE_NAME],
        policy=POLICY,
        tasks=[key_sync_task(vault, settings.key_sync_seconds)],
        on_close=[kms.close],
        on_refused=refusal_auditor(vault),
    )
