"""The connectors' Prometheus metrics (served by libs/common's metrics port).

Labels are closed sets (platform, outcome, result, category): never a tenant,
connection, account, URL or anything secret.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# One platform API call, by what came of it: ok, unauthorized (401), rate_limited
# (429), server_error (5xx), client_error (other 4xx), timeout, network (refused,
# reset), other (a refused non-4xx/5xx answer). The health dashboard's error
# distribution and per-platform success rate and latency read these.
PLATFORM_REQUESTS = Counter(
    "postd_platform_requests_total",
    "Calls to platform APIs, by platform and outcome.",
    ["platform", "outcome"],
)
PLATFORM_SECONDS = Histogram(
    "postd_platform_request_seconds",
    "Platform API call latency, answered or not.",
    ["platform"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
TOKEN_REFRESHES = Counter(
    "postd_token_refreshes_total",
    "Token refreshes at the platform, by result (refreshed, failed, lost_race) and the "
    "error category of a failure.",
    ["platform", "result", "category"],
)


def outcome_of_status(status: int) -> str:
    """The ``outcome`` label of a refused answer's HTTP status."""
    if status == 401:
        return "unauthorized"
    if status == 429:
        return "rate_limited"
    if 500 <= status <= 599:
        return "server_error"
    if 400 <= status <= 499:
        return "client_error"
    return "other"
