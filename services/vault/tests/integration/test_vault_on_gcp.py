"""The whole vault on the Cloud KMS provider (real client, REST stand-in): the same
envelope, rotation and failure behaviour as on the local keyring."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from postd_common import errors
from postd_common.secrets import Secret
from postd_common.telemetry import setup_tracing
from postd_vault.adapters.postgres import PostgresSecretStore
from postd_vault.domain.model import TokenBundle
from postd_vault.domain.vault import Vault
from postd_vault.kms.gcp import GcpKms

pytestmark = pytest.mark.integration


async def test_round_trip_rotation_and_disable_on_cloud_kms(
    make_vault: Callable[..., Awaitable[Vault]],
    gcp_kms: GcpKms,
    gcp_standin: tuple[Any, str],
    tenant: str,
    store: PostgresSecretStore,
) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("vault-tests", None, extra_processors=[SimpleSpanProcessor(exporter)])
    standin, _ = gcp_standin
    vault = await make_vault(gcp_kms, cache_seconds=60)
    v1 = f"{gcp_kms._key}/cryptoKeyVersions/1"
    for n in range(12):
        await vault.store_token_bundle(
            "connectors",
            tenant,
            f"c{n}",
            TokenBundle(access_token=Secret(f"gcp-at-{n}"), refresh_token=Secret(f"gcp-rt-{n}")),
        )
    decrypts = standin.calls["decrypt"]
    got, info = await vault.get_token_bundle("connectors", tenant, "c3")
    assert (got.access_token.reveal(), info.key_version) == ("gcp-at-3", v1)
    assert standin.calls["decrypt"] == decrypts  # the data key was cached at store time

    new, previous = await vault.rotate("operator", "gcp rotation")
    assert (previous.key_version, new.key_version) == (v1, v1[:-1] + "2")
    assert standin.keys[gcp_kms._key].primary == 2  # the KMS follows: updatePrimaryVersion
    result = await vault.run_rewrap("operator", batch_size=5)
    assert (result.rewrapped, result.remaining, result.batches) == (13, 0, 3)
    await vault.disable_key_version("operator", "1", "rotated")
    assert standin.keys[gcp_kms._key].versions[1].state == 2  # DISABLED in the KMS
    for n in range(12):
        got, info = await vault.get_token_bundle("connectors", tenant, f"c{n}")
        assert got.access_token.reveal() == f"gcp-at-{n}"
        assert info.key_version == new.key_version

    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"kms.encrypt", "kms.decrypt", "kms.create_version", "kms.disable"} <= names
    text = repr([dict(s.attributes or {}) for s in spans])
    assert "gcp-at-" not in text
    assert "gcp-rt-" not in text


async def test_a_relabelled_row_fails_on_cloud_kms_too(
    make_vault: Callable[..., Awaitable[Vault]],
    gcp_kms: GcpKms,
    tenant: str,
    pg_pool: asyncpg.Pool,
    schema: str,
) -> None:
    vault = await make_vault(gcp_kms)
    await vault.store_token_bundle("connectors", tenant, "c", TokenBundle(Secret("x")))
    await vault.rotate("operator", "")
    # Cloud KMS picks the version from the ciphertext, but the AAD names v1: no match.
    await pg_pool.execute(
        f"UPDATE {schema}.secrets SET key_version = $2 WHERE tenant_id = $1",
        tenant,
        f"{gcp_kms._key}/cryptoKeyVersions/2",
    )
    with pytest.raises(errors.DataLoss):
        await vault.get_token_bundle("connectors", tenant, "c")


async def test_a_cloud_kms_outage_is_unavailable_and_writes_nothing(
    make_vault: Callable[..., Awaitable[Vault]],
    gcp_kms: GcpKms,
    gcp_standin: tuple[Any, str],
    tenant: str,
    store: PostgresSecretStore,
) -> None:
    standin, _ = gcp_standin
    vault = await make_vault(gcp_kms)
    standin.down = True
    try:
        with pytest.raises(errors.Unavailable) as down:
            await vault.store_token_bundle("connectors", tenant, "c", TokenBundle(Secret("x")))
    finally:
        standin.down = False
    assert down.value.retry_after is not None
    assert down.value.retry_after > 0
    assert sum((await store.count_by_key_version()).values()) == 1  # the fingerprint key only
    with pytest.raises(errors.NotFound):
        await vault.get_token_bundle("connectors", tenant, "c")
