"""A rewrap in its own process, for the crash test: it prints one line per committed
batch and stops for good after batch PAUSE_AFTER, so the test can SIGKILL it there,
between two batches.

Usage: python rewrap_worker.py DSN SCHEMA KEYRING_FILE BATCH_SIZE PAUSE_AFTER
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from postd_common import db
from postd_vault.adapters.postgres import PostgresSecretStore
from postd_vault.domain.cache import DataKeyCache
from postd_vault.domain.vault import Vault
from postd_vault.kms.local import LocalKeyring


async def main(dsn: str, schema: str, keyring: Path, batch_size: int, pause_after: int) -> None:
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    vault = Vault(
        PostgresSecretStore(pool, schema=schema),
        LocalKeyring.open_file(keyring, create_if_missing=False),
        DataKeyCache(0, 0),
    )
    await vault.start()
    batches = 0

    async def on_batch(done: int, total: int) -> None:
        nonlocal batches
        batches += 1
        print(f"batch {batches} {done} {total}", flush=True)
        if batches == pause_after:
            await asyncio.Event().wait()  # until killed

    print("ready", flush=True)
    result = await vault.run_rewrap("operator", batch_size=batch_size, on_batch=on_batch)
    print(f"done {result.rewrapped} {result.remaining}", flush=True)
    await pool.close()


if __name__ == "__main__":
    dsn_arg, schema_arg, keyring_arg, size_arg, pause_arg = sys.argv[1:6]
    asyncio.run(main(dsn_arg, schema_arg, Path(keyring_arg), int(size_arg), int(pause_arg)))
