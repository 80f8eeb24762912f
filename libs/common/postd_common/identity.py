"""Service identity: who is calling, proven by a signed token on every gRPC call.

Each service holds an Ed25519 private key; every service trusts a directory of
public keys named ``<service>.pub``. A caller attaches a short-lived JWT (EdDSA)
with ``iss`` = its name and ``aud`` = the callee's name. The callee verifies the
signature against the caller's public key, the audience and expiry, and then
applies its per-method allow-list. In Kubernetes the keys come from Secrets (one
per service) and a ConfigMap of public keys; a mesh with mTLS can replace this
module without touching servicers, which only see :func:`caller`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

METADATA_KEY = "x-postd-identity"
TOKEN_LIFETIME_SECONDS = 300
_LEEWAY_SECONDS = 30

_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("postd_caller", default=None)


class IdentityError(Exception):
    """The identity token is missing, malformed, forged, expired or for someone else."""


def caller() -> str | None:
    """The verified name of the service making the current gRPC call, if any."""
    return _caller.get()


def set_caller(name: str | None) -> contextvars.Token[str | None]:
    return _caller.set(name)


def reset_caller(token: contextvars.Token[str | None]) -> None:
    _caller.reset(token)


def generate_keypair(directory: Path, service: str) -> None:
    """Write ``<service>.key`` (private, 0600) and ``<service>.pub`` into ``directory``
    unless they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{service}.key"
    public_path = directory / f"{service}.pub"
    if private_path.exists() and public_path.exists():
        return
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass(frozen=True)
class IdentitySettings:
    service: str
    private_key_file: Path
    trust_dir: Path


class IdentitySigner:
    """Issues this service's tokens, cached per audience until half their life."""

    def __init__(self, service: str, private_key: Ed25519PrivateKey) -> None:
        self.service = service
        self._key = private_key
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, service: str, path: Path) -> IdentitySigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} is not an Ed25519 private key")
        return cls(service, key)

    def token_for(self, audience: str) -> str:
        now = time.time()
        with self._lock:
            cached = self._cache.get(audience)
            if cached and cached[1] > now:
                return cached[0]
            token = jwt.encode(
                {
                    "iss": self.service,
                    "aud": audience,
                    "iat": int(now),
                    "exp": int(now) + TOKEN_LIFETIME_SECONDS,
                },
                self._key,
                algorithm="EdDSA",
            )
            self._cache[audience] = (token, now + TOKEN_LIFETIME_SECONDS / 2)
            return token


class IdentityVerifier:
    """Verifies callers' tokens against the trusted public keys."""

    # Verified tokens are remembered until they expire: a caller reuses its token for
    # half its life, so every call after the first skips the signature check (which
    # costs more than many handlers). Bounded; cleared when full.
    _CACHE_LIMIT = 4096

    def __init__(self, service: str, trusted: Mapping[str, Ed25519PublicKey]) -> None:
        self.service = service
        self._trusted = dict(trusted)
        self._verified: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_dir(cls, service: str, trust_dir: Path) -> IdentityVerifier:
        trusted: dict[str, Ed25519PublicKey] = {}
        for path in sorted(trust_dir.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                trusted[path.stem] = key
        if not trusted:
            raise IdentityError(f"no Ed25519 public keys (*.pub) in {trust_dir}")
        return cls(service, trusted)

    def verify(self, token: str | None) -> str:
        """Return the caller's service name, or raise :class:`IdentityError`."""
        if not token:
            raise IdentityError("no service identity presented")
        cached = self._verified.get(token)
        if cached is not None:
            if cached[1] + _LEEWAY_SECONDS > time.time():
                return cached[0]
            del self._verified[token]
        return self._verify_signed(token)

    def _verify_signed(self, token: str) -> str:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise IdentityError("malformed identity token") from exc
        issuer = unverified.get("iss")
        key = self._trusted.get(issuer) if isinstance(issuer, str) else None
        if key is None:
            raise IdentityError(f"unknown service {issuer!r}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self.service,
                issuer=issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise IdentityError(f"identity token rejected: {exc}") from exc
        if len(self._verified) >= self._CACHE_LIMIT:
            self._verified.clear()
        self._verified[token] = (str(issuer), float(claims["exp"]))
        return str(issuer)


def load_identity(settings: IdentitySettings) -> tuple[IdentitySigner, IdentityVerifier]:
    """Read this service's key and the trusted keys; raises ``IdentityError`` or ``OSError``."""
    try:
        signer = IdentitySigner.from_file(settings.service, settings.private_key_file)
    except FileNotFoundError as exc:
        raise IdentityError(f"identity key file {settings.private_key_file} not found") from exc
    return signer, IdentityVerifier.from_dir(settings.service, settings.trust_dir)
