"""Envelope encryption: a fresh AES-256-GCM data key per write, wrapped by a KEK.

Two layers, each with its own associated data (AAD):

* the **payload** (the sealed token bundle or secret value) is encrypted under the
  data key with a random 96-bit nonce; its AAD binds tenant, scope, connection,
  name, kind and the secret's write version;
* the **data key** is wrapped by the KMS under a KEK version; its AAD binds the same
  owner fields plus that KEK version.

So a row copied to another tenant or connection fails at both layers, a wrapped key
relabelled with another KEK version fails at the KMS, and rewrapping (which changes
only the outer layer) never touches the payload. The AAD encoding is
length-prefixed, so no two field tuples encode to the same bytes.
"""

from __future__ import annotations

import secrets
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postd_vault.domain.model import SecretAddress

DATA_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_DOMAIN: Final = b"postd.vault/1"
_LENGTH: Final = struct.Struct(">I")


class PayloadAuthenticationFailed(Exception):
    """The sealed payload did not authenticate under its data key and AAD."""


def new_data_key() -> bytes:
    return secrets.token_bytes(DATA_KEY_BYTES)


def _encode(purpose: bytes, fields: tuple[str, ...]) -> bytes:
    parts = [_DOMAIN]
    for part in (purpose, *(f.encode() for f in fields)):
        parts.append(_LENGTH.pack(len(part)))
        parts.append(part)
    return b"".join(parts)


def _owner(address: SecretAddress) -> tuple[str, ...]:
    return (
        address.tenant_id,
        address.scope.value,
        address.connection_id,
        address.name,
        address.kind,
    )


def data_key_aad(address: SecretAddress, key_version: str) -> bytes:
    """AAD for wrapping a data key under ``key_version``."""
    return _encode(b"data-key", (*_owner(address), key_version))


def payload_aad(address: SecretAddress, version: int) -> bytes:
    """AAD for the payload of write ``version`` of the secret at ``address``."""
    return _encode(b"payload", (*_owner(address), str(version)))


def seal(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``nonce || AES-256-GCM(data_key, nonce, plaintext, aad)``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def open_sealed(data_key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Reverse :func:`seal`; raises :class:`PayloadAuthenticationFailed`."""
    if len(sealed) < NONCE_BYTES + 16 or len(data_key) != DATA_KEY_BYTES:
        raise PayloadAuthenticationFailed("sealed payload is malformed")
    try:
        return AESGCM(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise PayloadAuthenticationFailed("sealed payload failed authentication") from None
