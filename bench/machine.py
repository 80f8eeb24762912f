"""The raw limits of this machine in one table: the yardsticks the other benchmarks use."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bench.baseline import bare_aiohttp, bare_grpc, raw_broker, raw_pg_writes
from postd_common.devinfra import EmbeddedBroker, EmbeddedPostgres, free_port


async def measure() -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="postd-bench-"))
    pg = EmbeddedPostgres(work / "pg", free_port(), durable=True)
    broker = EmbeddedBroker(free_port())
    pg.start()
    broker.start()
    try:
        http = await bare_aiohttp()
        rpc = await bare_grpc()
        writes = await raw_pg_writes(pg.dsn)
        produced, consumed = await asyncio.to_thread(raw_broker, broker.bootstrap)
    finally:
        broker.stop()
        pg.stop()
    print("## Raw limits of this machine")
    print()
    print("| yardstick | rate | p50 | p99 | n |")
    print("|---|---|---|---|---|")
    print(http.row("bare aiohttp JSON handler (32 concurrent)"))
    print(rpc.row("bare gRPC unary call (32 concurrent)"))
    print(writes.row("PostgreSQL single-row INSERT + commit (16 concurrent)"))
    print(f"| broker produce, 300 B, acks=all | {produced:,.0f}/s | | | 50,000 |")
    print(f"| broker consume, one consumer | {consumed:,.0f}/s | | | 50,000 |")
    return {
        "http_rps": http.per_second,
        "grpc_rps": rpc.per_second,
        "pg_writes_per_s": writes.per_second,
        "broker_produce_per_s": produced,
        "broker_consume_per_s": consumed,
    }


def main() -> dict[str, float]:
    result = asyncio.run(measure())
    print()
    print(f"<!-- {json.dumps(result)} -->")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
