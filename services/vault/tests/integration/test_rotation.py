"""Rotation on real PostgreSQL: a new KEK version, the rewrap of 10,000 data keys while
reads go on, a rewrap killed half-way and resumed, and disabling what nothing uses."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from postd_common import errors
from postd_common.secrets import Secret
from postd_vault.adapters.postgres import PostgresSecretStore
from postd_vault.domain.model import AuditAction, AuditQuery, TokenBundle
from postd_vault.domain.vault import Vault

pytestmark = pytest.mark.integration

WORKER = Path(__file__).parents[1] / "support" / "rewrap_worker.py"


async def seed(vault: Vault, tenant: str, count: int) -> dict[str, str]:
    """Store ``count`` bundles through the vault; returns connection -> access token."""
    tokens = {f"conn-{i:05d}": f"at-{i}-{random.getrandbits(64):x}" for i in range(count)}
    limit = asyncio.Semaphore(32)

    async def store(connection: str, token: str) -> None:
        async with limit:
            await vault.store_token_bundle(
                "connectors",
                tenant,
                connection,
                TokenBundle(access_token=Secret(token), refresh_token=Secret("rt-" + token)),
            )

    await asyncio.gather(*(store(c, t) for c, t in tokens.items()))
    return tokens


async def read_all(vault: Vault, tenant: str, tokens: dict[str, str]) -> list[str]:
    """Read every bundle; returns the connections whose token was wrong or unreadable."""
    limit = asyncio.Semaphore(32)
    wrong: list[str] = []

    async def read(connection: str, token: str) -> None:
        async with limit:
            try:
                got, _ = await vault.get_token_bundle("connectors", tenant, connection)
            except errors.DomainError:
                wrong.append(connection)
                return
            if got.access_token.reveal() != token:
                wrong.append(connection)

    await asyncio.gather(*(read(c, t) for c, t in tokens.items()))
    return wrong


async def payload_digest(pool: asyncpg.Pool, schema: str, tenant: str) -> tuple[str, str]:
    row = await pool.fetchrow(
        f"SELECT md5(string_agg(encode(ciphertext, 'hex'), ',' ORDER BY id)) AS payloads,"
        f" md5(string_agg(encode(wrapped_key, 'hex'), ',' ORDER BY id)) AS keys"
        f" FROM {schema}.secrets WHERE tenant_id = $1",
        tenant,
    )
    assert row is not None
    return row["payloads"], row["keys"]


async def test_rewrap_of_10000_secrets_while_reads_go_on(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    tokens = await seed(vault, tenant, 10_000)
    payloads_before, keys_before = await payload_digest(pg_pool, schema, tenant)
    new, previous = await vault.rotate("operator", "scheduled rotation")
    assert (new.key_version, previous.key_version) == ("v2", "v1")
    status = await vault.rotation_status()
    assert (status.total, status.rewrapped) == (10_001, 0)  # + the fingerprint key

    connections = list(tokens)
    reads = 0
    read_errors: list[BaseException] = []
    progressed = asyncio.Condition()
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            connection = random.choice(connections)
            try:
                got, _ = await vault.get_token_bundle("connectors", tenant, connection)
                assert got.access_token.reveal() == tokens[connection]
            except BaseException as exc:  # recorded, then the test fails below
                read_errors.append(exc)
                return
            async with progressed:
                reads += 1
                progressed.notify_all()

    reads_at_batch: list[int] = []

    async def on_batch(done: int, total: int) -> None:
        # Make the reads interleave deterministically: each batch waits until the
        # readers completed a few more Gets since the previous one.
        target = reads + 5
        async with progressed:
            await progressed.wait_for(lambda: reads >= target or bool(read_errors))
        reads_at_batch.append(reads)

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    try:
        result = await vault.run_rewrap("operator", batch_size=500, on_batch=on_batch)
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert not read_errors, read_errors[:1]
    assert (result.rewrapped, result.remaining, result.batches, result.failed) == (
        10_001,
        0,
        21,
        0,
    )
    assert len(reads_at_batch) == 21
    assert reads_at_batch == sorted(reads_at_batch)
    assert reads_at_batch[-1] - reads_at_batch[0] >= 100  # reads kept flowing between batches

    # Only the data keys changed: every payload is byte for byte what it was.
    payloads_after, keys_after = await payload_digest(pg_pool, schema, tenant)
    assert payloads_after == payloads_before
    assert keys_after != keys_before
    status = await vault.rotation_status()
    assert status.complete
    assert status.by_key_version == (("v2", 10_001),)

    await vault.disable_key_version("operator", "v1", "rewrap complete")
    assert await read_all(vault, tenant, tokens) == []


async def test_a_rewrap_killed_between_batches_resumes(
    vault: Vault,
    tenant: str,
    pg_dsn: str,
    schema: str,
    keyring_path: Path,
    store: PostgresSecretStore,
) -> None:
    tokens = await seed(vault, tenant, 1_000)
    await vault.rotate("operator", "rotation before a crash")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        pg_dsn,
        schema,
        str(keyring_path),
        "100",
        "3",  # stops after the third batch: the kill lands between batches
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert worker.stdout is not None
    try:
        lines: list[str] = []
        while not any(line.startswith("batch 3 ") for line in lines):
            line = (await asyncio.wait_for(worker.stdout.readline(), 60)).decode().strip()
            assert line, f"worker exited early: {lines}"
            lines.append(line)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()

    counts = await store.count_by_key_version()
    assert counts == {"v2": 300, "v1": 701}  # three committed batches, nothing half-done
    status = await vault.rotation_status()
    assert (status.rewrapped, status.remaining) == (300, 701)

    resumed = await vault.run_rewrap("operator", batch_size=100)
    assert (resumed.rewrapped, resumed.remaining, resumed.failed) == (701, 0, 0)
    assert await store.count_by_key_version() == {"v2": 1_001}
    await vault.disable_key_version("operator", "v1", "")
    assert await read_all(vault, tenant, tokens) == []


class StallingKms:
    """Lets ``allowed`` wraps through, then blocks the next one until cancelled."""

    def __init__(self, inner: Any, allowed: int) -> None:
        self.inner = inner
        self.allowed = allowed
        self.stalled = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def wrap(self, data_key: bytes, aad: bytes, key_version: str) -> bytes:
        if self.allowed <= 0:
            self.stalled.set()
            await asyncio.Event().wait()  # until cancelled
        self.allowed -= 1
        return await self.inner.wrap(data_key, aad, key_version)


async def test_a_rewrap_cancelled_inside_a_batch_loses_only_that_batch(
    vault: Vault,
    make_vault: Callable[..., Awaitable[Vault]],
    local_kms: Any,
    tenant: str,
    store: PostgresSecretStore,
) -> None:
    tokens = await seed(vault, tenant, 250)
    await vault.rotate("operator", "")
    # Two batches of 100 go through; the third stalls half-way and is cancelled.
    stalling = StallingKms(local_kms, allowed=250)
    rewrapping = await make_vault(stalling)
    task = asyncio.create_task(rewrapping.run_rewrap("operator", batch_size=100))
    await asyncio.wait_for(stalling.stalled.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.count_by_key_version() == {"v2": 200, "v1": 51}
    # Even a cancelled run leaves its audit event.
    runs = await store.list_audit(AuditQuery(actions=(AuditAction.REWRAP,)))
    assert runs[0].entry.detail == "rewrapped 200 in 2 batches; 51 remain; stopped: cancelled"
    assert not runs[0].entry.success

    resumed = await vault.run_rewrap("operator", batch_size=100)
    assert (resumed.rewrapped, resumed.remaining) == (51, 0)
    assert await read_all(vault, tenant, tokens) == []


async def test_writes_during_a_rotation_use_the_new_primary(
    vault: Vault, tenant: str, store: PostgresSecretStore
) -> None:
    await seed(vault, tenant, 10)
    await vault.rotate("operator", "")
    await vault.store_token_bundle(
        "connectors", tenant, "fresh", TokenBundle(access_token=Secret("new"))
    )
    assert await store.count_by_key_version() == {"v1": 11, "v2": 1}
    with pytest.raises(errors.FailedPrecondition) as busy:
        await vault.disable_key_version("operator", "v1", "")
    assert "still wraps 11 data keys" in busy.value.message
