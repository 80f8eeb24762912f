"""Every Kafka topic POSTD uses, with its partition count. One place, as data.

Keys: ``publish.*``, ``analytics.jobs`` and ``connection.events`` are keyed by
connection id (one account's messages stay in order); ``webhook.events`` by connection id or an
``unrouted:`` key; ``alerts`` by dedupe key. Each topic has a ``.dlq`` twin for
poison messages (created with it).
"""

from __future__ import annotations

from typing import Final

from postd_common.kafka import TopicSpec

PUBLISH_JOBS: Final = "publish.jobs"
PUBLISH_RESULTS: Final = "publish.results"
PUBLISH_DLQ: Final = "publish.dlq"
ANALYTICS_JOBS: Final = "analytics.jobs"
WEBHOOK_EVENTS: Final = "webhook.events"
WEBHOOK_DLQ: Final = "webhook.dlq"
CONNECTION_EVENTS: Final = "connection.events"
ALERTS: Final = "alerts"

ALL: Final = (
    TopicSpec(PUBLISH_JOBS, partitions=12),
    TopicSpec(PUBLISH_RESULTS, partitions=6),
    TopicSpec(PUBLISH_DLQ, partitions=3),
    TopicSpec(ANALYTICS_JOBS, partitions=6),
    TopicSpec(WEBHOOK_EVENTS, partitions=6),
    TopicSpec(WEBHOOK_DLQ, partitions=3),
    TopicSpec(CONNECTION_EVENTS, partitions=6),
    TopicSpec(ALERTS, partitions=3),
)


def spec(name: str) -> TopicSpec:
    for topic in ALL:
        if topic.name == name:
            return topic
    raise KeyError(name)
