"""Health's Prometheus gauges: the dashboard's current figures for all tenants.

Set once a detector round (every minute) from the same reads the dashboard makes:
token figures from the latest snapshot, queue figures from health's job ledger. Every
replica reports the same values, so queries take ``max`` across replicas, not ``sum``.
Labels are the closed figure names: never a tenant or a connection.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Gauge

from postd_health.domain.dashboard import QUEUE_FIGURES, TOKEN_FIGURES, DashboardReader

TOKEN_CONNECTIONS = Gauge(
    "postd_health_token_connections",
    "Connections by token health, all tenants (total, healthy, expiring_7d, "
    "expiring_24h, attention, revoked).",
    ["figure"],
)
QUEUE_JOBS = Gauge(
    "postd_health_queue_jobs",
    "Publish jobs waiting for a retry (pending) and dead-lettered (dlq_size), all tenants.",
    ["figure"],
)


async def export_figures(reader: DashboardReader, now: datetime) -> None:
    """Read the figures and set the gauges; raises what the reader raises."""
    tokens = await reader.token_figures("", now)
    for name in TOKEN_FIGURES:
        TOKEN_CONNECTIONS.labels(name).set(tokens.get(name, 0.0))
    queue = await reader.queue_figures("")
    for name in QUEUE_FIGURES:
        QUEUE_JOBS.labels(name).set(queue.get(name, 0.0))
