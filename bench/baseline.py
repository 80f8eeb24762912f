"""Raw limits of this machine, measured in the same run as the figure they sit beside.

Every benchmark reports its result as a ratio against one of these: a bare aiohttp
handler, raw broker produce/consume, raw PostgreSQL single-row writes, a bare gRPC
unary call. The machine is noisy; ratios measured together are what carry over.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import grpc
from aiohttp import web
from confluent_kafka import Consumer, Producer

from postd_common.kafka import KafkaSettings, TopicSpec, ensure_topics


@dataclass(frozen=True)
class Rate:
    """Operations per second with latency percentiles (milliseconds)."""

    per_second: float
    p50_ms: float
    p99_ms: float
    count: int

    def row(self, label: str) -> str:
        return (
            f"| {label} | {self.per_second:,.0f}/s | {self.p50_ms:.2f} ms | "
            f"{self.p99_ms:.2f} ms | {self.count:,} |"
        )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(latencies_s: list[float], elapsed_s: float) -> Rate:
    ms = [x * 1000 for x in latencies_s]
    return Rate(
        len(ms) / elapsed_s if elapsed_s else 0.0, percentile(ms, 50), percentile(ms, 99), len(ms)
    )


async def closed_loop(
    call: Callable[[], Awaitable[object]], *, concurrency: int, duration_s: float
) -> Rate:
    """``concurrency`` workers calling ``call`` back to back for ``duration_s``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(latencies, time.perf_counter() - started)


async def open_loop(
    call: Callable[[], Awaitable[object]], *, rate_per_s: float, duration_s: float
) -> Rate:
    """Calls started at a fixed rate regardless of how long each takes (no coordinated
    omission): latency is measured from each call's scheduled start."""
    latencies: list[float] = []
    interval = 1.0 / rate_per_s
    total = int(rate_per_s * duration_s)
    begin = time.perf_counter()

    async def one(scheduled: float) -> None:
        await call()
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(total):
        scheduled = begin + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return summarize(latencies, time.perf_counter() - begin)


async def bare_aiohttp(duration_s: float = 3.0, concurrency: int = 32) -> Rate:
    """A JSON handler with nothing behind it, served and loaded on this machine."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:

            async def call() -> None:
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()

            return await closed_loop(call, concurrency=concurrency, duration_s=duration_s)
    finally:
        await runner.cleanup()


async def bare_grpc(duration_s: float = 3.0, concurrency: int = 32) -> Rate:
    """A unary gRPC call that does nothing, over loopback."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary("/bench.Echo/Call")

            async def call() -> None:
                await method(b"x" * 64)

            return await closed_loop(call, concurrency=concurrency, duration_s=duration_s)
    finally:
        await server.stop(0)


async def raw_pg_writes(dsn: str, count: int = 5000, concurrency: int = 16) -> Rate:
    """Single-row INSERTs, each its own commit, from a pool."""
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        await pool.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text)")
        latencies: list[float] = []
        counter = iter(range(count))

        async def worker() -> None:
            for _ in counter:
                started = time.perf_counter()
                await pool.execute(f"INSERT INTO {table} (payload) VALUES ($1)", "x" * 200)  # noqa: S608
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await pool.execute(f"DROP TABLE {table}")
        return summarize(latencies, elapsed)
    finally:
        await pool.close()


def raw_broker(bootstrap: str, count: int = 50_000, size: int = 300) -> tuple[float, float]:
    """(messages/s produced, messages/s consumed) with the plain clients (blocking)."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap=bootstrap)
    ensure_topics(settings, [TopicSpec(topic, partitions=6)])
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "enable.idempotence": True}
    )
    payload = b"x" * size
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload, key=str(i % 64).encode())
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    produced = count / (time.perf_counter() - started)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    first: float | None = None
    deadline = time.perf_counter() + 120
    while seen < count and time.perf_counter() < deadline:
        batch = consumer.consume(1000, 0.5)
        if batch and first is None:
            first = time.perf_counter()
        seen += sum(1 for m in batch if m.error() is None)
    consumed = seen / (time.perf_counter() - (first or time.perf_counter())) if seen else 0.0
    consumer.close()
    return produced, consumed


def ratio(value: float, limit: float) -> str:
    return f"{value / limit:.2f}" if limit else "n/a"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
