"""Google Cloud KMS provider: one symmetric CryptoKey, its CryptoKeyVersions as KEK versions.

Uses the real ``google-cloud-kms`` client. Its calls block, so they run in a
small thread pool of their own; each has a deadline and a bounded retry on
transient errors, after which :class:`~postd_vault.kms.KmsUnavailable` is raised.

* wrap   = ``encrypt`` on the CryptoKeyVersion itself (so the vault, not the KMS,
  decides which version wraps; the response's ``name`` is checked);
* unwrap = ``decrypt`` on the CryptoKey (the ciphertext names its version; the AAD
  the vault builds also carries the version, so a row claiming another version
  fails);
* create_version = ``createCryptoKeyVersion`` then ``updatePrimaryVersion``;
* disable = ``patch`` of the version's state (``updateMask=state``);
* destroy = ``destroy`` (Cloud KMS schedules destruction).

Every request and response carries CRC32C checksums, as Google advises for
encrypt/decrypt; a mismatch counts as a transient failure.

``POSTD_VAULT_GCP_ENDPOINT`` set to an ``http://`` address (a local stand-in of the
KMS REST API) makes the client use the REST transport with anonymous credentials;
otherwise it uses Application Default Credentials and the default transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Final, TypeVar

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from opentelemetry import trace

from postd_vault.kms import (
    KeyVersionDisabled,
    KeyVersionNotFound,
    KeyVersionState,
    KeyVersionStateError,
    KmsError,
    KmsKeyVersion,
    KmsUnavailable,
    UnwrapFailed,
)

T = TypeVar("T")
tracer = trace.get_tracer("postd_vault.kms.gcp")

# CryptoKeyVersion.CryptoKeyVersionState values (google.cloud.kms_v1).
_ENABLED: Final = 1
_DISABLED: Final = 2
_PENDING_GENERATION: Final = 5

# Failures worth retrying within one call's deadline.
_RETRYABLE: Final = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.BadGateway,
    gexc.GatewayTimeout,
)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Cloud KMS checksums use. Inputs here are < 100 bytes."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


class GcpKms:
    """The :class:`~postd_vault.kms.Kms` port over one Cloud KMS CryptoKey."""

    def __init__(
        self,
        client: Any,
        key_name: str,
        *,
        timeout: float = 5.0,
        threads: int = 16,
    ) -> None:
        self._client = client
        self._key = key_name
        self._timeout = timeout
        self._retry = gretry.Retry(
            predicate=gretry.if_exception_type(*_RETRYABLE),
            initial=0.05,
            maximum=1.0,
            multiplier=2.0,
            timeout=timeout,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gcp-kms")

    @classmethod
    def connect(cls, key_name: str, endpoint: str | None, *, timeout: float = 5.0) -> GcpKms:
        """Build the client (no network I/O happens here)."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import kms

        if endpoint and endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            client = kms.KeyManagementServiceClient(
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                transport="rest",
                client_options=ClientOptions(api_endpoint=endpoint),
            )
        elif endpoint:
            client = kms.KeyManagementServiceClient(
                client_options=ClientOptions(api_endpoint=endpoint)
            )
        else:
            client = kms.KeyManagementServiceClient()
        return cls(client, key_name, timeout=timeout)

    @property
    def provider(self) -> str:
        return "gcp_kms"

    # ------------------------------------------------------------------ Kms

    async def wrap(self, data_key: bytes, aad: bytes, key_version: str) -> bytes:
        self._check_version_name(key_version)
        response = await self._call(
            "encrypt",
            self._client.encrypt,
            {
                "name": key_version,
                "plaintext": data_key,
                "additional_authenticated_data": aad,
                "plaintext_crc32c": crc32c(data_key),
                "additional_authenticated_data_crc32c": crc32c(aad),
            },
            key_version,
        )
        if not (
            response.verified_plaintext_crc32c
            and response.verified_additional_authenticated_data_crc32c
            and response.ciphertext_crc32c == crc32c(response.ciphertext)
        ):
            raise KmsUnavailable("Cloud KMS encrypt failed its integrity check in transit")
        if response.name != key_version:
            raise KmsError(f"Cloud KMS encrypted with {response.name}, not {key_version}")
        return bytes(response.ciphertext)

    async def unwrap(self, wrapped: bytes, aad: bytes, key_version: str) -> bytes:
        self._check_version_name(key_version)
        response = await self._call(
            "decrypt",
            self._client.decrypt,
            {
                "name": self._key,
                "ciphertext": wrapped,
                "additional_authenticated_data": aad,
                "ciphertext_crc32c": crc32c(wrapped),
                "additional_authenticated_data_crc32c": crc32c(aad),
            },
            key_version,
        )
        plaintext = bytes(response.plaintext)
        if response.plaintext_crc32c != crc32c(plaintext):
            raise KmsUnavailable("Cloud KMS decrypt failed its integrity check in transit")
        return plaintext

    async def create_version(self) -> KmsKeyVersion:
        created = await self._call(
            "create_version",
            self._client.create_crypto_key_version,
            {"parent": self._key, "crypto_key_version": {}},
            None,
        )
        name = str(created.name)
        deadline = time.monotonic() + self._timeout
        while int(created.state) == _PENDING_GENERATION and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # HSM versions are generated asynchronously
            created = await self._call(
                "get_version", self._client.get_crypto_key_version, {"name": name}, name
            )
        if int(created.state) != _ENABLED:
            raise KmsUnavailable(f"new key version {name} is not enabled yet", retry_after=5.0)
        await self._call(
            "set_primary",
            self._client.update_crypto_key_primary_version,
            {"name": self._key, "crypto_key_version_id": name.rsplit("/", 1)[-1]},
            name,
        )
        return _describe(created, primary=name)

    async def list_versions(self) -> list[KmsKeyVersion]:
        key = await self._call("get_key", self._client.get_crypto_key, {"name": self._key}, None)
        primary = str(key.primary.name) if key.primary else ""

        def collect() -> list[Any]:
            return list(
                self._client.list_crypto_key_versions(
                    request={"parent": self._key}, retry=self._retry, timeout=self._timeout
                )
            )

        versions = await self._run("list_versions", collect, None)
        described = [
            _describe(v, primary=primary)
            for v in versions
            if int(v.state) in (_ENABLED, _DISABLED) or _state(v) is KeyVersionState.DESTROYED
        ]
        return sorted(described, key=lambda v: _version_number(v.name))

    async def disable(self, key_version: str) -> KmsKeyVersion:
        self._check_version_name(key_version)
        key = await self._call("get_key", self._client.get_crypto_key, {"name": self._key}, None)
        if key.primary and key.primary.name == key_version:
            raise KeyVersionStateError(f"key version {key_version} is the primary")
        current = await self._call(
            "get_version", self._client.get_crypto_key_version, {"name": key_version}, key_version
        )
        if int(current.state) != _ENABLED:
            return _describe(current, primary="")
        updated = await self._call(
            "disable",
            self._client.update_crypto_key_version,
            {
                "crypto_key_version": {"name": key_version, "state": _DISABLED},
                "update_mask": {"paths": ["state"]},
            },
            key_version,
        )
        return _describe(updated, primary="")

    async def destroy(self, key_version: str) -> KmsKeyVersion:
        self._check_version_name(key_version)
        current = await self._call(
            "get_version", self._client.get_crypto_key_version, {"name": key_version}, key_version
        )
        if int(current.state) == _ENABLED:
            raise KeyVersionStateError(f"key version {key_version} must be disabled first")
        if _state(current) is KeyVersionState.DESTROYED:
            return _describe(current, primary="")
        destroyed = await self._call(
            "destroy", self._client.destroy_crypto_key_version, {"name": key_version}, key_version
        )
        return _describe(destroyed, primary="")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        transport = getattr(self._client, "transport", None)
        close = getattr(transport, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # closing must never raise
                close()

    # ------------------------------------------------------------------ internals

    def _check_version_name(self, key_version: str) -> None:
        if not key_version.startswith(self._key + "/cryptoKeyVersions/"):
            raise KeyVersionNotFound(f"key version {key_version!r} is not a version of this key")

    async def _call(
        self, operation: str, method: Callable[..., T], request: dict[str, Any], version: str | None
    ) -> T:
        def invoke() -> T:
            return method(request=request, retry=self._retry, timeout=self._timeout)

        return await self._run(operation, invoke, version)

    async def _run(self, operation: str, invoke: Callable[[], T], version: str | None) -> T:
        loop = asyncio.get_running_loop()
        attributes = {"vault.kms.provider": "gcp_kms", "vault.key_version": version or ""}
        try:
            with tracer.start_as_current_span(f"kms.{operation}", attributes=attributes):
                return await loop.run_in_executor(self._pool, invoke)
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, operation, version) from None
        except gexc.RetryError:
            raise KmsUnavailable(
                f"Cloud KMS {operation} kept failing for {self._timeout:g}s", retry_after=2.0
            ) from None
        except (OSError, ConnectionError) as exc:
            raise KmsUnavailable(
                f"Cloud KMS unreachable during {operation} ({type(exc).__name__})"
            ) from None
        except Exception as exc:
            # requests' ConnectionError/Timeout are not OSError subclasses in all versions.
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise KmsUnavailable(
                    f"Cloud KMS unreachable during {operation} ({type(exc).__name__})"
                ) from None
            raise


