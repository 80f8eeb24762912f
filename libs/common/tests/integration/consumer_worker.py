"""A consumer process for the kill test: records each message idempotently in PostgreSQL.

Usage: python consumer_worker.py BOOTSTRAP TOPIC GROUP DSN TABLE HANDLE_DELAY_SECONDS
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
from google.protobuf.wrappers_pb2 import StringValue

from postd_common.kafka import ConsumerLoop, Envelope, EventProducer, KafkaSettings


async def main(bootstrap: str, topic: str, group: str, dsn: str, table: str, delay: float) -> None:
    settings = KafkaSettings(
        bootstrap=bootstrap, client_id="worker", session_timeout_ms=2000, heartbeat_interval_ms=300
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    producer = EventProducer(settings)

    async def handle(envelope: Envelope[StringValue]) -> None:
        await asyncio.sleep(delay)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {table}_deliveries (msg_id) VALUES ($1)", envelope.value.value
            )
            await conn.execute(
                f"INSERT INTO {table} (msg_id) VALUES ($1) ON CONFLICT (msg_id) DO NOTHING",
                envelope.value.value,
            )

    loop = ConsumerLoop(
        settings,
        topics=[topic],
        group_id=group,
        message_type=StringValue,
        handler=handle,
        dlq_producer=producer,
        batch_size=20,
        concurrency=4,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await loop.run(stop)
    await producer.close()
    await pool.close()


if __name__ == "__main__":
    b, t, g, d, tbl, delay = sys.argv[1:7]
    asyncio.run(main(b, t, g, d, tbl, float(delay)))
