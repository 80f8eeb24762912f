"""The publisher's Prometheus metrics (served by libs/common's metrics port).

Labels are closed sets (platform, outcome, category): never a tenant, job or account.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from postd_publisher.domain.model import Category
from postd_publisher.ports import AttemptRecord

# One recorded attempt, by the result event it emits: published, retry_scheduled,
# failed or dead_lettered (the last two are final), and the error category (lower
# case; empty on success). The publish success SLO and the dashboard's published and
# failed counts read it.
PUBLISH_ATTEMPTS = Counter(
    "postd_publish_attempts_total",
    "Publish attempts recorded, by platform, outcome and error category.",
    ["platform", "outcome", "category"],
)
# From the job's due time to its publication (the publish delay SLO: 300 s).
PUBLISH_DELAY = Histogram(
    "postd_publish_delay_seconds",
    "Time from a job's due time to its publication.",
    ["platform"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 24 * 3600),
)


def observe(record: AttemptRecord) -> None:
    """Count a recorded attempt (call it once the record is stored)."""
    job = record.job
    outcome = record.event.outcome.lower()
    category = Category.of(record.error).value.lower() if record.error is not None else ""
    PUBLISH_ATTEMPTS.labels(job.platform, outcome, category).inc()
    if outcome == "published":
        delay = (record.ended_at - job.due_at).total_seconds()
        PUBLISH_DELAY.labels(job.platform).observe(max(0.0, delay))
