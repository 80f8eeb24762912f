"""The local keyring file: created safely, refused when exposed, read-only from env."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest

from postd_vault.kms import KeyVersionState, RotationUnsupported
from postd_vault.kms.local import KeyringError, LocalKeyring


def test_a_missing_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    LocalKeyring.open_file(path, create_if_missing=True)
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert doc["primary"] == "v1"
    assert len(base64.b64decode(doc["versions"][0]["key"])) == 32


def test_a_missing_file_is_an_error_where_creation_is_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"):
        LocalKeyring.open_file(tmp_path / "keyring.json", create_if_missing=False)


def test_a_keyring_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    LocalKeyring.open_file(path, create_if_missing=True)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        LocalKeyring.open_file(path, create_if_missing=False)


def test_a_malformed_keyring_names_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    LocalKeyring.open_file(path, create_if_missing=True)
    doc = json.loads(path.read_text())
    key = doc["versions"][0]["key"]
    doc["versions"][0]["key"] = key[:-4] + "!!!!"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="malformed") as bad:
        LocalKeyring.open_file(path, create_if_missing=False)
    assert key[:-4] not in str(bad.value)


async def test_a_keyring_from_the_environment_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    LocalKeyring.open_file(path, create_if_missing=True)
    ring = LocalKeyring.from_env_value(base64.b64encode(path.read_bytes()).decode())
    data_key = secrets.token_bytes(32)
    assert await ring.unwrap(await ring.wrap(data_key, b"a", "v1"), b"a", "v1") == data_key
    with pytest.raises(RotationUnsupported):
        await ring.create_version()
    with pytest.raises(KeyringError):
        LocalKeyring.from_env_value("not base64 at all")


async def test_a_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    service = LocalKeyring.open_file(path, create_if_missing=True)
    admin = LocalKeyring.open_file(path, create_if_missing=False)
    created = await admin.create_version()
    assert created.name == "v2"
    data_key = secrets.token_bytes(32)
    wrapped = await admin.wrap(data_key, b"aad", "v2")
    # The service never saw v2 in memory: it re-reads the file for an unknown version.
    assert await service.unwrap(wrapped, b"aad", "v2") == data_key
    states = {v.name: (v.state, v.primary) for v in await service.list_versions()}
    assert states == {"v1": (KeyVersionState.ENABLED, False), "v2": (KeyVersionState.ENABLED, True)}
    assert path.stat().st_mode & 0o777 == 0o600
