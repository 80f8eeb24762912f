"""Token bundles recently read from the vault, kept in this process's memory only.

A publish needs the connection's tokens, and each read from the vault is a gRPC call
(and a decryption there): the hop that costs a publish most after the platform's own.
The vault stays the only store: nothing here is written anywhere, and an entry serves
only while every one of these holds:

* it is asked for by the same tenant and connection it was read for;
* the connection's row is unchanged since (its ``updated_at``, read in the same
  request): every token change made through connectors — a reconnect, a refresh, a
  disconnect, a status change such as a revocation — updates the row in the same
  flow, in any replica, so a changed row means a fresh read;
* it is younger than ``ttl`` seconds, which bounds what the row cannot tell (secrets
  shredded or made unreadable in the vault behind connectors' back).

This replica also forgets an entry at once when it refreshes, reconnects or
disconnects the connection, or changes its status. Refreshes read the vault
directly: the compare-and-swap needs the stored version, never a remembered one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from postd_connectors.domain.model import Connection, StoredBundle


@dataclass(frozen=True)
class _Entry:
    stored: StoredBundle
    row_version: datetime
    read_at: float


class TokenCache:
    """Bounded and in memory; not thread-safe (one event loop). Never raises, never
    blocks. ``ttl`` 0 disables it."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, connection: Connection) -> StoredBundle | None:
        """The bundle read for this tenant's connection at its current row, if fresh."""
        key = (connection.tenant_id, connection.id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (
            connection.updated_at is None
            or entry.row_version != connection.updated_at
            or self._clock() - entry.read_at >= self.ttl
        ):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.stored

    def put(self, connection: Connection, stored: StoredBundle) -> None:
        """Remember ``stored``, just read from the vault for ``connection`` as read
        before it (a row without ``updated_at`` cannot be checked, so is not kept)."""
        if self.ttl <= 0 or self.max_entries <= 0 or connection.updated_at is None:
            return
        key = (connection.tenant_id, connection.id)
        self._entries[key] = _Entry(stored, connection.updated_at, self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, tenant_id: str, connection_id: str) -> None:
        self._entries.pop((tenant_id, connection_id), None)
