"""The in-memory hand-off of accepted deliveries, on a graceful stop."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from postd_webhook_router.domain.model import PendingInbound
from postd_webhook_router.domain.processing import Handoff
from postd_webhook_router.ports import StoreUnavailable

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class ReleasingStore:
    """The one call of the store a release makes; down when ``down``."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.released: list[list[str]] = []

    async def release_pending(self, ids: Sequence[str], now: datetime) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")
        self.released.append(list(ids))


def waiting(*ids: str) -> Handoff:
    handoff = Handoff(60.0, 10, clock=lambda: NOW)
    for item_id in ids:
        handoff.put(
            PendingInbound(
                id=item_id,
                platform="tiktok",
                body=b"{}",
                headers=[],
                received_at=NOW,
                platform_event_id="",
                source=None,
                attempts=0,
            )
        )
    return handoff


async def test_a_stop_releases_what_still_waits_once() -> None:
    store = ReleasingStore()
    handoff = waiting("a", "b")
    assert await handoff.release(store, NOW) == 2  # type: ignore[arg-type]
    assert await handoff.release(store, NOW) == 0  # type: ignore[arg-type]
    assert store.released == [["a", "b"]]
    assert handoff.take(10) == []


async def test_a_stop_with_the_store_down_does_not_fail_the_shutdown() -> None:
    # The rows stay leased; their leases run out and any worker claims them.
    handoff = waiting("a")
    assert await handoff.release(ReleasingStore(down=True), NOW) == 0  # type: ignore[arg-type]
    assert handoff.take(10) == []
