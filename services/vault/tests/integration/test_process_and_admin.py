"""The vault as a process (``python -m postd_vault``) and the operator's admin CLI
(``python -m postd_vault admin ...``), both run as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common.devinfra import free_port
from postd_common.grpcutil import check_health, open_channel
from postd_common.identity import IdentitySigner
from postd_common.testing import unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
async def database(pg_dsn: str) -> str:
    """A database of its own: the service always uses the schema ``vault``, and a second
    vault with a new keyring must not meet the first one's key versions."""
    name = unique("vaultdb").replace("-", "_")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return pg_dsn.rsplit("/", 1)[0] + "/" + name


def vault_env(dsn: str, identity_dir: Path, keyring: Path, grpc_port: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTD_")},
        "DATABASE_URL": dsn,
        "POSTD_ENV": "development",
        "POSTD_LOG_LEVEL": "warning",
        "POSTD_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "vault.key"),
        "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        "POSTD_VAULT_KEYRING_FILE": str(keyring),
        "POSTD_VAULT_ADDR": f"127.0.0.1:{grpc_port}",
        "POSTD_OPERATOR_KEY_FILE": str(identity_dir / "operator.key"),
    }


async def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "postd_vault",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class RunningVault:
    target: str
    env: dict[str, str]
    keyring: Path


@pytest.fixture
async def running_vault(
    database: str, identity_dir: Path, tmp_path: Path
) -> AsyncIterator[RunningVault]:
    port = free_port()
    keyring = tmp_path / "state" / "vault-keyring.json"
    env = vault_env(database, identity_dir, keyring, port)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postd_vault", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    target = f"127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.returncode is not None:
                assert process.stderr is not None
                raise AssertionError((await process.stderr.read()).decode()[-2000:])
            if await check_health(target, "postd.vault.v1.VaultService", timeout=1.0):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the vault did not become healthy")
        yield RunningVault(target, env, keyring)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        assert code == 0  # a clean, graceful stop


async def test_the_service_starts_serves_and_the_admin_cli_rotates(
    running_vault: RunningVault, signer_for: Callable[[str], IdentitySigner]
) -> None:
    # First start in development generated the keyring, owner-only.
    assert running_vault.keyring.stat().st_mode & 0o777 == 0o600
    tenant = "tenant-process"
    async with open_channel(
        running_vault.target, signer=signer_for("connectors"), audience="vault"
    ) as channel:
        stub = vault_pb2_grpc.VaultServiceStub(channel)
        for n in range(5):
            await stub.StoreTokenBundle(
                vault_pb2.StoreTokenBundleRequest(
                    tenant_id=tenant,
                    connection_id=f"c{n}",
                    bundle=vault_pb2.TokenBundle(access_token=f"at-{n}"),
                )
            )

        env = running_vault.env
        code, out, err = await run(["admin", "status"], env)
        assert code == 0, err
        assert "primary key version: v1" in out
        assert "0 to rewrap (complete)" in out

        code, out, err = await run(["admin", "rotate-key", "--reason", "test"], env)
        assert (code, out.splitlines()[0]) == (0, "new primary: v2"), err
        code, out, err = await run(["admin", "disable-version", "1"], env)
        assert code == 1
        assert "FAILED_PRECONDITION" in err
        assert "still wraps" in err

        code, out, err = await run(["admin", "rewrap", "--batch-size", "2"], env)
        assert code == 0, err
        assert "batch 1: rewrapped 2" in out
        assert out.strip().endswith("; complete")
        code, out, err = await run(["admin", "disable-version", "1"], env)
        assert (code, out.strip()) == (0, "disabled: v1"), err
        code, out, err = await run(["admin", "key-versions"], env)
        assert code == 0, err
        assert out.splitlines()[0].split()[:3] == ["*", "v2", "enabled"]
        assert out.splitlines()[1].split()[:2] == ["v1", "disabled"]
        code, out, err = await run(["admin", "audit", "--since", "1h", "--limit", "50"], env)
        assert code == 0, err
        assert "rotate_key" in out
        assert "disable_key_version" in out
        assert "at-1" not in out

        # Everything stored before the rotation still reads.
        for n in range(5):
            got = await stub.GetTokenBundle(
                vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id=f"c{n}")
            )
            assert got.bundle.access_token == f"at-{n}"
            assert got.info.key_version == "v2"


async def test_production_without_a_keyring_refuses_to_start(
    database: str, identity_dir: Path, tmp_path: Path
) -> None:
    env = vault_env(database, identity_dir, tmp_path / "missing.json", free_port())
    env["POSTD_ENV"] = "production"
    code, _, err = await run([], env)
    assert code == 2
    assert err.strip().startswith("vault: cannot start: vault keyring")
    assert "Traceback" not in err
    assert not (tmp_path / "missing.json").exists()


async def test_migrate_only_applies_the_schema(
    database: str, identity_dir: Path, tmp_path: Path
) -> None:
    code, _, err = await run(["migrate"], vault_env(database, identity_dir, tmp_path / "k", 1))
    assert code == 0, err
    conn = await asyncpg.connect(database)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'vault'"
        )
    finally:
        await conn.close()
    assert {"secrets", "key_versions", "audit_events", "rewrap_runs"} <= {
        r["table_name"] for r in tables
    }
    assert not (tmp_path / "k").exists()  # migrating needs no keyring


async def test_the_admin_cli_without_an_operator_key_says_where_to_get_one(
    tmp_path: Path,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTD_")},
        "POSTD_OPERATOR_KEY_FILE": str(tmp_path / "nope.key"),
    }
    code, _, err = await run(["admin", "status"], env)
    assert code == 2
    assert "no usable operator key" in err
