import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from postd_common.identity import (
    IdentityError,
    IdentitySigner,
    IdentityVerifier,
    generate_keypair,
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("connectors", "publisher", "vault"):
        generate_keypair(tmp_path, name)
    return tmp_path


def test_caller_is_verified_by_signature_and_audience(keys: Path) -> None:
    signer = IdentitySigner.from_file("connectors", keys / "connectors.key")
    vault = IdentityVerifier.from_dir("vault", keys)
    assert vault.verify(signer.token_for("vault")) == "connectors"
    # A token minted for another service is refused here.
    with pytest.raises(IdentityError, match="rejected"):
        vault.verify(signer.token_for("publisher"))


def test_forged_and_missing_tokens_are_refused(keys: Path) -> None:
    vault = IdentityVerifier.from_dir("vault", keys)
    impostor = IdentitySigner("connectors", Ed25519PrivateKey.generate())
    with pytest.raises(IdentityError, match="rejected"):
        vault.verify(impostor.token_for("vault"))
    with pytest.raises(IdentityError, match="no service identity"):
        vault.verify(None)
    with pytest.raises(IdentityError, match="malformed"):
        vault.verify("not-a-jwt")
    stranger = IdentitySigner("stranger", Ed25519PrivateKey.generate())
    with pytest.raises(IdentityError, match="unknown service"):
        vault.verify(stranger.token_for("vault"))


def test_expired_token_is_refused(keys: Path) -> None:
    key = IdentitySigner.from_file("connectors", keys / "connectors.key")._key
    now = int(time.time())
    token = jwt.encode(
        {"iss": "connectors", "aud": "vault", "iat": now - 900, "exp": now - 600},
        key,
        algorithm="EdDSA",
    )
    with pytest.raises(IdentityError, match="expired"):
        IdentityVerifier.from_dir("vault", keys).verify(token)


def test_private_key_file_is_owner_only(keys: Path) -> None:
    assert (keys / "vault.key").stat().st_mode & 0o077 == 0


def test_a_verified_token_is_remembered_until_it_expires(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = IdentitySigner.from_file("connectors", keys / "connectors.key")
    vault = IdentityVerifier.from_dir("vault", keys)
    token = signer.token_for("vault")
    assert vault.verify(token) == "connectors"

    def no_signature_checks(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached token was verified again")

    # The second call is answered from the cache, without decoding the token again.
    monkeypatch.setattr(jwt, "decode", no_signature_checks)
    assert vault.verify(token) == "connectors"
    monkeypatch.undo()

    # Past its expiry (and the leeway) the cache no longer answers: the token goes
    # through full verification again (where PyJWT refuses an expired one).
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    decoded: list[str] = []
    real_decode = jwt.decode

    def recording_decode(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", recording_decode)
    assert vault.verify(token) == "connectors"
    assert decoded == [token, token]  # read the issuer, then check the signature


def test_a_refused_token_is_not_remembered(keys: Path) -> None:
    vault = IdentityVerifier.from_dir("vault", keys)
    impostor = IdentitySigner("connectors", Ed25519PrivateKey.generate())
    token = impostor.token_for("vault")
    for _ in range(2):
        with pytest.raises(IdentityError, match="rejected"):
            vault.verify(token)
