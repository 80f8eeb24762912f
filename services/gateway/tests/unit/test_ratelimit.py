"""The lease-based limiter on an in-memory store: exact across replicas, windows roll,
unreachable store fails open briefly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postd_gateway.ratelimit import Lease, RateLimiter, StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class SharedCounter:
    """What the PostgreSQL row does, atomically, by the store's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.used: dict[tuple[str, int], int] = {}
        self.calls = 0
        self.down = False

    async def lease(self, tenant_id: str, *, want: int, limit: int, window_seconds: int) -> Lease:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("down")
        start = int(self.clock() // window_seconds) * window_seconds
        used = self.used.get((tenant_id, start), 0)
        granted = min(want, max(limit - used, 0))
        self.used[(tenant_id, start)] = used + granted
        begin = datetime.fromtimestamp(start, UTC)
        return Lease(granted, used + granted, begin, begin + timedelta(seconds=window_seconds))


async def test_two_replicas_never_exceed_the_limit():
    clock = Clock()
    store = SharedCounter(clock)
    replicas = [
        RateLimiter(store, window_seconds=60, lease_fraction=0.3, clock=clock) for _ in range(2)
    ]
    allowed = 0
    for i in range(50):
        verdict = await replicas[i % 2].check("t1", 10)
        allowed += verdict.allowed
    assert allowed == 10
    assert store.used[("t1", int(clock() // 60) * 60)] == 10
    # Leases cut the writes: far fewer store calls than requests.
    assert store.calls < 50


async def test_denials_carry_retry_after_and_the_next_window_opens():
    clock = Clock()
    store = SharedCounter(clock)
    limiter = RateLimiter(store, window_seconds=60, lease_fraction=0.0, clock=clock)
    verdicts = [await limiter.check("t1", 3) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert [v.remaining for v in verdicts[:3]] == [2, 1, 0]
    denied = verdicts[3].headers()
    assert denied["RateLimit-Remaining"] == "0"
    assert 1 <= int(denied["Retry-After"]) <= 60
    calls = store.calls
    await limiter.check("t1", 3)
    assert store.calls == calls  # an exhausted window is known locally
    clock.now += 60
    assert (await limiter.check("t1", 3)).allowed


async def test_tenants_have_separate_budgets():
    clock = Clock()
    limiter = RateLimiter(SharedCounter(clock), window_seconds=60, lease_fraction=0.0, clock=clock)
    for _ in range(2):
        await limiter.check("a", 2)
    assert not (await limiter.check("a", 2)).allowed
    assert (await limiter.check("b", 2)).allowed


async def test_an_unreachable_store_fails_open_for_a_second():
    clock = Clock()
    store = SharedCounter(clock)
    store.down = True
    limiter = RateLimiter(store, window_seconds=60, lease_fraction=0.0, clock=clock)
    assert (await limiter.check("t", 1)).allowed
    calls = store.calls
    assert (await limiter.check("t", 1)).allowed
    assert store.calls == calls  # not hammered while down
    store.down = False
    clock.now += 1.5
    assert (await limiter.check("t", 1)).allowed
    assert not (await limiter.check("t", 1)).allowed
