"""A local stand-in for the Cloud KMS REST API (v1), for tests of the GCP provider.

It serves what the vault uses, with the request and response JSON of the real API
(camelCase fields, base64 bytes, int64 as strings, enums as numbers when the client
asks ``$alt=json;enum-encoding=int`` and as names otherwise, errors as
``{"error": {"code", "message", "status"}}``):

* ``POST /v1/{cryptoKey or cryptoKeyVersion}:encrypt`` and ``POST /v1/{cryptoKey}:decrypt``
  with additional authenticated data and CRC32C checks;
* ``GET /v1/{cryptoKey}`` and ``GET /v1/{cryptoKeyVersion}``;
* ``POST /v1/{cryptoKey}/cryptoKeyVersions`` (create) and ``GET`` (list, paged);
* ``PATCH /v1/{cryptoKeyVersion}?updateMask=state`` (enable/disable);
* ``POST /v1/{cryptoKey}:updatePrimaryVersion`` and ``POST /v1/{cryptoKeyVersion}:destroy``.

Faults for tests: :meth:`KmsStandIn.fail_next` answers the next calls with an error
status, and ``down = True`` answers everything with 503 UNAVAILABLE.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import struct
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postd_vault.kms.gcp import crc32c

STATES = {
    "CRYPTO_KEY_VERSION_STATE_UNSPECIFIED": 0,
    "ENABLED": 1,
    "DISABLED": 2,
    "DESTROYED": 3,
    "DESTROY_SCHEDULED": 4,
}
STATE_NAMES = {v: k for k, v in STATES.items()}
HTTP_FOR = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "NOT_FOUND": 404,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
    "RESOURCE_EXHAUSTED": 429,
    "PERMISSION_DENIED": 403,
}
PAGE_SIZE = 2  # small on purpose: the client's pager must follow nextPageToken


class ApiError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class StandInVersion:
    number: int
    key: bytes | None
    state: int
    created: datetime
    destroy_time: datetime | None = None


@dataclass
class StandInKey:
    name: str
    created: datetime
    versions: dict[int, StandInVersion] = field(default_factory=dict)
    primary: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name) or ""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{name}'") from None


class KmsStandIn:
    """The stand-in's state plus its aiohttp application."""

    def __init__(self) -> None:
        self.keys: dict[str, StandInKey] = {}
        self.calls: Counter[str] = Counter()
        self.down = False
        self._failures: list[str] = []

    # ------------------------------------------------------------------ test controls

    def create_key(self, name: str) -> StandInKey:
        """A CryptoKey (ENCRYPT_DECRYPT) with version 1 enabled and primary."""
        key = StandInKey(name, _now())
        self.keys[name] = key
        self._add_version(key)
        key.primary = 1
        return key

    def fail_next(self, count: int, status: str = "UNAVAILABLE") -> None:
        self._failures.extend([status] * count)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v1/{path:.+}", self._dispatch)
        return app

    @classmethod
    @contextlib.asynccontextmanager
    async def serve(cls) -> AsyncIterator[tuple[KmsStandIn, str]]:
        """Run a stand-in on a free loopback port; yields it and its ``http://`` endpoint."""
        standin = cls()
        runner = web.AppRunner(standin.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield standin, f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.Response:
        ints = "enum-encoding=int" in request.query.get("$alt", "")
        path = request.match_info["path"]
        try:
            if self.down:
                raise ApiError("UNAVAILABLE", "The service is currently unavailable.")
            if self._failures:
                raise ApiError(self._failures.pop(0), "Injected failure.")
            body: dict[str, Any] = {}
            if request.method in ("POST", "PATCH") and request.can_read_body:
                body = await request.json()
            result = self._route(request.method, path, body, request.query, ints)
        except ApiError as exc:
            code = HTTP_FOR[exc.status]
            error = {"code": code, "message": exc.message, "status": exc.status}
            return web.json_response({"error": error}, status=code)
        return web.json_response(result)

    def _route(
        self, method: str, path: str, body: dict[str, Any], query: Any, ints: bool
    ) -> dict[str, Any]:
        resource, _, verb = path.partition(":")
        if method == "POST" and verb == "encrypt":
            self.calls["encrypt"] += 1
            return self._encrypt(resource, body)
        if method == "POST" and verb == "decrypt":
            self.calls["decrypt"] += 1
            return self._decrypt(resource, body)
        if method == "POST" and verb == "updatePrimaryVersion":
            self.calls["updatePrimaryVersion"] += 1
            key = self._key(resource)
            version = self._version(key, int(body.get("cryptoKeyVersionId", "0") or 0))
            if version.state != STATES["ENABLED"]:
                raise ApiError("FAILED_PRECONDITION", f"{self._vname(key, version)} is not enabled")
            key.primary = version.number
            return self._key_json(key, ints)
        if method == "POST" and verb == "destroy":
            self.calls["destroy"] += 1
            key, version = self._find_version(resource)
            if version.state in (STATES["DESTROYED"], STATES["DESTROY_SCHEDULED"]):
                raise ApiError("FAILED_PRECONDITION", "The version is already destroyed.")
            version.state = STATES["DESTROY_SCHEDULED"]
            version.key = None
            version.destroy_time = _now()
            return self._version_json(key, version, ints)
        if verb:
            raise ApiError("NOT_FOUND", f"Unknown method :{verb}")
        if resource.endswith("/cryptoKeyVersions"):
            key = self._key(resource.rsplit("/", 1)[0])
            if method == "POST":
                self.calls["create"] += 1
                return self._version_json(key, self._add_version(key), ints)
            if method == "GET":
                self.calls["list"] += 1
                return self._list(key, query, ints)
        if "/cryptoKeyVersions/" in resource:
            key, version = self._find_version(resource)
            if method == "GET":
                self.calls["getVersion"] += 1
                return self._version_json(key, version, ints)
            if method == "PATCH":
                self.calls["patch"] += 1
                if query.get("updateMask") != "state":
                    raise ApiError("INVALID_ARGUMENT", "Only updateMask=state is supported.")
                wanted = body.get("state")
                state = wanted if isinstance(wanted, int) else STATES.get(str(wanted), -1)
                if state not in (STATES["ENABLED"], STATES["DISABLED"]):
                    raise ApiError("INVALID_ARGUMENT", "state must be ENABLED or DISABLED.")
                if version.key is None:
                    raise ApiError("FAILED_PRECONDITION", "The version is destroyed.")
                version.state = state
                return self._version_json(key, version, ints)
        if method == "GET" and resource in self.keys:
            self.calls["getKey"] += 1
            return self._key_json(self.keys[resource], ints)
        raise ApiError("NOT_FOUND", f"{resource} not found.")

    # ------------------------------------------------------------------ crypto

    def _encrypt(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        if "/cryptoKeyVersions/" in resource:
            key, version = self._find_version(resource)
        else:
            key = self._key(resource)
            version = self._version(key, key.primary)
        plaintext = _unb64(body, "plaintext")
        aad = _unb64(body, "additionalAuthenticatedData")
        verified_p = self._check_crc(body, "plaintextCrc32c", plaintext)
        verified_a = self._check_crc(body, "additionalAuthenticatedDataCrc32c", aad)
        if version.state != STATES["ENABLED"] or version.key is None:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"{self._vname(key, version)} is not enabled, current state is: "
                f"{STATE_NAMES[version.state]}.",
            )
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(version.key).encrypt(nonce, plaintext, aad)
        ciphertext = struct.pack(">I", version.number) + nonce + sealed
        return {
            "name": self._vname(key, version),
            "ciphertext": _b64(ciphertext),
            "ciphertextCrc32c": str(crc32c(ciphertext)),
            "verifiedPlaintextCrc32c": verified_p,
            "verifiedAdditionalAuthenticatedDataCrc32c": verified_a,
            "protectionLevel": "SOFTWARE",
        }

    def _decrypt(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(resource)
        ciphertext = _unb64(body, "ciphertext")
        aad = _unb64(body, "additionalAuthenticatedData")
        self._check_crc(body, "ciphertextCrc32c", ciphertext)
        self._check_crc(body, "additionalAuthenticatedDataCrc32c", aad)
        invalid = ApiError("INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        if len(ciphertext) < 4 + 12 + 16:
            raise invalid
        number = struct.unpack(">I", ciphertext[:4])[0]
        version = key.versions.get(number)
        if version is None:
            raise invalid
        if version.state != STATES["ENABLED"] or version.key is None:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"{self._vname(key, version)} is not enabled, current state is: "
                f"{STATE_NAMES[version.state]}.",
            )
        try:
            plaintext = AESGCM(version.key).decrypt(ciphertext[4:16], ciphertext[16:], aad)
        except InvalidTag:
            raise invalid from None
        return {
            "plaintext": _b64(plaintext),
            "plaintextCrc32c": str(crc32c(plaintext)),
            "usedPrimary": number == key.primary,
            "protectionLevel": "SOFTWARE",
        }

    @staticmethod
    def _check_crc(body: dict[str, Any], name: str, data: bytes) -> bool:
        if name not in body:
            return False
        if int(body[name]) != crc32c(data):
            raise ApiError(
                "INVALID_ARGUMENT", f"The checksum in field {name} did not match the data."
            )
        return True

    # ------------------------------------------------------------------ resources

    def _key(self, name: str) -> StandInKey:
        key = self.keys.get(name)
        if key is None:
            raise ApiError("NOT_FOUND", f"{name} not found.")
        return key

    def _version(self, key: StandInKey, number: int) -> StandInVersion:
        version = key.versions.get(number)
        if version is None:
            raise ApiError("NOT_FOUND", f"{key.name}/cryptoKeyVersions/{number} not found.")
        return version

    def _find_version(self, resource: str) -> tuple[StandInKey, StandInVersion]:
        key_name, _, number = resource.partition("/cryptoKeyVersions/")
        key = self._key(key_name)
        if not number.isdigit():
            raise ApiError("NOT_FOUND", f"{resource} not found.")
        return key, self._version(key, int(number))

    def _add_version(self, key: StandInKey) -> StandInVersion:
        number = 1 + max(key.versions, default=0)
        version = StandInVersion(number, secrets.token_bytes(32), STATES["ENABLED"], _now())
        key.versions[number] = version
        return version

    @staticmethod
    def _vname(key: StandInKey, version: StandInVersion) -> str:
        return f"{key.name}/cryptoKeyVersions/{version.number}"

    def _version_json(self, key: StandInKey, version: StandInVersion, ints: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self._vname(key, version),
            "state": version.state if ints else STATE_NAMES[version.state],
            "protectionLevel": 1 if ints else "SOFTWARE",
            "algorithm": 1 if ints else "GOOGLE_SYMMETRIC_ENCRYPTION",
            "createTime": _ts(version.created),
            "generateTime": _ts(version.created),
        }
        if version.destroy_time:
            doc["destroyTime"] = _ts(version.destroy_time)
        return doc

    def _key_json(self, key: StandInKey, ints: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": key.name,
            "purpose": 1 if ints else "ENCRYPT_DECRYPT",
            "createTime": _ts(key.created),
            "versionTemplate": {
                "protectionLevel": 1 if ints else "SOFTWARE",
                "algorithm": 1 if ints else "GOOGLE_SYMMETRIC_ENCRYPTION",
            },
        }
        if key.primary:
            doc["primary"] = self._version_json(key, key.versions[key.primary], ints)
        return doc

    def _list(self, key: StandInKey, query: Any, ints: bool) -> dict[str, Any]:
        versions = [key.versions[n] for n in sorted(key.versions)]
        wanted = query.get("filter", "")
        if wanted:
            field_name, _, value = wanted.partition("=")
            if field_name.strip() != "state" or value.strip() not in STATES:
                raise ApiError("INVALID_ARGUMENT", f"Unsupported filter {wanted!r}.")
            versions = [v for v in versions if v.state == STATES[value.strip()]]
        size = int(query.get("pageSize", PAGE_SIZE) or PAGE_SIZE)
        start = int(query.get("pageToken", "0") or 0)
        page = versions[start : start + size]
        doc: dict[str, Any] = {
            "cryptoKeyVersions": [self._version_json(key, v, ints) for v in page],
            "totalSize": len(versions),
        }
        if start + size < len(versions):
            doc["nextPageToken"] = str(start + size)
        return doc


if __name__ == "__main__":
    # python gcp_kms_standin.py PORT KEY_NAME: a stand-in with one key, until killed
    # (the benchmark's remote KMS; a development vault with POSTD_VAULT_KMS=gcp).
    import sys

    standin = KmsStandIn()
    standin.create_key(sys.argv[2])
    web.run_app(standin.app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
