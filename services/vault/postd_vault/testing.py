"""The real vault, in-process, for other services' integration tests.

Tests of connectors, publisher, health and webhook-router need a vault that behaves
as in production (envelope encryption, identities, access policy). This runs the
real servicer on a loopback port with its own schema and a fresh local keyring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from postd_common import db
from postd_common.bootstrap import Runtime
from postd_common.grpcutil import create_server
from postd_common.identity import IdentityVerifier
from postd_vault.app import MIGRATIONS, build
from postd_vault.config import load_settings


@asynccontextmanager
async def running_vault(
    *,
    dsn: str,
    pool: asyncpg.Pool,
    identity_dir: Path,
    verifier: IdentityVerifier,
    keyring: Path,
    schema: str,
) -> AsyncIterator[str]:
    """Yield the address of a serving vault; stop it and release its parts on exit."""
    await db.migrate_dsn(dsn, schema, MIGRATIONS)
    settings = load_settings(
        {
            "POSTD_ENV": "test",
            "DATABASE_URL": dsn,
            "POSTD_VAULT_KEYRING_FILE": str(keyring),
            "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "vault.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        }
    )
    runtime = Runtime(
        settings=settings.common, pool=pool, producer=None, signer=None, verifier=None
    )
    parts = await build(runtime, settings, schema=schema)
    server = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=parts.register,
        service_names=parts.service_names,
        verifier=verifier,
        policy=parts.policy,
    )
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)
        for close in parts.on_close:
            await close()
