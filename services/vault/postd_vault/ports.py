"""What the vault's domain needs from the outside, besides the KMS (:mod:`postd_vault.kms`).

Every method is a coroutine that never blocks the event loop. Every method may
raise :class:`StoreUnavailable` (PostgreSQL unreachable, or the statement timed
out); a write that raises it was rolled back whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from postd_common import errors
from postd_vault.domain.model import (
    AuditEntry,
    AuditEvent,
    AuditQuery,
    KeyVersionRecord,
    SealedSecret,
    SecretAddress,
)
from postd_vault.kms import KmsKeyVersion


class StoreUnavailable(errors.Unavailable):
    """PostgreSQL could not be reached or did not answer in time."""


class StaleWrite(Exception):
    """The row changed since it was read (another writer won): re-read and decide again."""


class KeyVersionRetired(Exception):
    """The KEK version a write used is no longer enabled: wrap again with the primary."""


class KeyVersionChange(Protocol):
    """A KEK version locked for a state change (row lock held until the block exits)."""

    record: KeyVersionRecord | None
    """The version, or None if the vault does not know it."""

    async def mark_disabled(self) -> KeyVersionRecord:
        """Record the version as disabled (committed when the block exits)."""
        ...


class RewrapBatch(Protocol):
    """Rows claimed for rewrapping, locked until the block exits (then committed)."""

    rows: Sequence[SealedSecret]

    async def replace_wrapped_key(self, secret_id: str, wrapped_key: bytes) -> None:
        """Store the data key of ``secret_id`` rewrapped under the batch's target version."""
        ...

    async def note_progress(self, run_id: str, rewrapped: int) -> None:
        """Add ``rewrapped`` to the run's count and mark it alive, in the batch's
        transaction (so the count never disagrees with the rows)."""
        ...


class SecretStore(Protocol):
    # ------------------------------------------------------------------ key versions

    async def sync_key_versions(self, provider: str, versions: Sequence[KmsKeyVersion]) -> None:
        """Mirror the KMS's versions: add new ones, record disabled ones, follow its primary."""
        ...

    async def primary_key_version(self) -> str | None:
        """The version new data keys are wrapped with; None before the first sync."""
        ...

    async def add_primary_key_version(self, provider: str, version: KmsKeyVersion) -> None:
        """Record a freshly created version and make it the primary, in one transaction."""
        ...

    async def key_versions(self) -> list[KeyVersionRecord]:
        """Every known version, newest first, with its live data-key count."""
        ...

    def change_key_version(self, key_version: str) -> AbstractAsyncContextManager[KeyVersionChange]:
        """Lock ``key_version`` (and make writes to it wait) for a state change."""
        ...

    # ------------------------------------------------------------------ secrets

    async def read_live(
        self, address: SecretAddress, audit: AuditEntry | None = None
    ) -> SealedSecret | None:
        """The live secret at ``address`` (token bundle: by connection; named: by name;
        ``address.kind`` is not matched). With ``audit``, records it in the same
        statement, ``success`` set to whether a secret was found."""
        ...

    async def write(
        self, secret: SealedSecret, *, replaces: SealedSecret | None, audit: AuditEntry
    ) -> SealedSecret:
        """Insert ``secret`` (``replaces`` None) or overwrite ``replaces`` if it is still
        at the version read, with the audit entry, in one transaction. Returns the
        stored row with its timestamps.

        Raises StaleWrite (someone else wrote or shredded it first, or a live one
        appeared), KeyVersionRetired (``secret.key_version`` is not enabled)."""
        ...

    async def shred(
        self, tenant_id: str, *, connection_id: str = "", name: str = "", audit: AuditEntry
    ) -> list[SealedSecret]:
        """Destroy the key material of every live secret of a connection (its bundle and
        the named secrets scoped to it) or of one named secret: wrapped key, ciphertext
        and key version are erased and the row is kept as a tombstone. Returns what
        was destroyed (as it was), with the audit entry in the same transaction."""
        ...

    # ------------------------------------------------------------------ rewrap

    async def count_by_key_version(self) -> dict[str, int]:
        """Live data keys per KEK version."""
        ...

    def claim_rewrap_batch(
        self, target_version: str, limit: int, after_id: str
    ) -> AbstractAsyncContextManager[RewrapBatch]:
        """Claim up to ``limit`` live rows with id > ``after_id`` not on ``target_version``
        (skipping rows other runs hold), ordered by id, in a transaction that also
        holds ``target_version`` enabled. Raises KeyVersionRetired if it is not."""
        ...

    async def start_rewrap_run(self, actor: str, target_version: str) -> str:
        """Record that a rewrap run started; returns its id."""
        ...

    async def finish_rewrap_run(self, run_id: str, remaining: int) -> None:
        """Mark the run finished."""
        ...

    async def rewrap_activity(self, stale_after_seconds: float) -> tuple[bool, datetime | None]:
        """(whether an unfinished run was alive within ``stale_after_seconds``,
        when the last batch of any run committed)."""
        ...

    # ------------------------------------------------------------------ audit

    async def record_audit(self, entry: AuditEntry) -> None:
        """Append one audit event."""
        ...

    async def list_audit(self, query: AuditQuery) -> list[AuditEvent]:
        """Events newest first matching ``query``, at most ``query.page_size`` + 1
        (the extra one tells the caller there is a next page)."""
        ...
