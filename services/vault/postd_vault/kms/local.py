"""The local KMS: a versioned KEK keyring in a JSON file or an environment variable.

For development and tests only (a production vault uses a cloud KMS; config
refuses ``local`` there unless a keyring is provided explicitly). The file holds
every version's 256-bit key, base64, with its state; it is written atomically
(temporary file, fsync, rename) under an exclusive lock with mode 0600, and a
keyring readable by group or others is refused. A keyring given in
``POSTD_VAULT_KEYRING`` (base64 of the same JSON) is read-only: it cannot rotate,
disable or destroy.

A wrapped key is ``0x01 || nonce(12) || AES-256-GCM(kek, nonce, data_key, aad)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postd_vault.kms import (
    KeyVersionDisabled,
    KeyVersionNotFound,
    KeyVersionState,
    KeyVersionStateError,
    KmsKeyVersion,
    RotationUnsupported,
    UnwrapFailed,
)

FORMAT: Final = "postd-vault-keyring/1"
_BLOB_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12
_KEY_BYTES: Final = 32


class KeyringError(Exception):
    """The keyring is missing, unreadable, malformed or too widely readable."""


@dataclass(frozen=True)
class _Version:
    name: str
    key: bytes | None  # None once destroyed
    state: KeyVersionState
    created_at: datetime
    disabled_at: datetime | None = None


@dataclass(frozen=True)
class _Ring:
    primary: str
    versions: tuple[_Version, ...]

    def get(self, name: str) -> _Version | None:
        for version in self.versions:
            if version.name == name:
                return version
        return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "primary": self.primary,
                "versions": [
                    {
                        "name": v.name,
                        "key": base64.b64encode(v.key).decode() if v.key is not None else None,
                        "state": v.state.value,
                        "created_at": v.created_at.isoformat(),
                        "disabled_at": v.disabled_at.isoformat() if v.disabled_at else None,
                    }
                    for v in self.versions
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> _Ring:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise KeyringError(f"{where} is not a {FORMAT} keyring")
            versions = tuple(_parse_version(v) for v in doc["versions"])
            primary = str(doc["primary"])
        except KeyringError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            # The exception text could quote key material: name only its type.
            raise KeyringError(f"{where} is malformed ({type(exc).__name__})") from None
        ring = cls(primary, versions)
        current = ring.get(primary)
        if current is None or current.state is not KeyVersionState.ENABLED:
            raise KeyringError(f"{where}: primary version {primary!r} is missing or not enabled")
        if len({v.name for v in versions}) != len(versions):
            raise KeyringError(f"{where}: two versions share a name")
        return ring


def _parse_version(raw: dict[str, Any]) -> _Version:
    key = base64.b64decode(raw["key"], validate=True) if raw.get("key") else None
    if key is not None and len(key) != _KEY_BYTES:
        raise ValueError("key length")
    disabled = raw.get("disabled_at")
    return _Version(
        name=str(raw["name"]),
        key=key,
        state=KeyVersionState(raw["state"]),
        created_at=datetime.fromisoformat(raw["created_at"]),
        disabled_at=datetime.fromisoformat(disabled) if disabled else None,
    )


def new_keyring_json() -> str:
    """A fresh keyring with one enabled primary version ``v1``."""
    version = _Version("v1", secrets.token_bytes(_KEY_BYTES), KeyVersionState.ENABLED, _now())
    return _Ring("v1", (version,)).to_json()


def _now() -> datetime:
    return datetime.now(UTC)


class LocalKeyring:
    """The :class:`~postd_vault.kms.Kms` port over a local keyring.

    ``wrap``/``unwrap`` are in-process AES-GCM (microseconds, no I/O, so they run
    on the event loop); version management rewrites the file in a worker thread.
    """

    def __init__(self, ring: _Ring, path: Path | None) -> None:
        self._ring = ring
        self._path = path
        self._ciphers: dict[str, AESGCM] = {}

    @property
    def provider(self) -> str:
        return "local"

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_file(cls, path: Path, *, create_if_missing: bool) -> LocalKeyring:
        """Open the keyring at ``path``; create it (mode 0600) when missing and allowed.

        Raises KeyringError."""
        if not path.exists():
            if not create_if_missing:
                raise KeyringError(
                    f"vault keyring {path} does not exist; a production vault needs an "
                    "existing keyring (or POSTD_VAULT_KMS=gcp)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path):
                if not path.exists():
                    _write_atomically(path, new_keyring_json())
        return cls(_read_file(path), path)

    @classmethod
    def from_env_value(cls, value: str) -> LocalKeyring:
        """A read-only keyring from base64 JSON (``POSTD_VAULT_KEYRING``). Raises KeyringError."""
        try:
            text = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise KeyringError("POSTD_VAULT_KEYRING is not base64 of a keyring") from None
        return cls(_Ring.from_json(text, "POSTD_VAULT_KEYRING"), None)

    # ------------------------------------------------------------------ Kms

    async def wrap(self, data_key: bytes, aad: bytes, key_version: str) -> bytes:
        cipher = self._cipher(key_version)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _BLOB_VERSION + nonce + cipher.encrypt(nonce, data_key, aad)

    async def unwrap(self, wrapped: bytes, aad: bytes, key_version: str) -> bytes:
        cipher = self._cipher(key_version)
        if len(wrapped) < 1 + _NONCE_BYTES + 16 or wrapped[:1] != _BLOB_VERSION:
            raise UnwrapFailed("wrapped data key is malformed")
        nonce = wrapped[1 : 1 + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, wrapped[1 + _NONCE_BYTES :], aad)
        except InvalidTag:
            raise UnwrapFailed("wrapped data key failed authentication") from None

    async def create_version(self) -> KmsKeyVersion:
        def create(ring: _Ring) -> tuple[_Ring, str]:
            number = 1 + max(_number(v.name) for v in ring.versions)
            name = f"v{number}"
            key = secrets.token_bytes(_KEY_BYTES)
            version = _Version(name, key, KeyVersionState.ENABLED, _now())
            return _Ring(name, (*ring.versions, version)), name

        name = await self._update(create)
        return self._describe(name)

    async def list_versions(self) -> list[KmsKeyVersion]:
        if self._path is not None:
            self._ring = await asyncio.to_thread(_read_file, self._path)
        return [self._describe(v.name) for v in self._ring.versions]

    async def disable(self, key_version: str) -> KmsKeyVersion:
        def disable(ring: _Ring) -> tuple[_Ring, str]:
            current = _require(ring, key_version)
            if ring.primary == key_version:
                raise KeyVersionStateError(f"key version {key_version} is the primary")
            if current.state is KeyVersionState.ENABLED:
                current = replace(current, state=KeyVersionState.DISABLED, disabled_at=_now())
            return _swap(ring, current), key_version

        await self._update(disable)
        return self._describe(key_version)

    async def destroy(self, key_version: str) -> KmsKeyVersion:
        def destroy(ring: _Ring) -> tuple[_Ring, str]:
            current = _require(ring, key_version)
            if current.state is KeyVersionState.ENABLED:
                raise KeyVersionStateError(f"key version {key_version} must be disabled first")
            return _swap(ring, replace(current, key=None, state=KeyVersionState.DESTROYED)), (
                key_version
            )

        await self._update(destroy)
        return self._describe(key_version)

    async def close(self) -> None:
        self._ciphers.clear()

    # ------------------------------------------------------------------ internals

    def _cipher(self, key_version: str) -> AESGCM:
        cipher = self._ciphers.get(key_version)
        if cipher is not None:
            return cipher
        version = self._ring.get(key_version)
        if version is None and self._path is not None:
            # Another process (the admin CLI, a second replica) may have rotated.
            self._ring = _read_file(self._path)
            version = self._ring.get(key_version)
        if version is None:
            raise KeyVersionNotFound(f"key version {key_version!r} is not in the keyring")
        if version.state is not KeyVersionState.ENABLED or version.key is None:
            raise KeyVersionDisabled(f"key version {key_version} is {version.state.value}")
        cipher = AESGCM(version.key)
        self._ciphers[key_version] = cipher
        return cipher

    def _describe(self, name: str) -> KmsKeyVersion:
        version = _require(self._ring, name)
        return KmsKeyVersion(
            name=version.name,
            state=version.state,
            primary=self._ring.primary == version.name,
            created_at=version.created_at,
        )

    async def _update(self, change: Any) -> str:
        path = self._path
        if path is None:
            raise RotationUnsupported(
                "the keyring comes from POSTD_VAULT_KEYRING and is read-only; "
                "use a keyring file to manage versions"
            )

        def apply() -> tuple[_Ring, str]:
            with _locked(path):
                ring, name = change(_read_file(path))
                _write_atomically(path, ring.to_json())
                return ring, name

        ring, name = await asyncio.to_thread(apply)
        self._ring = ring
        self._ciphers.clear()
        return name


def _require(ring: _Ring, name: str) -> _Version:
    version = ring.get(name)
    if version is None:
        raise KeyVersionNotFound(f"key version {name!r} is not in the keyring")
    return version


def _swap(ring: _Ring, changed: _Version) -> _Ring:
    return _Ring(
        ring.primary, tuple(changed if v.name == changed.name else v for v in ring.versions)
    )


def _number(name: str) -> int:
    digits = name.lstrip("v")
    return int(digits) if digits.isdigit() else 0


def _read_file(path: Path) -> _Ring:
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise KeyringError(
                f"vault keyring {path} is readable by group or others "
                f"(mode {mode & 0o777:o}); run: chmod 600 {path}"
            )
        text = path.read_text()
    except OSError as exc:
        raise KeyringError(f"cannot read vault keyring {path}: {exc.strerror}") from None
    return _Ring.from_json(text, str(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on a sidecar file, so two processes never interleave writes."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
