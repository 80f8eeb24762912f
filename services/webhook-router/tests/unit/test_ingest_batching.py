"""WebhookIngest (the gateway's client of the router) on a fake stub: when batches
leave, how big they are, and what each waiting request is answered."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd_webhook_router.http_passthrough import BatchPolicy, WebhookIngest


def failure(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "fake")


def webhook(n: int, size: int = 10) -> pb.IngestWebhookRequest:
    return pb.IngestWebhookRequest(platform="tiktok", path_key=str(n), body=b"x" * size)


def answer_for(message: pb.IngestWebhookRequest) -> pb.IngestWebhookResponse:
    return pb.IngestWebhookResponse(http_status=200, event_id=message.path_key)


class FakeRouter:
    """The two ingest calls. Each call waits for ``release`` when it is set, so a test
    can hold calls in flight."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.timeouts: list[float] = []
        self.release: asyncio.Event | None = None
        self.batch_error: grpc.StatusCode | None = None
        self.drop_last = False

    async def IngestWebhooks(
        self, request: pb.IngestWebhooksRequest, *, timeout: float
    ) -> pb.IngestWebhooksResponse:
        self.batches.append([w.path_key for w in request.webhooks])
        self.timeouts.append(timeout)
        if self.release is not None:
            await self.release.wait()
        if self.batch_error is not None:
            raise failure(self.batch_error)
        answers = [answer_for(w) for w in request.webhooks]
        return pb.IngestWebhooksResponse(webhooks=answers[:-1] if self.drop_last else answers)

    async def IngestWebhook(
        self, request: pb.IngestWebhookRequest, *, timeout: float
    ) -> pb.IngestWebhookResponse:
        self.singles.append(request.path_key)
        return answer_for(request)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(router: FakeRouter, clock: Clock | None = None, **policy: Any) -> WebhookIngest:
    return WebhookIngest(
        router,  # type: ignore[arg-type]
        BatchPolicy(**policy),
        timeout=4.0,
        clock=clock or Clock(),
    )


def ids(results: list[pb.IngestWebhookResponse | None]) -> list[str | None]:
    return [r.event_id if r is not None else None for r in results]


async def test_requests_of_one_turn_share_a_call_and_each_gets_its_own_answer() -> None:
    router = FakeRouter()
    ingest = client(router)
    results = await asyncio.gather(*(ingest.ingest(webhook(n)) for n in range(5)))
    assert router.batches == [["0", "1", "2", "3", "4"]]
    assert ids(results) == ["0", "1", "2", "3", "4"]
    assert router.singles == []


async def test_a_lone_request_leaves_at_once_without_linger() -> None:
    router = FakeRouter()
    ingest = client(router)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await ingest.ingest(webhook(1))) == answer_for(webhook(1))
    assert loop.time() - started < 0.05
    assert router.batches == [["1"]]


async def test_a_linger_waits_for_company_and_a_full_batch_does_not_wait() -> None:
    router = FakeRouter()
    ingest = client(router, linger_seconds=0.05, max_webhooks=3)
    first = asyncio.create_task(ingest.ingest(webhook(1)))
    await asyncio.sleep(0.01)
    assert router.batches == []  # still lingering
    second = asyncio.create_task(ingest.ingest(webhook(2)))
    await asyncio.gather(first, second)
    assert router.batches == [["1", "2"]]
    # Three at once fill a batch: it leaves without waiting for the linger.
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(ingest.ingest(webhook(n)) for n in (3, 4, 5)))
    assert loop.time() - started < 0.04
    assert router.batches[1] == ["3", "4", "5"]


async def test_batches_are_bounded_by_count_and_by_bytes() -> None:
    router = FakeRouter()
    ingest = client(router, max_webhooks=2, max_calls=10, max_bytes=250)
    await asyncio.gather(*(ingest.ingest(webhook(n)) for n in range(5)))
    assert router.batches == [["0", "1"], ["2", "3"], ["4"]]
    router.batches.clear()
    # 100 + 100 fit in 250 bytes; the third does not. One over the limit goes alone.
    sizes = {"a": 100, "b": 100, "c": 100, "big": 400, "d": 10}
    await asyncio.gather(*(ingest.ingest(webhook_sized(k, n)) for k, n in sizes.items()))
    assert router.batches == [["a", "b"], ["c"], ["big"], ["d"]]


def webhook_sized(key: str, size: int) -> pb.IngestWebhookRequest:
    return pb.IngestWebhookRequest(platform="tiktok", path_key=key, body=b"x" * size)


