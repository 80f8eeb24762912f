"""Running a service process: signals, start-up failures as one clear line.

``__main__`` modules call :func:`run` with their async main. SIGTERM and SIGINT
set the stop event; the main drains and returns. Expected start-up failures
(bad configuration, unreachable database or broker, missing keys) print one line
naming the problem and exit with status 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

import asyncpg
from confluent_kafka import KafkaException

from postd_common.config import ConfigError
from postd_common.db import MigrationError
from postd_common.identity import IdentityError


class StartupError(Exception):
    """A dependency this service needs at start-up is unreachable or unusable."""


def describe_startup_failure(exc: BaseException) -> str | None:
    """One line for an expected start-up failure, or None if it is a bug."""
    if isinstance(exc, ConfigError):
        return "invalid configuration: " + "; ".join(exc.problems)
    if isinstance(exc, StartupError | MigrationError | IdentityError):
        return str(exc)
    if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"database unreachable or refused the connection: {exc}"
    if isinstance(exc, KafkaException):
        return f"Kafka broker unavailable: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out while connecting to a dependency"
    return None


def run(service: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` until it returns; exit 2 with one line on a start-up failure."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        line = describe_startup_failure(exc)
        if line is None:
            raise
        print(f"{service}: cannot start: {line}", file=sys.stderr, flush=True)
        sys.exit(2)
