"""Envelope encryption's building blocks: AAD encoding, sealing, and the bundle format."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from postd_common.secrets import Secret
from postd_vault.domain.envelope import (
    PayloadAuthenticationFailed,
    data_key_aad,
    new_data_key,
    open_sealed,
    payload_aad,
    seal,
)
from postd_vault.domain.model import Scope, SecretAddress, TokenBundle

BASE = SecretAddress("tenant-a", Scope.TOKEN_BUNDLE, "oauth_token_bundle", "conn-1")


@pytest.mark.parametrize(
    "other",
    [
        SecretAddress("tenant-b", Scope.TOKEN_BUNDLE, "oauth_token_bundle", "conn-1"),
        SecretAddress("tenant-a", Scope.TOKEN_BUNDLE, "oauth_token_bundle", "conn-2"),
        SecretAddress("tenant-a", Scope.PLATFORM_SECRET, "oauth_token_bundle", "conn-1", "n"),
        SecretAddress("tenant-a", Scope.TOKEN_BUNDLE, "api_key", "conn-1"),
    ],
)
def test_every_owner_field_changes_the_aad(other: SecretAddress) -> None:
    assert data_key_aad(other, "v1") != data_key_aad(BASE, "v1")
    assert payload_aad(other, 1) != payload_aad(BASE, 1)


def test_versions_are_bound_too() -> None:
    assert data_key_aad(BASE, "v1") != data_key_aad(BASE, "v2")
    assert payload_aad(BASE, 1) != payload_aad(BASE, 2)
    # The two layers never share AAD, so one's ciphertext cannot stand in for the other's.
    assert data_key_aad(BASE, "1") != payload_aad(BASE, 1)


def test_the_encoding_is_unambiguous() -> None:
    # Field boundaries are length-prefixed: moving characters between fields changes it.
    tenants = ["ab", "a", ""]
    connections = ["c", "bc", "abc"]
    encoded = {
        data_key_aad(SecretAddress(t, Scope.TOKEN_BUNDLE, "k", c), "v1")
        for t, c in itertools.product(tenants, connections)
    }
    assert len(encoded) == len(tenants) * len(connections)


def test_seal_then_open() -> None:
    key = new_data_key()
    sealed = seal(key, b"plaintext", b"aad")
    assert b"plaintext" not in sealed
    assert open_sealed(key, sealed, b"aad") == b"plaintext"
    assert seal(key, b"plaintext", b"aad")[:12] != sealed[:12]  # a fresh nonce each time


@pytest.mark.parametrize("change", ["aad", "key", "byte", "short"])
def test_open_refuses_anything_changed(change: str) -> None:
    key = new_data_key()
    sealed = bytearray(seal(key, b"plaintext", b"aad"))
    aad = b"aad"
    if change == "aad":
        aad = b"aae"
    elif change == "key":
        key = new_data_key()
    elif change == "byte":
        sealed[15] ^= 0x80
    else:
        sealed = sealed[:20]
    with pytest.raises(PayloadAuthenticationFailed):
        open_sealed(key, bytes(sealed), aad)


def test_bundle_plaintext_round_trip_and_reprs_hide_secrets() -> None:
    moment = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    bundle = TokenBundle(
        access_token=Secret("at-secret"),
        refresh_token=Secret("rt-secret"),
        expires_at=moment,
        scopes=("a", "b"),
        extra={"id_token": Secret("idt-secret")},
        issued_at=moment,
    )
    again = TokenBundle.from_plaintext(bundle.to_plaintext())
    assert again.to_plaintext() == bundle.to_plaintext()
    assert again.expires_at == moment
    assert again.extra["id_token"].reveal() == "idt-secret"
    for text in (repr(bundle), str(bundle)):
        assert "secret" not in text.replace("Secret(", "")


def test_a_non_bundle_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="not a token bundle") as refused:
        TokenBundle.from_plaintext(b'{"v": 1, "access_token": "leaky"}')
    assert "leaky" not in str(refused.value)
    with pytest.raises(ValueError, match="unknown bundle format"):
        TokenBundle.from_plaintext(b'{"v": 9}')


def test_timestamps_are_exact() -> None:
    from datetime import timedelta, timezone

    from postd_vault.servicer import _ts

    for moment in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2031, 5, 6, 9, 8, 9, 5, tzinfo=timezone(timedelta(hours=2))),
    ):
        stamp = _ts(moment)
        assert stamp is not None
        assert stamp.ToDatetime(tzinfo=UTC) == moment
