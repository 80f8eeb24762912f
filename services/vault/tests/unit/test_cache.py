"""The data-key cache: bounded, expiring, and off when configured so."""

from __future__ import annotations

from postd_vault.domain.cache import DataKeyCache, cache_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl_even_when_used() -> None:
    clock = Clock()
    cache = DataKeyCache(ttl_seconds=10, max_entries=10, clock=clock)
    cache.put(b"k", b"dek", "v1")
    clock.now += 9
    assert cache.get(b"k") == b"dek"
    clock.now += 2  # 11 s after it was put, though read 2 s ago
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_least_recently_used_is_evicted_first() -> None:
    cache = DataKeyCache(ttl_seconds=60, max_entries=2, clock=Clock())
    cache.put(b"a", b"1", "v1")
    cache.put(b"b", b"2", "v1")
    assert cache.get(b"a") == b"1"  # a is now the most recent
    cache.put(b"c", b"3", "v1")
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (b"1", None, b"3")


def test_evictions_by_key_and_by_version() -> None:
    cache = DataKeyCache(ttl_seconds=60, max_entries=10, clock=Clock())
    cache.put(b"a", b"1", "v1")
    cache.put(b"b", b"2", "v2")
    cache.put(b"c", b"3", "v1")
    assert cache.evict_key_version("v1") == 2
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (None, b"2", None)
    cache.evict(b"b")
    assert cache.get(b"b") is None


def test_zero_ttl_or_size_turns_it_off() -> None:
    for cache in (DataKeyCache(0, 10), DataKeyCache(60, 0)):
        cache.put(b"a", b"1", "v1")
        assert not cache.enabled
        assert cache.get(b"a") is None
        assert len(cache) == 0


def test_keys_depend_on_everything_an_unwrap_takes() -> None:
    base = cache_key("v1", b"wrapped", b"aad")
    assert cache_key("v2", b"wrapped", b"aad") != base
    assert cache_key("v1", b"wrappee", b"aad") != base
    assert cache_key("v1", b"wrapped", b"aae") != base
    assert cache_key("v1w", b"rapped", b"aad") != base  # length-prefixed parts
