"""Publisher settings; the only publisher module that reads the environment."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from postd_common import topics
from postd_common.config import EnvReader
from postd_common.kafka import KafkaSettings
from postd_common.settings import CommonSettings, load_common, service_addr
from postd_publisher.adapters.events import Topics
from postd_publisher.domain.analytics import (
    AnalyticsShare,
    CollectionSchedule,
    parse_schedule,
    parse_shares,
)
from postd_publisher.domain.breaker import BreakerPolicy
from postd_publisher.domain.collector import CollectionSettings
from postd_publisher.domain.dispatch import DispatchSettings
from postd_publisher.domain.insights import InsightRules
from postd_publisher.domain.quota import EVERY_CALL, QuotaRule, parse_rules

ROLES = ("api", "dispatcher", "worker")


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # For consumers: the common settings plus consumer-only properties.
    consumer_kafka: KafkaSettings
    connectors_addr: str
    schema: str
    roles: frozenset[str]
    topics: Topics
    worker_group: str
    events_group: str
    worker_id: str
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    dispatch: DispatchSettings
    publish_timeout: float
    call_timeout: float
    worker_lease_seconds: float
    platform_concurrency: int
    consumer_concurrency: int
    consumer_batch: int
    send_timeout: float
    breaker: BreakerPolicy
    quota_overrides: tuple[QuotaRule, ...]
    # Analytics collection (off: published posts are not followed) and its reports.
    analytics_enabled: bool = True
    collection: CollectionSettings = field(default_factory=CollectionSettings)
    call_overrides: tuple[QuotaRule, ...] = ()
    analytics_group: str = "publisher-analytics"
    analytics_concurrency: int = 8
    insight_rules: InsightRules = field(default_factory=InsightRules)


def load_settings(environ: Mapping[str, str]) -> Settings:
    env = EnvReader(environ)
    common = load_common(env, "publisher")
    # Notice topics created again after a broker restart within seconds, not minutes.
    common = dataclasses.replace(
        common,
        kafka=dataclasses.replace(
            common.kafka,
            extra={
                **common.kafka.extra,
                "topic.metadata.refresh.interval.ms": env.integer(
                    "POSTD_KAFKA_METADATA_REFRESH_MS", 5000, minimum=100
                ),
            },
        ),
    )
    roles = frozenset(env.items("POSTD_PUBLISHER_ROLES", ROLES))
    unknown = roles - set(ROLES)
    if unknown or not roles:
        env.problems.append(
            f"POSTD_PUBLISHER_ROLES must name some of {', '.join(ROLES)}; got {sorted(roles)}"
        )
    publish_timeout = env.number("POSTD_PUBLISH_TIMEOUT_SECONDS", 30.0, minimum=0.1)
    lease = env.number("POSTD_PUBLISH_LEASE_SECONDS", 120.0, minimum=0.5)
    if lease <= publish_timeout:
        env.problems.append(
            "POSTD_PUBLISH_LEASE_SECONDS must be longer than POSTD_PUBLISH_TIMEOUT_SECONDS, "
            "or a slow publish would be taken for a dead worker"
        )
    try:
        overrides = tuple(parse_rules(env.text("POSTD_PUBLISH_QUOTA_RULES", "")))
    except ValueError as exc:
        env.problems.append(f"POSTD_PUBLISH_QUOTA_RULES: {exc}")
        overrides = ()
    try:
        call_overrides = tuple(parse_rules(env.text("POSTD_ANALYTICS_QUOTA_RULES", ""), EVERY_CALL))
    except ValueError as exc:
        env.problems.append(f"POSTD_ANALYTICS_QUOTA_RULES: {exc}")
        call_overrides = ()
    schedule = CollectionSchedule()
    try:
        schedule = CollectionSchedule(
            steps=parse_schedule(
                env.text("POSTD_ANALYTICS_POST_SCHEDULE", "86400:3600,2592000:86400")
            ),
            account_every=timedelta(
                seconds=env.number("POSTD_ANALYTICS_ACCOUNT_SECONDS", 86400.0, minimum=1.0)
            ),
        )
    except ValueError as exc:
        env.problems.append(f"POSTD_ANALYTICS_POST_SCHEDULE: {exc}")
    share = AnalyticsShare()
    try:
        share = parse_shares(env.text("POSTD_ANALYTICS_QUOTA_SHARE", "0.5"))
    except ValueError as exc:
        env.problems.append(f"POSTD_ANALYTICS_QUOTA_SHARE: {exc}")
    consumer_kafka = dataclasses.replace(
        common.kafka,
        extra={
            **common.kafka.extra,
            # Tansu holds a fetch for the whole wait even when data is there.
            "fetch.wait.max.ms": env.integer("POSTD_KAFKA_FETCH_WAIT_MS", 20, minimum=1),
        },
    )
    settings = Settings(
        common=common,
        consumer_kafka=consumer_kafka,
        connectors_addr=service_addr(env, "connectors"),
        schema=env.text("POSTD_PUBLISHER_SCHEMA", "publisher"),
        roles=roles,
        topics=Topics(
            jobs=env.text("POSTD_PUBLISH_JOBS_TOPIC", topics.PUBLISH_JOBS),
            results=env.text("POSTD_PUBLISH_RESULTS_TOPIC", topics.PUBLISH_RESULTS),
            dlq=env.text("POSTD_PUBLISH_DLQ_TOPIC", topics.PUBLISH_DLQ),
            connection_events=env.text("POSTD_CONNECTION_EVENTS_TOPIC", topics.CONNECTION_EVENTS),
            analytics_jobs=env.text("POSTD_ANALYTICS_JOBS_TOPIC", topics.ANALYTICS_JOBS),
        ),
        worker_group=env.text("POSTD_PUBLISHER_WORKER_GROUP", "publisher-workers"),
        events_group=env.text("POSTD_PUBLISHER_EVENTS_GROUP", "publisher-connection-events"),
        worker_id=env.text("POSTD_PUBLISHER_WORKER_ID", f"{socket.gethostname()}-{os.getpid()}"),
        max_attempts=env.integer("POSTD_PUBLISH_MAX_ATTEMPTS", 4, minimum=1),
        retry_base_seconds=env.number("POSTD_PUBLISH_RETRY_BASE_SECONDS", 2.0, minimum=0.0),
        retry_max_seconds=env.number("POSTD_PUBLISH_RETRY_MAX_SECONDS", 900.0, minimum=0.0),
        dispatch=DispatchSettings(
            batch_size=env.integer("POSTD_DISPATCH_BATCH", 1000, minimum=1),
            poll_interval=env.number("POSTD_DISPATCH_POLL_SECONDS", 0.1, minimum=0.005),
            lease_seconds=env.number("POSTD_DISPATCH_LEASE_SECONDS", 60.0, minimum=0.5),
            max_in_flight=env.integer("POSTD_DISPATCH_MAX_IN_FLIGHT", 2000, minimum=0),
            batch_window=env.number("POSTD_DISPATCH_BATCH_WINDOW_SECONDS", 0.02, minimum=0.0),
            reconcile_interval=env.number("POSTD_RECONCILE_SECONDS", 1.0, minimum=0.05),
            max_lost_workers=env.integer("POSTD_PUBLISH_MAX_LOST_WORKERS", 3, minimum=1),
        ),
        publish_timeout=publish_timeout,
        call_timeout=env.number("POSTD_CONNECTORS_TIMEOUT_SECONDS", 5.0, minimum=0.1),
        worker_lease_seconds=lease,
        platform_concurrency=env.integer("POSTD_PUBLISH_PLATFORM_CONCURRENCY", 64, minimum=1),
        consumer_concurrency=env.integer("POSTD_PUBLISH_CONSUMER_CONCURRENCY", 64, minimum=1),
        consumer_batch=env.integer("POSTD_PUBLISH_CONSUMER_BATCH", 200, minimum=1),
        send_timeout=env.number("POSTD_KAFKA_SEND_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        breaker=BreakerPolicy(
            window_seconds=env.number("POSTD_BREAKER_WINDOW_SECONDS", 60.0, minimum=1.0),
            min_failures=env.integer("POSTD_BREAKER_MIN_FAILURES", 8, minimum=1),
            failure_ratio=env.number("POSTD_BREAKER_FAILURE_RATIO", 0.5, minimum=0.0),
            min_tenants=env.integer("POSTD_BREAKER_MIN_TENANTS", 2, minimum=1),
            cooldown_seconds=env.number("POSTD_BREAKER_COOLDOWN_SECONDS", 30.0, minimum=0.1),
            max_cooldown_seconds=env.number("POSTD_BREAKER_MAX_COOLDOWN_SECONDS", 600.0),
            probe_timeout_seconds=env.number("POSTD_BREAKER_PROBE_TIMEOUT_SECONDS", 120.0),
        ),
        quota_overrides=overrides,
        analytics_enabled=env.flag("POSTD_ANALYTICS_ENABLED", True),
        collection=CollectionSettings(
            schedule=schedule,
            share=share,
            lease_seconds=env.number("POSTD_ANALYTICS_LEASE_SECONDS", 300.0, minimum=1.0),
            max_attempts=env.integer("POSTD_ANALYTICS_MAX_ATTEMPTS", 4, minimum=1),
            retry_base_seconds=env.number("POSTD_ANALYTICS_RETRY_BASE_SECONDS", 60.0, minimum=0.0),
            retry_max_seconds=env.number("POSTD_ANALYTICS_RETRY_MAX_SECONDS", 3600.0, minimum=0.0),
            batch_size=env.integer("POSTD_ANALYTICS_BATCH", 500, minimum=1),
        ),
        call_overrides=call_overrides,
        analytics_group=env.text("POSTD_PUBLISHER_ANALYTICS_GROUP", "publisher-analytics"),
        analytics_concurrency=env.integer("POSTD_ANALYTICS_CONCURRENCY", 8, minimum=1),
        insight_rules=InsightRules(
            min_posts=env.integer("POSTD_INSIGHTS_MIN_POSTS", 10, minimum=2),
            min_age=timedelta(
                seconds=env.number("POSTD_INSIGHTS_MIN_AGE_SECONDS", 172800.0, minimum=0.0)
            ),
        ),
    )
    env.check()
    return settings