async def test_requests_arriving_while_calls_are_in_flight_leave_together() -> None:
    router = FakeRouter()
    router.release = asyncio.Event()
    ingest = client(router, max_calls=1)
    first = asyncio.create_task(ingest.ingest(webhook(0)))
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(ingest.ingest(webhook(n))) for n in (1, 2, 3)]
    await asyncio.sleep(0.01)
    assert router.batches == [["0"]]  # the others wait for the call in flight
    router.release.set()
    results = await asyncio.gather(first, *later)
    assert router.batches == [["0"], ["1", "2", "3"]]
    assert ids(list(results)) == ["0", "1", "2", "3"]


async def test_a_failed_call_answers_none_to_every_request_of_it() -> None:
    router = FakeRouter()
    router.batch_error = grpc.StatusCode.UNAVAILABLE
    ingest = client(router)
    results = await asyncio.gather(*(ingest.ingest(webhook(n)) for n in range(3)))
    assert results == [None, None, None]
    assert router.singles == []  # not retried: the platform retries
    router.batch_error = grpc.StatusCode.DEADLINE_EXCEEDED
    assert await ingest.ingest(webhook(9)) is None


async def test_an_answer_of_the_wrong_length_answers_none_to_all() -> None:
    router = FakeRouter()
    router.drop_last = True
    ingest = client(router)
    results = await asyncio.gather(*(ingest.ingest(webhook(n)) for n in range(3)))
    assert results == [None, None, None]


async def test_a_router_without_the_batch_call_gets_one_call_per_webhook_for_a_while() -> None:
    router = FakeRouter()
    router.batch_error = grpc.StatusCode.UNIMPLEMENTED
    clock = Clock()
    ingest = client(router, clock, batch_retry_seconds=60.0)
    results = await asyncio.gather(*(ingest.ingest(webhook(n)) for n in range(3)))
    # The refused batch is sent again, one call each: nothing of it was stored.
    assert ids(results) == ["0", "1", "2"]
    assert sorted(router.singles) == ["0", "1", "2"]
    assert len(router.batches) == 1
    await asyncio.gather(*(ingest.ingest(webhook(n)) for n in (3, 4)))
    assert len(router.batches) == 1
    assert sorted(router.singles) == ["0", "1", "2", "3", "4"]
    # Later (the router may have been upgraded) the batch call is tried again.
    clock.now += 61
    router.batch_error = None
    await asyncio.gather(*(ingest.ingest(webhook(n)) for n in (5, 6)))
    assert router.batches[-1] == ["5", "6"]


async def test_batching_off_means_one_call_per_webhook() -> None:
    router = FakeRouter()
    ingest = client(router, max_webhooks=1)
    results = await asyncio.gather(*(ingest.ingest(webhook(n)) for n in range(3)))
    assert ids(results) == ["0", "1", "2"]
    assert router.batches == []
    assert router.singles == ["0", "1", "2"]


async def test_waiting_counts_against_the_deadline() -> None:
    router = FakeRouter()
    router.release = asyncio.Event()
    clock = Clock()
    ingest = client(router, clock, max_calls=1)
    first = asyncio.create_task(ingest.ingest(webhook(0)))
    await asyncio.sleep(0.01)
    late = asyncio.create_task(ingest.ingest(webhook(1)))
    await asyncio.sleep(0.01)
    clock.now += 1.5
    soon = asyncio.create_task(ingest.ingest(webhook(2)))
    await asyncio.sleep(0.01)
    clock.now += 3.0  # webhook 1 has waited past its 4 s; webhook 2 has 1 s left
    router.release.set()
    assert (await first) is not None
    assert (await late) is None  # answered 503 without being sent
    assert (await soon) is not None
    assert router.batches == [["0"], ["2"]]
    assert router.timeouts[1] == pytest.approx(1.0)


async def test_a_request_given_up_before_its_batch_left_is_not_sent() -> None:
    router = FakeRouter()
    ingest = client(router, linger_seconds=0.02)
    gone = asyncio.create_task(ingest.ingest(webhook(0)))
    kept = asyncio.create_task(ingest.ingest(webhook(1)))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await kept) is not None
    assert router.batches == [["1"]]


async def test_close_sends_what_waits_and_waits_for_the_calls() -> None:
    router = FakeRouter()
    ingest = client(router, linger_seconds=10.0)
    waiting = [asyncio.create_task(ingest.ingest(webhook(n))) for n in range(2)]
    await asyncio.sleep(0.01)
    assert router.batches == []
    await ingest.close()
    assert router.batches == [["0", "1"]]
    assert ids([w.result() for w in waiting]) == ["0", "1"]
