"""Background loops: the scheduler, the outbox relay, deliveries, detectors, sync.

Each loop runs one batch at a time; when a batch found nothing it sleeps until woken
(work stored by this process) or its poll interval passes (work stored by another
replica, or falling due). A failing batch is logged and retried with backoff; the
loop survives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from postd_common.logging import get_logger

log = get_logger(__name__)


class Wakeup:
    """A level-triggered nudge from the request path to a loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


def loop(
    name: str,
    run_once: Callable[[], Awaitable[int]],
    poll_seconds: float,
    wakeup: Wakeup | None = None,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background task for ``ServiceParts.tasks``: ``run_once`` returns how much it
    did; a busy loop goes again at once, an idle one waits."""
    nudge = wakeup or Wakeup()

    async def run(stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                done = await run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a loop survives its batches' failures
                failures += 1
                delay = min(30.0, 0.2 * 2**failures)
                log.warning(
                    "background batch failed; retrying",
                    loop=name,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
                await _first(stop, asyncio.sleep(delay))
                continue
            if not done:
                await _first(stop, nudge.wait(poll_seconds))

    return run


async def _first(stop: asyncio.Event, other: Awaitable[None]) -> None:
    stopper = asyncio.ensure_future(stop.wait())
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopper, waiter):
            task.cancel()
