"""``/healthz``: each backend's gRPC health, the database and the broker, in one answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from postd_common.grpcutil import check_health
from postd_common.kafka import KafkaSettings, broker_reachable

Check = Callable[[], Awaitable[bool]]


def backend_checks(backends: Mapping[str, str]) -> dict[str, Check]:
    def make(target: str) -> Check:
        return lambda: check_health(target, timeout=1.5)

    return {name: make(target) for name, target in backends.items()}


def database_check(pool: asyncpg.Pool) -> Check:
    async def check() -> bool:
        try:
            return bool(await pool.fetchval("SELECT 1", timeout=1.5) == 1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False

    return check


def broker_check(kafka: KafkaSettings) -> Check:
    async def check() -> bool:
        return await asyncio.to_thread(broker_reachable, kafka, 1.5)

    return check


async def run_checks(checks: Mapping[str, Check]) -> tuple[bool, dict[str, Any]]:
    async def timed(check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            ok = await asyncio.wait_for(check(), 3.0)
        except TimeoutError:
            ok = False
        return {
            "status": "ok" if ok else "down",
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    names = list(checks)
    results = await asyncio.gather(*(timed(checks[n]) for n in names))
    report = dict(zip(names, results, strict=True))
    return all(r["status"] == "ok" for r in results), report
