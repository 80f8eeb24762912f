"""Kafka messages the publisher writes: PublishJob, PublishResult, and DLQ copies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from postd.events.v1.publish_job_pb2 import PublishJob
from postd.events.v1.publish_result_pb2 import PublishOutcome, PublishResult
from postd_common import topics
from postd_common.kafka import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR,
    H_DLQ_ERROR_CLASS,
    H_DLQ_TOPIC,
    message_headers,
)
from postd_common.logging import redact_text
from postd_publisher.domain.model import Job
from postd_publisher.ports import DispatchJob, ResultEvent


@dataclass(frozen=True)
class Topics:
    jobs: str = topics.PUBLISH_JOBS
    results: str = topics.PUBLISH_RESULTS
    dlq: str = topics.PUBLISH_DLQ
    connection_events: str = topics.CONNECTION_EVENTS
    analytics_jobs: str = topics.ANALYTICS_JOBS


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: str
    payload: bytes
    headers: dict[str, str]


def timestamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromTimedelta(timedelta(seconds=max(0.0, seconds)))
    return value


def job_message(job: DispatchJob) -> PublishJob:
    return PublishJob(
        job_id=job.job_id,
        post_id=job.post_id,
        tenant_id=job.tenant_id,
        connection_id=job.connection_id,
        platform=job.platform,
        idempotency_key=job.idempotency_key,
        content=job.content,
        attempt=job.attempt,
        due_at=timestamp(job.due_at),
        dispatched_at=timestamp(job.dispatched_at),
        max_attempts=job.max_attempts,
    )


def _headers(message: PublishJob | PublishResult, tenant_id: str, key: str) -> dict[str, str]:
    return {
        name: value.decode()
        for name, value in message_headers(message, tenant_id=tenant_id, idempotency_key=key)
    }


def result_message(job: Job, event: ResultEvent, topic: str) -> OutgoingMessage:
    result = PublishResult(
        job_id=job.id,
        post_id=job.post_id,
        tenant_id=job.tenant_id,
        connection_id=job.connection_id,
        platform=job.platform,
        outcome=PublishOutcome.Value(f"PUBLISH_OUTCOME_{event.outcome}"),
        platform_post_id=event.platform_post_id,
        url=event.url,
        attempt=event.attempt,
        finished_at=timestamp(event.finished_at),
        idempotency_key=job.idempotency_key,
        reconciled=event.reconciled,
        due_at=timestamp(job.due_at),
    )
    if event.error is not None:
        result.error.CopyFrom(event.error)
    if event.latency is not None:
        result.latency.CopyFrom(duration(event.latency))
    if event.next_attempt_at is not None:
        result.next_attempt_at.CopyFrom(timestamp(event.next_attempt_at))
    return OutgoingMessage(
        topic,
        job.connection_id,
        result.SerializeToString(),
        _headers(result, job.tenant_id, job.idempotency_key),
    )


def dead_letter_message(
    job: Job, attempt: int, reason: str, source_topic: str, topic: str
) -> OutgoingMessage:
    """The job as it travels on ``publish.jobs``, with why it was dead-lettered."""
    message = PublishJob(
        job_id=job.id,
        post_id=job.post_id,
        tenant_id=job.tenant_id,
        connection_id=job.connection_id,
        platform=job.platform,
        idempotency_key=job.idempotency_key,
        content=job.content,
        attempt=attempt,
        due_at=timestamp(job.due_at),
        max_attempts=job.max_attempts,
    )
    headers = _headers(message, job.tenant_id, job.idempotency_key)
    headers.update(
        {
            H_DLQ_TOPIC: source_topic,
            H_DLQ_ERROR: redact_text(reason)[:1000],
            H_DLQ_ERROR_CLASS: "PublishFailed",
            H_DLQ_ATTEMPTS: str(attempt),
        }
    )
    return OutgoingMessage(topic, job.connection_id, message.SerializeToString(), headers)
