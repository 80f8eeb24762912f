"""A bounded, expiring cache of unwrapped data keys, so hot Gets skip the KMS.

What it trades: an unwrap costs a KMS round trip (a network call and a billed
operation with a cloud KMS), and a connection's token is read on every publish.
Caching the unwrapped data key for a short time removes that call from the hot
path while keeping the exposure small:

* keyed by a SHA-256 of exactly what an unwrap takes (key version, wrapped key,
  AAD), so it is a memo of the KMS answer: a rewrapped, replaced or tampered row
  has another key and misses;
* at most ``max_entries`` keys (least recently used evicted first) and each lives
  at most ``ttl_seconds`` after it was unwrapped, even when in use;
* entries are dropped at once when their secret is shredded or their key version
  disabled in this process (other replicas drop them within the TTL);
* ``ttl_seconds = 0`` (``POSTD_VAULT_DEK_CACHE_SECONDS=0``) turns it off: every Get
  unwraps through the KMS.

Plaintext data keys live in process memory while cached; Python cannot wipe them,
so the TTL bounds how long a memory dump could find one. The payload is never
cached, only the data key.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from postd_vault.metrics import DEK_CACHE_LOOKUPS as CACHE_LOOKUPS


def cache_key(key_version: str, wrapped: bytes, aad: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (key_version.encode(), wrapped, aad):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()


class DataKeyCache:
    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[bytes, float, str]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> bytes | None:
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                CACHE_LOOKUPS.labels("miss").inc()
                return None
            data_key, expires, _ = entry
            if expires <= now:
                del self._entries[key]
                CACHE_LOOKUPS.labels("expired").inc()
                return None
            self._entries.move_to_end(key)
        CACHE_LOOKUPS.labels("hit").inc()
        return data_key

    def put(self, key: bytes, data_key: bytes, key_version: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = (data_key, self._clock() + self.ttl, key_version)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def evict(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def evict_key_version(self, key_version: str) -> int:
        with self._lock:
            doomed = [k for k, (_, _, v) in self._entries.items() if v == key_version]
            for k in doomed:
                del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
