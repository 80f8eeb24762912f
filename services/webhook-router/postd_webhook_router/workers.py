"""The background loops: processing, outbox relay, outbound delivery.

Each loop runs one batch at a time; it sleeps when there was nothing to do until
woken (new work stored by this process) or the poll interval passes (work stored by
another replica, or a retry falling due). A failing batch is logged and retried
with backoff; the loop itself never dies of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from postd_common.logging import get_logger

log = get_logger(__name__)


class Wakeup:
    """A level-triggered nudge between the request path and a worker."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


def worker(
    name: str,
    run_once: Callable[[], Awaitable[int]],
    wakeup: Wakeup,
    poll_seconds: float,
    *,
    full_batch: int | None = None,
    linger: float = 0.0,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The loop of one worker. ``linger``: after a batch that was not full, wait this
    long before the next one, so that work stored meanwhile (several group commits'
    rows) shares one batch instead of costing a claim and a transaction each."""

    async def loop(stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                done = await run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a worker survives its batches' failures
                failures += 1
                delay = min(30.0, 0.2 * 2**failures)
                log.warning(
                    f"{name} batch failed; retrying: {type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
                await _sleep_or_stop(stop, delay)
                continue
            if done and (full_batch is None or done >= full_batch):
                continue  # more may be waiting
            if not done:
                await _first(stop, wakeup.wait(poll_seconds))
            if linger > 0:
                await _sleep_or_stop(stop, linger)

    return loop


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _first(stop: asyncio.Event, other: Awaitable[None]) -> None:
    stopper = asyncio.ensure_future(stop.wait())
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopper, waiter):
            task.cancel()
