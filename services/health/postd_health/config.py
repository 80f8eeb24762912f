"""Settings of the health service: the only module that reads the environment.

Every figure the issue names is configurable: the transient budget (5 failures over
at least 15 minutes), the API error-rate threshold (5 % over a window), the queue
backlog (1,000), the outage rule (error rate across tenants), SMTP and Slack routes,
and the notification rate limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from postd_common.config import EnvReader
from postd_common.logging import register_secret
from postd_common.secrets import Secret
from postd_common.settings import CommonSettings, load_common, service_addr

SERVICE = "health"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str
    password: Secret
    starttls: bool


@dataclass(frozen=True)
class DetectorSettings:
    error_rate_threshold: float  # fraction, e.g. 0.05
    error_rate_window_minutes: int
    error_rate_min_requests: int
    outage_error_rate: float  # passing failures across tenants, fraction
    outage_min_tenants: int
    outage_min_requests: int
    queue_backlog_threshold: int
    interval_seconds: float


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    connectors_addr: str
    publisher_addr: str
    public_url: str
    consumer_group: str
    transient_failures: int
    transient_span_minutes: float
    lease_seconds: float
    batch_size: int
    poll_seconds: float
    refresh_alert_after: int
    sync_interval_seconds: float
    sync_horizon_days: int
    smtp: SmtpSettings | None
    global_emails: tuple[str, ...]
    global_slack_webhook_url: Secret
    email_per_hour: int
    slack_per_hour: int
    detectors: DetectorSettings
    retention_days: int


def load_settings(environ: Mapping[str, str]) -> Settings:
    env = EnvReader(environ)
    common = load_common(env, SERVICE)
    smtp_host = env.text("POSTD_SMTP_HOST", "")
    smtp = None
    if smtp_host:
        password = env.secret("POSTD_SMTP_PASSWORD", "")
        register_secret(password)
        smtp = SmtpSettings(
            host=smtp_host,
            port=env.integer("POSTD_SMTP_PORT", 25, minimum=1),
            sender=env.text("POSTD_SMTP_FROM", "POSTD <alerts@postd.invalid>"),
            username=env.text("POSTD_SMTP_USERNAME", ""),
            password=password,
            starttls=env.flag("POSTD_SMTP_STARTTLS", False),
        )
    slack = env.secret("POSTD_HEALTH_SLACK_WEBHOOK_URL", "")
    register_secret(slack)
    settings = Settings(
        common=common,
        connectors_addr=service_addr(env, "connectors"),
        publisher_addr=service_addr(env, "publisher"),
        public_url=env.text("POSTD_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/"),
        consumer_group=env.text("POSTD_HEALTH_CONSUMER_GROUP", "health"),
        transient_failures=env.integer("POSTD_HEALTH_TRANSIENT_FAILURES", 5, minimum=1),
        transient_span_minutes=env.number("POSTD_HEALTH_TRANSIENT_SPAN_MINUTES", 15.0, minimum=0),
        lease_seconds=env.number("POSTD_HEALTH_LEASE_SECONDS", 120.0, minimum=1),
        batch_size=env.integer("POSTD_HEALTH_BATCH_SIZE", 50, minimum=1),
        poll_seconds=env.number("POSTD_HEALTH_POLL_SECONDS", 5.0, minimum=0.05),
        refresh_alert_after=env.integer("POSTD_HEALTH_REFRESH_ALERT_AFTER", 2, minimum=1),
        sync_interval_seconds=env.number("POSTD_HEALTH_SYNC_SECONDS", 3600.0, minimum=1),
        sync_horizon_days=env.integer("POSTD_HEALTH_SYNC_HORIZON_DAYS", 30, minimum=1),
        smtp=smtp,
        global_emails=env.items("POSTD_HEALTH_ALERT_EMAILS"),
        global_slack_webhook_url=slack,
        email_per_hour=env.integer("POSTD_HEALTH_EMAILS_PER_HOUR", 20, minimum=1),
        slack_per_hour=env.integer("POSTD_HEALTH_SLACK_PER_HOUR", 60, minimum=1),
        detectors=DetectorSettings(
            error_rate_threshold=env.number("POSTD_HEALTH_ERROR_RATE_PERCENT", 5.0, minimum=0)
            / 100,
            error_rate_window_minutes=env.integer(
                "POSTD_HEALTH_ERROR_RATE_WINDOW_MINUTES", 15, minimum=1
            ),
            error_rate_min_requests=env.integer(
                "POSTD_HEALTH_ERROR_RATE_MIN_REQUESTS", 20, minimum=1
            ),
            outage_error_rate=env.number("POSTD_HEALTH_OUTAGE_ERROR_PERCENT", 50.0, minimum=0)
            / 100,
            outage_min_tenants=env.integer("POSTD_HEALTH_OUTAGE_MIN_TENANTS", 3, minimum=1),
            outage_min_requests=env.integer("POSTD_HEALTH_OUTAGE_MIN_REQUESTS", 30, minimum=1),
            queue_backlog_threshold=env.integer("POSTD_HEALTH_QUEUE_BACKLOG", 1000, minimum=1),
            interval_seconds=env.number("POSTD_HEALTH_DETECT_SECONDS", 60.0, minimum=0.1),
        ),
        retention_days=env.integer("POSTD_HEALTH_RETENTION_DAYS", 35, minimum=2),
    )
    env.check()
    return settings
