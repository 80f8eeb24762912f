"""The KMS port: where key-encryption keys (KEKs) live and how data keys are wrapped.

The vault never holds a KEK. It hands a KMS a 256-bit data key plus associated
data (AAD) and gets back an opaque wrapped key; to use the data key again it hands
back the wrapped key with the same AAD. A KEK has versions: exactly one is primary
(new data keys are wrapped with it); older ones keep unwrapping until they are
disabled, after the rewrap job has moved every data key off them.

Providers:

* :mod:`postd_vault.kms.local` — a versioned keyring in a JSON file or an
  environment variable, for development and tests;
* :mod:`postd_vault.kms.gcp` — Google Cloud KMS through the ``google-cloud-kms``
  client.

Adding a provider (AWS KMS, HashiCorp Vault transit, ...) is one new module:

1. implement :class:`Kms` below — ``wrap``/``unwrap`` map to the provider's
   encrypt/decrypt with associated data (AWS KMS: ``Encrypt``/``Decrypt`` with an
   ``EncryptionContext`` built from the AAD bytes; Vault transit:
   ``encrypt``/``decrypt`` with ``context``/``associated_data`` and ``key_version``),
   versions map to the provider's key versions (AWS: one key per version, or
   aliases; transit: ``rotate``, ``min_decryption_version``);
2. translate the provider's failures into the errors below — never let a client
   library's exception (whose text may echo a request) escape;
3. add a branch to :func:`postd_vault.app.open_kms` and its settings to
   :mod:`postd_vault.config`;
4. run ``tests/integration/test_kms_providers.py`` against it by adding a case to
   its ``provider`` fixture: the same suite every provider passes.

Every method is a coroutine that never blocks the event loop: a provider whose
client is synchronous runs it in a worker thread. Each may raise
:class:`KmsUnavailable` (the KMS cannot be reached or answered with a transient
error: retry later) on top of what it lists.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


class KmsError(Exception):
    """Base of KMS failures. Messages never contain key material or plaintext."""


class KmsUnavailable(KmsError):
    """The KMS could not be reached or failed transiently; retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnwrapFailed(KmsError):
    """The wrapped key did not authenticate: tampered, or unwrapped with other AAD."""


class KeyVersionNotFound(KmsError):
    """No such key version in this KMS key."""


class KeyVersionDisabled(KmsError):
    """The key version exists but is disabled (or destroyed): it cannot wrap or unwrap."""


class KeyVersionStateError(KmsError):
    """The operation is not allowed in the version's state (e.g. disabling the primary)."""


class RotationUnsupported(KmsError):
    """This provider instance cannot create versions (e.g. a read-only keyring)."""


class KeyVersionState(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    DESTROYED = "destroyed"


@dataclass(frozen=True)
class KmsKeyVersion:
    """What a KMS says about one KEK version. ``name`` is the id the vault stores."""

    name: str
    state: KeyVersionState
    primary: bool
    created_at: datetime | None


@runtime_checkable
class Kms(Protocol):
    """A key-management service holding one versioned key-encryption key."""

    @property
    def provider(self) -> str:
        """Short provider name recorded with each key version ("local", "gcp_kms")."""
        ...

    async def wrap(self, data_key: bytes, aad: bytes, key_version: str) -> bytes:
        """Encrypt ``data_key`` under ``key_version`` with ``aad`` bound to it.

        Raises KeyVersionNotFound, KeyVersionDisabled, KmsUnavailable."""
        ...

    async def unwrap(self, wrapped: bytes, aad: bytes, key_version: str) -> bytes:
        """Recover a data key wrapped under ``key_version`` with the same ``aad``.

        Raises UnwrapFailed (tampered or other AAD), KeyVersionNotFound,
        KeyVersionDisabled, KmsUnavailable."""
        ...

    async def create_version(self) -> KmsKeyVersion:
        """Create a new version and make it primary; returns it.

        Raises RotationUnsupported, KmsUnavailable."""
        ...

    async def list_versions(self) -> list[KmsKeyVersion]:
        """Every version, oldest first, with which one is primary. Raises KmsUnavailable."""
        ...

    async def disable(self, key_version: str) -> KmsKeyVersion:
        """Disable a version so it neither wraps nor unwraps. Idempotent.

        Raises KeyVersionNotFound, KeyVersionStateError (it is the primary),
        RotationUnsupported (read-only keyring), KmsUnavailable."""
        ...

    async def destroy(self, key_version: str) -> KmsKeyVersion:
        """Destroy a disabled version's key material for good (GCP: schedules it).

        Raises KeyVersionNotFound, KeyVersionStateError (not disabled first),
        RotationUnsupported, KmsUnavailable."""
        ...

    async def close(self) -> None:
        """Release clients and threads. Never raises."""
        ...
