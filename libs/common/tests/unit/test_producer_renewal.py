"""EventProducer replaces a librdkafka client that failed (no broker needed)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from postd_common import kafka
from postd_common.kafka import EventProducer, KafkaSettings


class FakeClient:
    """Stands in for confluent_kafka.Producer: delivers at the next poll, or is
    broken. Like librdkafka, it is thread-safe and its poll waits up to ``timeout``
    for something to deliver (a poll thread on a fake that returned at once would
    spin and starve every other thread)."""

    made: list[FakeClient] = []
    broken_first = True

    def __init__(self, config: dict[str, Any]) -> None:
        self.broken = FakeClient.broken_first and not FakeClient.made
        self.sent: list[bytes] = []
        self.pending: list[Any] = []
        self.closed = False
        self.error: KafkaError | None = None  # what the next deliveries fail with
        self._ready = threading.Condition()
        FakeClient.made.append(self)

    def produce(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if self.broken:
            raise KafkaException(KafkaError(KafkaError._FATAL))
        with self._ready:
            self.sent.append(payload)
            self.pending.append(kwargs["on_delivery"])
            self._ready.notify_all()

    def poll(self, timeout: float = 0) -> int:
        with self._ready:
            if not self.pending and timeout > 0:
                self._ready.wait(timeout)
            callbacks, self.pending = self.pending, []
            error = self.error
        for callback in callbacks:
            callback(error, FakeMessage())
        return len(callbacks)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self.pending)

    def purge(self) -> None:
        self.pending.clear()

    def close(self) -> None:
        self.closed = True


class FakeMessage:
    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 1

    def topic(self) -> str:
        return "t"


@pytest.fixture
def fake_clients(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.made = []
    monkeypatch.setattr(kafka, "Producer", FakeClient)
    return FakeClient


async def test_a_client_in_fatal_error_is_replaced(fake_clients: type[FakeClient]) -> None:
    producer = EventProducer(KafkaSettings("127.0.0.1:9"))
    try:
        assert await producer.produce("t", b"one") == (0, 1)
        assert len(fake_clients.made) == 2
        first, second = fake_clients.made
        assert first.sent == []
        assert second.sent == [b"one"]
        await producer.produce_many([("t", b"two", None, None)])
        assert second.sent == [b"one", b"two"]
        assert len(fake_clients.made) == 2  # a working client is kept
    finally:
        await producer.close(timeout=1)
    assert all(c.closed for c in fake_clients.made)


async def test_a_failed_delivery_renews_the_client_for_the_next_message(
    fake_clients: type[FakeClient],
) -> None:
    fake_clients.broken_first = False
    producer = EventProducer(KafkaSettings("127.0.0.1:9"))
    try:
        first = fake_clients.made[0]
        first.error = KafkaError(KafkaError._MSG_TIMED_OUT)
        with pytest.raises(KafkaException):
            await producer.produce("t", b"lost")
        first.error = None
        assert await producer.produce("t", b"again") == (0, 1)
        assert len(fake_clients.made) == 2
        assert fake_clients.made[1].sent == [b"again"]
    finally:
        await producer.close(timeout=1)
        fake_clients.broken_first = True
    assert all(c.closed for c in fake_clients.made)
