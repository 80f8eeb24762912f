"""One suite for every KMS provider: what the vault relies on from a KMS.

``local`` runs the keyring file; ``gcp`` runs the real ``google-cloud-kms`` client
(REST transport) against the Cloud KMS stand-in over HTTP. A new provider (AWS KMS,
Vault transit) joins by adding a case to the ``provider`` fixture.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postd_vault.kms import (
    KeyVersionDisabled,
    KeyVersionNotFound,
    KeyVersionState,
    KeyVersionStateError,
    Kms,
    KmsUnavailable,
    UnwrapFailed,
)
from postd_vault.kms.gcp import GcpKms
from postd_vault.kms.local import LocalKeyring

pytestmark = pytest.mark.integration


@dataclass
class Provider:
    kms: Kms
    standin: Any = None  # the Cloud KMS stand-in, for fault injection

    async def primary(self) -> str:
        return next(v.name for v in await self.kms.list_versions() if v.primary)


@pytest.fixture(params=["local", "gcp"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Provider:
    # A plain fixture: it picks among async ones, which pytest-asyncio sets up itself.
    if request.param == "local":
        return Provider(LocalKeyring.open_file(tmp_path / "keyring.json", create_if_missing=True))
    standin, _ = request.getfixturevalue("gcp_standin")
    return Provider(request.getfixturevalue("gcp_kms"), standin)


def aad(*parts: str) -> bytes:
    return "|".join(parts).encode()


async def test_wrap_then_unwrap_returns_the_data_key(provider: Provider) -> None:
    version = await provider.primary()
    data_key = secrets.token_bytes(32)
    wrapped = await provider.kms.wrap(data_key, aad("t1", "c1", version), version)
    assert data_key not in wrapped
    assert await provider.kms.unwrap(wrapped, aad("t1", "c1", version), version) == data_key
    # A fresh nonce per wrap: the same key wraps differently each time.
    assert await provider.kms.wrap(data_key, aad("t1", "c1", version), version) != wrapped


async def test_other_associated_data_does_not_unwrap(provider: Provider) -> None:
    version = await provider.primary()
    wrapped = await provider.kms.wrap(secrets.token_bytes(32), aad("t1", "c1", version), version)
    with pytest.raises(UnwrapFailed):
        await provider.kms.unwrap(wrapped, aad("t2", "c1", version), version)
    with pytest.raises(UnwrapFailed):
        await provider.kms.unwrap(wrapped, aad("t1", "c2", version), version)


async def test_a_tampered_wrapped_key_does_not_unwrap(provider: Provider) -> None:
    version = await provider.primary()
    wrapped = bytearray(await provider.kms.wrap(secrets.token_bytes(32), aad("x"), version))
    wrapped[-1] ^= 0x01
    with pytest.raises(UnwrapFailed):
        await provider.kms.unwrap(bytes(wrapped), aad("x"), version)
    with pytest.raises(UnwrapFailed):
        await provider.kms.unwrap(b"\x01" + b"\x00" * 40, aad("x"), version)


async def test_unknown_versions_are_not_found(provider: Provider) -> None:
    version = await provider.primary()
    unknown = version.rsplit("/", 1)[0] + "/999" if "/" in version else "v999"
    with pytest.raises(KeyVersionNotFound):
        await provider.kms.wrap(secrets.token_bytes(32), aad("x"), unknown)


async def test_a_new_version_becomes_primary_and_old_keys_still_unwrap(
    provider: Provider,
) -> None:
    before = await provider.kms.list_versions()
    assert [v.primary for v in before].count(True) == 1
    old = await provider.primary()
    data_key = secrets.token_bytes(32)
    wrapped_old = await provider.kms.wrap(data_key, aad("k", old), old)

    created = await provider.kms.create_version()
    assert created.primary
    assert created.state is KeyVersionState.ENABLED
    after = await provider.kms.list_versions()
    assert [v.name for v in after] == [v.name for v in before] + [created.name]
    assert await provider.primary() == created.name
    assert not next(v for v in after if v.name == old).primary

    assert await provider.kms.unwrap(wrapped_old, aad("k", old), old) == data_key
    wrapped_new = await provider.kms.wrap(data_key, aad("k", created.name), created.name)
    assert await provider.kms.unwrap(wrapped_new, aad("k", created.name), created.name) == (
        data_key
    )


async def test_disabled_versions_neither_wrap_nor_unwrap(provider: Provider) -> None:
    old = await provider.primary()
    wrapped = await provider.kms.wrap(secrets.token_bytes(32), aad("d", old), old)
    with pytest.raises(KeyVersionStateError):
        await provider.kms.disable(old)  # the primary cannot be disabled
    await provider.kms.create_version()

    disabled = await provider.kms.disable(old)
    assert disabled.state is KeyVersionState.DISABLED
    assert (await provider.kms.disable(old)).state is KeyVersionState.DISABLED  # idempotent
    listed = {v.name: v.state for v in await provider.kms.list_versions()}
    assert listed[old] is KeyVersionState.DISABLED
    with pytest.raises(KeyVersionDisabled):
        await provider.kms.unwrap(wrapped, aad("d", old), old)
    with pytest.raises(KeyVersionDisabled):
        await provider.kms.wrap(secrets.token_bytes(32), aad("d", old), old)


async def test_destroy_needs_a_disabled_version_and_is_final(provider: Provider) -> None:
    old = await provider.primary()
    wrapped = await provider.kms.wrap(secrets.token_bytes(32), aad("z", old), old)
    await provider.kms.create_version()
    with pytest.raises(KeyVersionStateError):
        await provider.kms.destroy(old)  # still enabled
    await provider.kms.disable(old)
    destroyed = await provider.kms.destroy(old)
    assert destroyed.state is KeyVersionState.DESTROYED
    with pytest.raises(KeyVersionDisabled):
        await provider.kms.unwrap(wrapped, aad("z", old), old)


async def test_an_unreachable_kms_is_unavailable_with_retry_advice(provider: Provider) -> None:
    if provider.standin is None:
        pytest.skip("the local keyring is in-process: it cannot be unreachable")
    version = await provider.primary()
    wrapped = await provider.kms.wrap(secrets.token_bytes(32), aad("u"), version)
    provider.standin.down = True
    with pytest.raises(KmsUnavailable) as down:
        await provider.kms.unwrap(wrapped, aad("u"), version)
    assert down.value.retry_after > 0
    with pytest.raises(KmsUnavailable):
        await provider.kms.wrap(secrets.token_bytes(32), aad("u"), version)
    provider.standin.down = False
    # Transient failures inside the deadline are retried by the client.
    provider.standin.fail_next(2)
    assert len(await provider.kms.unwrap(wrapped, aad("u"), version)) == 32


async def test_gcp_requests_carry_checksums_the_standin_verifies(
    gcp_kms: GcpKms, gcp_standin: tuple[Any, str]
) -> None:
    standin, _ = gcp_standin
    version = next(v.name for v in await gcp_kms.list_versions() if v.primary)
    data_key = secrets.token_bytes(32)
    wrapped = await gcp_kms.wrap(data_key, aad("crc"), version)
    assert await gcp_kms.unwrap(wrapped, aad("crc"), version) == data_key
    assert standin.calls["encrypt"] == 1
    assert standin.calls["decrypt"] == 1
    # The pager followed nextPageToken across the stand-in's two-per-page listing.
    for _ in range(3):
        await gcp_kms.create_version()
    assert len(await gcp_kms.list_versions()) == 4
