"""The consumer loop's fetch: a lone message is taken at once, not held for a batch."""

from __future__ import annotations

from typing import Any

from google.protobuf.wrappers_pb2 import StringValue

from postd_common.kafka import ConsumerLoop, EventProducer, KafkaSettings


class ScriptedConsumer:
    """Answers consume() from a script and records how it was called."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append((num_messages, timeout))
        return self.answers.pop(0) if self.answers else []


def loop_with(consumer: ScriptedConsumer, batch_size: int = 100) -> ConsumerLoop[StringValue]:
    async def handler(envelope: Any) -> None:
        return None

    loop: ConsumerLoop[StringValue] = ConsumerLoop(
        KafkaSettings(bootstrap="127.0.0.1:1"),
        topics=["t"],
        group_id="g",
        message_type=StringValue,
        handler=handler,
        dlq_producer=EventProducer.__new__(EventProducer),
        batch_size=batch_size,
    )
    loop._consumer = consumer  # type: ignore[assignment]
    return loop


def test_what_is_ready_is_taken_without_waiting() -> None:
    consumer = ScriptedConsumer([["a", "b"]])
    taken: list[Any] = loop_with(consumer)._fetch()
    assert taken == ["a", "b"]
    assert consumer.calls == [(100, 0)]


def test_when_idle_it_waits_for_one_then_takes_what_came_with_it() -> None:
    consumer = ScriptedConsumer([[], ["a"], ["b", "c"]])
    taken: list[Any] = loop_with(consumer)._fetch(wait=0.25)
    assert taken == ["a", "b", "c"]
    # Never "100 messages or 0.25 s": that would hold a lone message the whole time.
    assert consumer.calls == [(100, 0), (1, 0.25), (99, 0)]


def test_nothing_arriving_returns_empty_after_the_wait() -> None:
    consumer = ScriptedConsumer([[], []])
    taken: list[Any] = loop_with(consumer, batch_size=1)._fetch(wait=0.1)
    assert taken == []
    assert consumer.calls == [(1, 0), (1, 0.1)]
