"""Prometheus metrics of the webhook router (served by libs/common's metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INBOUND = Counter(
    "postd_webhooks_inbound_total",
    "Inbound webhook requests, by path platform and verdict.",
    ["platform", "verdict"],
)
INGEST_SECONDS = Histogram(
    "postd_webhooks_ingest_seconds",
    "Time to verify, store and answer one inbound webhook.",
    ["platform"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROCESSED = Counter(
    "postd_webhooks_processed_total",
    "Stored deliveries normalised and routed, by outcome.",
    ["outcome"],
)
RELAYED = Counter(
    "postd_webhooks_outbox_relayed_total", "Outbox messages put on Kafka, by topic.", ["topic"]
)
DELIVERIES = Counter(
    "postd_webhooks_outbound_attempts_total",
    "Outbound delivery attempts, by outcome.",
    ["outcome"],
)
ENDPOINTS_DISABLED = Counter(
    "postd_webhooks_endpoints_disabled_total", "Endpoints disabled after sustained failure."
)
FAILURE_STREAKS = Counter(
    "postd_webhooks_outbound_failure_streaks_total",
    "Endpoints that reached the alert threshold of failed deliveries in a row "
    "(POSTD_OUTBOUND_ALERT_AFTER_FAILURES), once per streak.",
)