def _status(exc: gexc.GoogleAPICallError) -> str:
    """The canonical status name: from the gRPC code, or the REST error body's ``status``."""
    code = getattr(exc, "grpc_status_code", None)
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "json"):
        try:
            status = response.json().get("error", {}).get("status")
        except (ValueError, AttributeError):
            status = None
        if isinstance(status, str) and status:
            return status
    if code is not None and getattr(code, "name", None):
        return str(code.name)
    return type(exc).__name__


def _translate(exc: gexc.GoogleAPICallError, operation: str, version: str | None) -> KmsError:
    """A port error for a client exception. Messages are ours: the client's may echo URLs."""
    status = _status(exc)
    what = f"key version {version}" if version else "the key"
    if isinstance(exc, _RETRYABLE) or status in (
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "RESOURCE_EXHAUSTED",
    ):
        return KmsUnavailable(f"Cloud KMS {operation} failed: {status}", retry_after=2.0)
    if status == "NOT_FOUND":
        return KeyVersionNotFound(f"Cloud KMS has no {what}")
    if status == "FAILED_PRECONDITION":
        if operation in ("encrypt", "decrypt"):
            return KeyVersionDisabled(f"Cloud KMS refused {operation}: {what} is not enabled")
        return KeyVersionStateError(f"Cloud KMS refused {operation} on {what}")
    if operation == "decrypt" and status in ("INVALID_ARGUMENT", "BadRequest"):
        return UnwrapFailed("Cloud KMS could not decrypt the wrapped data key")
    if status in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return KmsUnavailable(
            f"Cloud KMS denied {operation} on {what} ({status}); check the vault's IAM role",
            retry_after=30.0,
        )
    return KmsError(f"Cloud KMS {operation} failed: {status}")


def _state(version: Any) -> KeyVersionState:
    state = int(version.state)
    if state == _ENABLED:
        return KeyVersionState.ENABLED
    if state == _DISABLED:
        return KeyVersionState.DISABLED
    if state in (3, 4, 9, 10):  # destroyed, destroy scheduled, external destruction
        return KeyVersionState.DESTROYED
    return KeyVersionState.DISABLED  # pending or failed: cannot be used


def _describe(version: Any, *, primary: str) -> KmsKeyVersion:
    created: datetime | None = version.create_time if version.create_time else None
    return KmsKeyVersion(
        name=str(version.name),
        state=_state(version),
        primary=bool(primary) and version.name == primary,
        created_at=created,
    )


def _version_number(name: str) -> int:
    tail = name.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0
